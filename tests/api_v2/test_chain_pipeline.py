"""A chain through the pipeline, on the injected clock (#15 "Done when"): the main order and each reminder are sent
at their own times, a reminder's condition behaves as reference 1.6 says, cancelling a reminder through v1 stops
only it, and the manifest follows each shipment from Order_Registered to Order_Completed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_v2.helpers import Auth, chain, email_recipient
from tests.conftest import NOW
from tests.dispatch.test_pipeline import ConditionPeer
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.settings import Settings

FUTURE = "/notifications/api/v1/future"
V1 = "/notifications/api/v1"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The test's loopback condition peer is allow-listed, as an operator would allow an internal condition service.
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": ["127.0.0.1"]})


@pytest.fixture
def condition_peer() -> Iterator[ConditionPeer]:
    peer = ConditionPeer()
    yield peer
    peer.close()


def _sent_to(settings: Settings) -> list[str]:
    """The recipients of the emails in the outbox, sorted."""
    folder = settings.data_dir / "outbox" / "email"
    found = []
    for path in folder.glob("*.eml"):
        for line in path.read_text().splitlines():
            if line.startswith("To: "):
                found.append(line.removeprefix("To: ").strip())
    return sorted(found)


async def _place(client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post(f"{FUTURE}/orders", json=body, headers=auth())
    assert created.status_code == 201, created.text
    receipt: dict[str, Any] = created.json()["notification"]
    return receipt


async def _status(client: httpx.AsyncClient, auth: Auth, shipment: str) -> str:
    manifest = await client.get(f"{FUTURE}/shipment/{shipment}", headers=auth())
    assert manifest.status_code == 200, manifest.text
    status: str = manifest.json()["status"]
    return status


async def test_the_main_order_and_each_reminder_go_out_at_their_own_times(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    at = (NOW + timedelta(days=10)).isoformat()
    receipt = await _place(
        client,
        auth,
        chain(
            "times",
            email_recipient("main@example.com"),
            reminders=[
                {"delayDays": 3, "recipient": email_recipient("by-days@example.com")},
                {"requestedSendTime": at, "recipient": email_recipient("by-time@example.com")},
            ],
        ),
    )
    main, by_days, by_time = receipt["shipmentId"], *(r["shipmentId"] for r in receipt["reminders"])
    await varsel.workers.drain()
    assert _sent_to(settings) == ["main@example.com"]
    assert await _status(client, auth, main) == "Order_Completed"
    assert await _status(client, auth, by_days) == "Order_Registered"

    clock.advance(timedelta(days=3) - timedelta(seconds=1))
    await varsel.workers.drain()
    assert _sent_to(settings) == ["main@example.com"]
    clock.advance(timedelta(seconds=1))
    await varsel.workers.drain()
    assert _sent_to(settings) == ["by-days@example.com", "main@example.com"]
    assert await _status(client, auth, by_days) == "Order_Completed"
    assert await _status(client, auth, by_time) == "Order_Registered"

    clock.advance(timedelta(days=7))
    await varsel.workers.drain()
    assert _sent_to(settings) == ["by-days@example.com", "by-time@example.com", "main@example.com"]
    assert await _status(client, auth, by_time) == "Order_Completed"


@pytest.mark.parametrize(
    ("path", "reminder_status", "sent"),
    [("/yes", "Order_Completed", 1), ("/no", "Order_SendConditionNotMet", 0)],
)
async def test_a_reminder_s_own_condition_decides_for_it_alone(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    settings: Settings,
    condition_peer: ConditionPeer,
    path: str,
    reminder_status: str,
    sent: int,
) -> None:
    # The main order's condition says no; the reminder does not inherit it and is independent of its outcome.
    receipt = await _place(
        client,
        auth,
        chain(
            f"condition{path}",
            email_recipient("main@example.com"),
            conditionEndpoint=condition_peer.url + "/no",
            reminders=[
                {
                    "delayDays": 1,
                    "conditionEndpoint": condition_peer.url + path,
                    "recipient": email_recipient("reminder@example.com"),
                }
            ],
        ),
    )
    await varsel.workers.drain()
    assert await _status(client, auth, receipt["shipmentId"]) == "Order_SendConditionNotMet"
    assert _sent_to(settings) == []
    clock.advance(timedelta(days=1))
    await varsel.workers.drain()
    assert condition_peer.calls == ["/no", path]
    assert await _status(client, auth, receipt["reminders"][0]["shipmentId"]) == reminder_status
    assert len(_sent_to(settings)) == sent


async def test_an_inconclusive_reminder_condition_is_retried_once_then_sent(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    settings: Settings,
    condition_peer: ConditionPeer,
) -> None:
    receipt = await _place(
        client,
        auth,
        chain(
            "inconclusive",
            email_recipient("main@example.com"),
            reminders=[
                {
                    "delayDays": 1,
                    "conditionEndpoint": condition_peer.url + "/broken",
                    "recipient": email_recipient("reminder@example.com"),
                }
            ],
        ),
    )
    reminder = receipt["reminders"][0]["shipmentId"]
    await varsel.workers.drain()
    clock.advance(timedelta(days=1))
    await varsel.workers.drain()
    assert condition_peer.calls == ["/broken"]
    assert await _status(client, auth, reminder) == "Order_Registered"
    clock.advance(timedelta(seconds=60))
    await varsel.workers.drain()
    assert condition_peer.calls == ["/broken", "/broken"]
    assert await _status(client, auth, reminder) == "Order_Completed"
    assert _sent_to(settings) == ["main@example.com", "reminder@example.com"]


async def test_cancelling_a_reminder_through_v1_stops_only_it(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    receipt = await _place(
        client,
        auth,
        chain(
            "cancel",
            email_recipient("main@example.com"),
            requestedSendTime=(NOW + timedelta(hours=1)).isoformat(),
            reminders=[
                {"delayDays": 1, "recipient": email_recipient("first@example.com")},
                {"delayDays": 2, "recipient": email_recipient("second@example.com")},
            ],
        ),
    )
    first, second = (r["shipmentId"] for r in receipt["reminders"])
    cancelled = await client.put(f"{V1}/orders/{first}/cancel", headers=auth())
    assert cancelled.status_code == 200, cancelled.text
    clock.advance(timedelta(days=3))
    await varsel.workers.drain()
    assert _sent_to(settings) == ["main@example.com", "second@example.com"]
    assert await _status(client, auth, first) == "Order_Cancelled"
    assert await _status(client, auth, second) == "Order_Completed"
    assert await _status(client, auth, receipt["shipmentId"]) == "Order_Completed"
