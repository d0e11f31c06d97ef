"""On PostgreSQL a one-statement write (the instant store, the senders' pending outcomes) sends the NOTIFY that wakes
other processes' delivery workers itself, from the statement (outbox.notifying), and only when it wrote an event:
sent by the engine's listener instead, it was a round trip more on every instant order, subscribers or not."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import RFC_4122, UUID

import asyncpg
import pytest
from sqlalchemy import Uuid, literal, select

from tests.webhooks.conftest import ORG, Receiver
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.one_statement import execute
from varsel.db.tables import webhook_events
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


async def test_a_one_statement_write_gives_its_events_time_ordered_ids_as_every_other_write_does(
    database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """The ids PostgreSQL makes for a one-statement write's events are UUIDv7 (varsel.ids.new_id's kind): the
    version and variant right, the milliseconds those of the moment of the write, later ids above earlier ones."""
    if database.dialect != "postgresql":
        pytest.skip("one-statement writes are PostgreSQL's")
    subscriptions = WebhookSubscriptions(database, clock, WebhookHosts(["127.0.0.1"]), timedelta(hours=24))
    await subscriptions.create(ORG, receiver.url, ["order.completed"])
    key = new_id()
    changed = select(literal(key, Uuid).label("id")).cte("changed")
    statement = outbox.notifying(select(changed.c.id), changed, outbox.events_cte("events", select(changed.c.id)))
    told = Event(ORG, "order.completed", clock.now(), {"type": "order.completed"})
    before = new_id()
    for _ in range(2):
        async with database.statement() as conn:
            await execute(conn, statement, outbox.event_arrays("events", [(key, told), (key, told)]))
        await asyncio.sleep(0.005)
    after = new_id()
    async with database.read() as conn:
        ids = list((await conn.execute(select(webhook_events.c.id).order_by(webhook_events.c.seq))).scalars())
    assert len(ids) == 4
    assert {(i.version, i.variant) for i in ids} == {(7, RFC_4122)}
    # Made between two of Python's, in the order written (the 5 ms pause puts the second write in a later
    # millisecond: its ids above the first's whatever their random bits).
    assert before.int >> 80 <= ids[0].int >> 80 <= ids[-1].int >> 80 <= after.int >> 80
    assert max(ids[:2]) < min(ids[2:])
    assert len(set(ids)) == 4
