"""Writing webhook events into the outbox, in the transaction that makes the change they tell of.

An event exists exactly when its change does: the caller passes the connection of the transaction that changes an
order or a notification, and the rows go in with it (or not at all). One row per event and subscriber (fan-out at
write time), so delivery needs no join and each endpoint's events are numbered (`seq`) in the order they were
written. A change of a service owner with no subscription for its kind writes nothing: one index range of
(creator, kind) finds no subscriber.

Rows are written for disabled subscriptions too: they wait, pending, until the owner enables the endpoint again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import webhook_events, webhook_subscription_events
from varsel.ids import new_id

# The kinds a subscription may take (issue #18).
ORDER_COMPLETED = "order.completed"
ORDER_SEND_CONDITION_NOT_MET = "order.send_condition_not_met"
ORDER_CANCELLED = "order.cancelled"
NOTIFICATION_STATUS_CHANGED = "notification.status_changed"
EVENT_KINDS = (ORDER_COMPLETED, ORDER_SEND_CONDITION_NOT_MET, ORDER_CANCELLED, NOTIFICATION_STATUS_CHANGED)

PENDING = "pending"
DELIVERED = "delivered"


@dataclass(frozen=True, slots=True)
class Event:
    """One change, for every subscriber of its creator and kind. `payload` is the body as delivered:
    {"type": kind, "timestamp": ISO time of the change, "data": ...} (see docs/webhooks.md)."""

    creator: str
    kind: str
    occurred: datetime
    payload: dict[str, Any]


async def fan_out(conn: AsyncConnection, events: Sequence[Event]) -> int:
    """Write each event once per subscription of its creator that takes its kind, in the caller's transaction, in
    the order given; answers how many rows were written (0, with one query, when nobody subscribes)."""
    if not events:
        return 0
    wanted = {(event.creator, event.kind) for event in events}
    found = await conn.execute(
        select(
            webhook_subscription_events.c.creator,
            webhook_subscription_events.c.kind,
            webhook_subscription_events.c.subscription_id,
        )
        .where(tuple_(webhook_subscription_events.c.creator, webhook_subscription_events.c.kind).in_(wanted))
        .order_by(webhook_subscription_events.c.subscription_id)
    )
    subscribers: dict[tuple[str, str], list[Any]] = {}
    for row in found:
        subscribers.setdefault((row.creator, row.kind), []).append(row.subscription_id)
    if not subscribers:
        return 0
    rows = [
        {
            "id": new_id(),
            "subscription_id": subscription_id,
            "creator": event.creator,
            "kind": event.kind,
            "occurred": event.occurred,
            "payload": event.payload,
            "state": PENDING,
            "attempts": 0,
            "next_attempt": event.occurred,
        }
        for event in events
        for subscription_id in subscribers.get((event.creator, event.kind), ())
    ]
    if rows:
        await conn.execute(insert(webhook_events), rows)
    return len(rows)
