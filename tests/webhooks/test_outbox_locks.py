"""The outbox's writers and a subscription's deletion: an event is written for a subscription that exists at the
commit, and the deletion of a subscription never rolls a status change back."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import func, select, text

from tests.webhooks.conftest import ORG, WEBHOOKS
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, webhook_events
from varsel.webhooks import outbox
from varsel.webhooks.events import NotificationChange, notification_event
from varsel.webhooks.outbox import Event, insert_events, subscribers


async def _waiting_on_a_lock(database: Database) -> bool:
    async with database.transaction() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


async def _deletion_waits(varsel: Varsel, database: Database, subscription_id: UUID) -> asyncio.Task[None]:
    """Start the owner's deletion of the subscription; answers it once it waits for a lock (or has ended)."""
    deletion = asyncio.create_task(varsel.webhooks.delete(ORG, subscription_id))
    while not deletion.done():
        if await _waiting_on_a_lock(database):
            break
        await asyncio.sleep(0.01)
    return deletion


async def test_a_subscription_deleted_while_a_writer_fans_out_waits_for_its_commit(
    varsel: Varsel, database: Database, clock: FrozenClock, client: Any, auth: Any, receiver: Any
) -> None:
    """The writer reads the owner's subscribers, another request deletes one, then the writer inserts its events:
    the deletion waits for the writer's commit (the subscribers read holds a KEY SHARE lock), so the status change
    commits with its event, and the deletion then takes the event with it. Without the lock the insert violated
    fk_webhook_events_subscription and the whole status change rolled back. SQLite has one writer: nothing to race."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite serialises writers: a deletion cannot come between the read and the insert")
    made = await client.post(WEBHOOKS, json={"url": receiver.url, "events": ["order.completed"]}, headers=auth())
    subscription_id = UUID(made.json()["id"])
    event = Event(ORG, "order.completed", clock.now(), {"type": "order.completed", "data": {}})

    async with database.transaction() as conn:
        found = await subscribers(conn, {(ORG, "order.completed")})
        assert found == {(ORG, "order.completed"): [subscription_id]}
        deletion = await _deletion_waits(varsel, database, subscription_id)
        assert not deletion.done(), "the deletion did not wait for the writer's transaction"
        assert await insert_events(conn, [event], found) == 1
    await deletion

    async with database.transaction() as conn:
        assert await conn.scalar(select(func.count()).select_from(webhook_events)) == 0
        assert await subscribers(conn, {(ORG, "order.completed")}) == {}


async def test_the_notifications_joined_read_of_subscribers_holds_them_too(
    varsel: Varsel, database: Database, clock: FrozenClock, client: Any, auth: Any, receiver: Any
) -> None:
    """As above, for the changes whose facts the outbox reads joined with the subscriptions (a sender's change
    without them at hand): that read locks the subscriptions it finds."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite serialises writers: a deletion cannot come between the read and the insert")
    made = await client.post(
        WEBHOOKS, json={"url": receiver.url, "events": ["notification.status_changed"]}, headers=auth()
    )
    subscription_id = UUID(made.json()["id"])
    order = await client.post(
        "/notifications/api/v1/orders/email",
        json={"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": "a@example.com"}]},
        headers=auth(),
    )
    assert order.status_code == 202, order.text
    await varsel.workers.drain()
    async with database.read() as conn:
        notification_id = await conn.scalar(select(email_notifications.c.id))
    change = NotificationChange("email", notification_id, "Succeeded", "Delivered", clock.now())

    async with database.transaction() as conn:
        facts, found = await outbox._facts_of_subscribed(conn, [change])
        assert found == {(ORG, "notification.status_changed"): [subscription_id]}
        deletion = await _deletion_waits(varsel, database, subscription_id)
        assert not deletion.done(), "the deletion did not wait for the writer's transaction"
        written = await insert_events(conn, [notification_event(change, facts[notification_id])], found)
        assert written == 1
    await deletion
