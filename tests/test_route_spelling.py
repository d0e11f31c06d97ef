"""Routes match as the reference's ASP.NET routes do: in any case, and with a trailing slash answered directly
(#15): a 307 to the slash-less route is not followed for a POST by many HTTP clients."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

V1 = "/notifications/api/v1"
SMS_ORDER = {"body": "Hei", "recipients": [{"mobileNumber": "+4799999999"}]}


@pytest.mark.parametrize(
    "path", [f"{V1}/orders/sms/", f"{V1}/orders/sms//", f"{V1}/Orders/SMS", "/NOTIFICATIONS/API/V1/ORDERS/SMS/"]
)
async def test_an_order_is_accepted_whatever_the_route_s_spelling(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], path: str
) -> None:
    created = await client.post(path, json=SMS_ORDER, headers=auth())
    assert created.status_code == 202, created.text
    order_id = created.json()["orderId"]
    # The Location is the canonical route, whatever the request's spelling.
    assert created.headers["location"].endswith(f"{V1}/orders/{order_id}")
    for read_path in (f"{V1}/orders/{order_id}/", f"{V1}/ORDERS/{order_id.upper()}/Status/"):
        read = await client.get(read_path, headers=auth())
        assert read.status_code == 200, (read_path, read.text)
        assert read.json()["id"] == order_id


async def test_unknown_routes_are_still_404(client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]) -> None:
    answer = await client.post(f"{V1}/nothing/here/", json=SMS_ORDER, headers=auth())
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
