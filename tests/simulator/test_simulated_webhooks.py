"""Each simulated recipient's webhook events, on SQLite and PostgreSQL: a notification.status_changed event at every
change, as a real recipient's (tests/webhooks/test_events.py), the bounce and the expiry included, then the order's
end. The events are read from the outbox (a disabled subscription's rows), as tests/webhooks/test_events.py does;
their delivery is the same as any event's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from tests.webhooks.test_events import by_destination, events_of, kinds, manifest, subscribe, v1_order
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.dispatch.senders import ExpirySweeper
from varsel.webhooks.events import NOTIFICATION_STATUS_CHANGED, ORDER_COMPLETED

Auth = Callable[..., dict[str, str]]
PAST_EXPIRY = timedelta(hours=48) + ExpirySweeper.REPORT_GRACE + timedelta(seconds=1)


def _told(prefix: str, *statuses: str) -> list[tuple[str | None, str]]:
    """The changes a notification's events tell: from nothing to New, then through each status in turn."""
    told: list[tuple[str | None, str]] = [(None, f"{prefix}_New")]
    previous = f"{prefix}_New"
    for status in statuses:
        told.append((previous, f"{prefix}_{status}"))
        previous = f"{prefix}_{status}"
    return told


@pytest.mark.parametrize("channel", ["email", "sms"])
async def test_each_simulated_recipient_is_told_at_every_change_then_the_order_s_end(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock, channel: str
) -> None:
    subscription = await subscribe(database)
    if channel == "email":
        prefix, accepted, bounced = "Email", "Succeeded", "Failed_Bounced"
        real = "kari@example.com"
        names = {n: f"{n}@simulator.invalid" for n in ("delivered", "bounced", "transient", "silent")}
        body = {"subject": "S", "body": "B", "recipients": [{"emailAddress": a} for a in (real, *names.values())]}
        order_id = await v1_order(client, auth, "/orders/email", body)
    else:
        prefix, accepted, bounced = "SMS", "Accepted", "Failed_Undelivered"
        real = "+4799999999"
        names = {n: f"+44770090000{i}" for i, n in enumerate(("delivered", "bounced", "transient", "silent"), 1)}
        body = {"body": "B", "recipients": [{"mobileNumber": n} for n in (real, *names.values())]}
        order_id = await v1_order(client, auth, "/orders/sms", body)

    for _ in range(3):  # generation and the sends; the reports and the transient one's retry, 5 s apart
        await varsel.workers.drain()
        clock.advance(timedelta(seconds=5))
    clock.advance(PAST_EXPIRY)
    await varsel.workers.drain()

    events = await events_of(database, subscription)
    told = by_destination(events)
    assert told[names["delivered"]] == _told(prefix, "Sending", accepted, "Delivered")
    assert told[names["bounced"]] == _told(prefix, "Sending", accepted, bounced)
    assert told[names["transient"]] == _told(prefix, "Sending", "New", "Sending", accepted, "Delivered")
    assert told[names["silent"]] == _told(prefix, "Sending", accepted, "Failed_TTL")
    # The development outbox reports the real one delivered at once.
    assert told[real] == _told(prefix, "Sending", accepted, "Delivered")
    assert kinds(events)[-1] == ORDER_COMPLETED
    assert kinds(events).count(NOTIFICATION_STATUS_CHANGED) == len(events) - 1
    assert events[-1].data == await manifest(client, auth, order_id)
    statuses = {r["destination"]: r["status"] for r in events[-1].data["recipients"]}
    assert statuses[names["bounced"]] == f"{prefix}_{bounced}"
    assert statuses[names["silent"]] == f"{prefix}_Failed_TTL"
