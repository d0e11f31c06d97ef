"""On PostgreSQL a one-statement write (the instant store, the senders' pending outcomes) sends the NOTIFY that wakes
other processes' delivery workers itself, from the statement (outbox.notifying), and only when it wrote an event:
sent by the engine's listener instead, it was a round trip more on every instant order, subscribers or not."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import asyncpg
import pytest
from sqlalchemy import Uuid, literal, select

from tests.webhooks.conftest import ORG, Receiver
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.one_statement import execute
from varsel.ids import new_id
from varsel.webhooks import outbox
from varsel.webhooks.addresses import WebhookHosts
from varsel.webhooks.outbox import CHANNEL_WEBHOOKS, Event
from varsel.webhooks.service import WebhookSubscriptions
from varsel.webhooks.wakeup import wake_on_committed_events


async def test_a_one_statement_write_notifies_only_when_it_wrote_an_event(
    database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("one-statement writes and NOTIFY are PostgreSQL's")
    subscriptions = WebhookSubscriptions(database, clock, WebhookHosts(["127.0.0.1"]), timedelta(hours=24))
    await subscriptions.create(ORG, receiver.url, ["order.completed"])
    wake_on_committed_events(database.engine, lambda: None)  # as the app does: its listener must not notify here
    heard: asyncio.Queue[str] = asyncio.Queue()
    dsn = database.url.replace("postgresql+asyncpg://", "postgresql://")
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(CHANNEL_WEBHOOKS, lambda *args: heard.put_nowait(args[3]))
    try:
        key = new_id()
        changed = select(literal(key, Uuid).label("id")).cte("changed")
        statement = outbox.notifying(select(changed.c.id), changed, outbox.events_cte("events", select(changed.c.id)))

        async def write(events: list[tuple[UUID, Event]]) -> list[object]:
            async with database.statement() as conn:
                # Run as the instant store and the senders' outcomes are (driver SQL, one_statement.execute).
                return [row["id"] for row in await execute(conn, statement, outbox.event_arrays("events", events))]

        # Nothing bound, and an event of an owner nobody subscribes for: no event, no NOTIFY; the rows as ever.
        assert await write([]) == [key]
        assert await write([(key, Event("nobody", "order.completed", clock.now(), {"type": "order.completed"}))]) == [
            key
        ]
        await asyncio.sleep(0.2)
        assert heard.empty()
        # The subscriber's event: written, and one NOTIFY, however many events the statement wrote.
        told = Event(ORG, "order.completed", clock.now(), {"type": "order.completed"})
        assert await write([(key, told), (key, told)]) == [key]
        assert await asyncio.wait_for(heard.get(), 10) == ""
        await asyncio.sleep(0.2)
        assert heard.empty()
    finally:
        await listener.close()
