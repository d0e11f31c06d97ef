"""Hostile bodies at POST /future/orders (#19, #15): every one is a problem answer, never a 500, nothing stored.

The v1 endpoints' generic hostile-body tests (tests/test_hostile_input.py) post one body again and again, which an
idempotent endpoint answers 200 after the first; these are the same attacks, written for a chain."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api_v2.helpers import Auth, chain, sms_recipient

ORDERS = "/notifications/api/v1/future/orders"
JSON = {"Content-Type": "application/json"}


async def _post(client: httpx.AsyncClient, auth: Auth, raw: bytes) -> httpx.Response:
    return await client.post(ORDERS, content=raw, headers={**auth(), **JSON})


async def _nothing_stored(client: httpx.AsyncClient, auth: Auth) -> None:
    listed = await client.get("/notifications/api/v1/orders", params={"sendersReference": "hostile"}, headers=auth())
    assert listed.json()["count"] == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"[" * 100_000, 400),
        (b'{"idempotencyId": "x", "recipient": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", 400),
        (b"\xff\xfe{}", 400),
        (b'{"idempotencyId": "x", "sendersReference": "hostile", "n": ' + b"1" * 5_000 + b"}", 400),
        (b'{"idempotencyId": 1e999999}', 400),
        (b'{"idempotencyId": "\\ud800", "sendersReference": "hostile"}', 400),
        (b"", 400),
        (b"null", 400),
        (b'"a string"', 400),
        (json.dumps({"idempotencyId": "x", "reminders": "many"}).encode(), 400),
        (b"x" * (3 * 1024 * 1024), 413),
    ],
    ids=[
        "100000-brackets",
        "deep-recipient",
        "bad-utf8",
        "5000-digits",
        "huge-float",
        "lone-surrogate",
        "empty",
        "null",
        "string",
        "reminders-not-a-list",
        "3-MiB",
    ],
)
async def test_a_hostile_body_is_a_problem_and_nothing_is_stored(
    client: httpx.AsyncClient, auth: Auth, raw: bytes, status: int
) -> None:
    answer = await _post(client, auth, raw)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    await _nothing_stored(client, auth)


@pytest.mark.parametrize("text", ["\x00", "a\x00b"])
async def test_nul_in_any_string_is_refused(client: httpx.AsyncClient, auth: Auth, text: str) -> None:
    # PostgreSQL cannot store NUL: refused with the field, not a 500 at the database.
    for body in (
        chain(text, sms_recipient(), sendersReference="hostile"),
        chain("k", sms_recipient(body=text), sendersReference="hostile"),
    ):
        answer = await client.post(ORDERS, json=body, headers=auth())
        assert answer.status_code == 400, answer.text
    await _nothing_stored(client, auth)


async def test_a_thousand_reminders_are_one_chain(client: httpx.AsyncClient, auth: Auth) -> None:
    # The reference sets no limit on reminders; the body limit (2 MiB, about 16,000 SMS reminders) bounds them.
    body = chain("many", sms_recipient(), sendersReference="hostile")
    body["reminders"] = [{"delayDays": 1, "recipient": sms_recipient()} for _ in range(1_000)]
    answer = await client.post(ORDERS, json=body, headers=auth())
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["notification"]["reminders"]) == 1_000
