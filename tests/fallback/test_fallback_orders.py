"""The order property `fallbackAfterMinutes` (varsel's own; Altinn ignores it) on v1 and v2 orders, on SQLite and
PostgreSQL: stored as given, absent by default, and refused with a problem naming it when it is no whole number of
minutes from 1 to 2880 (never a 500)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.recipients.registry_data import load
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import orders

V1 = "/notifications/api/v1"
FUTURE = f"{V1}/future"
Auth = Callable[..., dict[str, str]]


@pytest.fixture(autouse=True)
async def registry(varsel: Varsel, clock: FrozenClock) -> None:
    person = {"kind": "person", "nationalIdentityNumber": "01017012345", "name": "Ola Nordmann",
              "emailAddress": "ola@example.com", "mobileNumber": "98765432", "isReserved": False}  # fmt: skip
    assert (await load(varsel.database, clock, [person])).rejected == []


def _v1(**extra: Any) -> dict[str, Any]:
    return {
        "notificationChannel": "EmailPreferred",
        "recipients": [{"nationalIdentityNumber": "01017012345"}],
        "emailTemplate": {"subject": "Saken din", "body": "Hei"},
        "smsTemplate": {"body": "Saken din har nytt"},
        **extra,
    }


def _v2(**extra: Any) -> dict[str, Any]:
    return {
        "idempotencyId": str(uuid.uuid4()),
        "recipient": {
            "recipientPerson": {
                "nationalIdentityNumber": "01017012345",
                "channelSchema": "SmsPreferred",
                "emailSettings": {"subject": "Saken din", "body": "Hei"},
                "smsSettings": {"body": "Saken din har nytt"},
            }
        },
        "reminders": [{"delayDays": 1, "recipient": _reminder_recipient()}],
        **extra,
    }


def _reminder_recipient() -> dict[str, Any]:
    return {"recipientEmail": {"emailAddress": "ola@example.com", "emailSettings": {"subject": "S", "body": "B"}}}


async def _stored(varsel: Varsel) -> list[int | None]:
    async with varsel.database.read() as conn:
        result = await conn.execute(select(orders.c.fallback_after_minutes).order_by(orders.c.chain_position))
        return [row.fallback_after_minutes for row in result]


@pytest.mark.parametrize("minutes", [1, 90, 2880])
async def test_v1_stores_the_window(client: httpx.AsyncClient, auth: Auth, varsel: Varsel, minutes: int) -> None:
    response = await client.post(f"{V1}/orders", json=_v1(fallbackAfterMinutes=minutes), headers=auth())
    assert response.status_code == 202, response.text
    assert await _stored(varsel) == [minutes]


async def test_v2_stores_it_on_the_main_order_and_its_reminders(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    response = await client.post(f"{FUTURE}/orders", json=_v2(fallbackAfterMinutes=15), headers=auth())
    assert response.status_code == 201, response.text
    assert await _stored(varsel) == [15, 15]


async def test_absent_it_is_null(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    assert (await client.post(f"{V1}/orders", json=_v1(), headers=auth())).status_code == 202
    assert (await client.post(f"{FUTURE}/orders", json=_v2(), headers=auth())).status_code == 201
    assert sorted(await _stored(varsel), key=str) == [None, None, None]


BAD = [0, -5, 2881, 10**30, 1.5, "abc", True, [], {}]


@pytest.mark.parametrize("value", BAD, ids=[repr(v) for v in BAD])
async def test_v1_refuses_what_is_no_window(client: httpx.AsyncClient, auth: Auth, varsel: Varsel, value: Any) -> None:
    response = await client.post(f"{V1}/orders", json=_v1(fallbackAfterMinutes=value), headers=auth())
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [key.lower() for key in response.json()["errors"]] == ["fallbackafterminutes"]
    assert await _stored(varsel) == []


@pytest.mark.parametrize("value", [0, 2881, 10**30, 1.5, "abc", [], {}], ids=repr)
async def test_v2_refuses_what_is_no_window(client: httpx.AsyncClient, auth: Auth, varsel: Varsel, value: Any) -> None:
    response = await client.post(f"{FUTURE}/orders", json=_v2(fallbackAfterMinutes=value), headers=auth())
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any("fallbackafterminutes" in key.lower() for key in response.json()["errors"]), response.text
    assert await _stored(varsel) == []
