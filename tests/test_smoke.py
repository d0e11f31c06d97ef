from __future__ import annotations

from collections.abc import Callable

import httpx

V1 = "/notifications/api/v1"


async def test_email_order_is_accepted_and_read_back(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    body = {"subject": "Hello", "body": "World", "recipients": [{"emailAddress": "a@example.com"}]}
    created = await client.post(f"{V1}/orders/email", json=body, headers=auth())
    assert created.status_code == 202, created.text
    order_id = created.json()["orderId"]
    assert created.headers["location"] == f"http://varsel.test{V1}/orders/{order_id}"
    read = await client.get(f"{V1}/orders/{order_id}", headers=auth())
    assert read.status_code == 200
    assert read.json()["emailTemplate"]["subject"] == "Hello"
