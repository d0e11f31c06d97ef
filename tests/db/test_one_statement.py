"""PostgreSQL's one-statement writes (varsel.db.one_statement): an instant order is stored in one statement and its
outcome written in one, with no BEGIN or COMMIT round trips, and the statements are built once per shape, however
many rows. What they write, on both databases: tests/db/test_instant_writes.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select

from tests.conftest import NOW
from tests.db.test_query_plans import statements_sent
from varsel.app import Varsel, build
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import notification_attempts, sms_notifications
from varsel.orders import instant_repository
from varsel.orders.drafts import InstantDraft, InstantSms, SmsTemplateSpec
from varsel.orders.instant import InstantAnswer
from varsel.providers.base import Accepted, SmsMessage
from varsel.settings import Settings


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """PostgreSQL only: SQLite has no data-modifying WITH clauses, and writes in transactions as before."""
    return postgres_url


class Gateway:
    """The SMS provider as the instant path sees it: takes each message, its delivery report still to come."""

    name = "linkmobility"

    def __init__(self) -> None:
        self.sent: list[SmsMessage] = []

    async def send(self, message: SmsMessage) -> Accepted:
        self.sent.append(message)
        return Accepted(reference=f"ref-{len(self.sent)}")

    async def close(self) -> None:
        pass


@pytest.fixture
async def gateway_varsel(settings: Settings, database: Database) -> AsyncIterator[tuple[Varsel, Gateway]]:
    gateway = Gateway()
    services = build(settings, clock=FrozenClock(NOW), database=database, sms_provider=gateway)
    yield services, gateway
    await services.http.aclose()


def _draft(key: str) -> InstantDraft:
    return InstantDraft(key, InstantSms("+4799999999", SmsTemplateSpec("Varsel", "Your code is 123456"), 300))


async def _count(database: Database, table: Any) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@asynccontextmanager
async def driver_queries(database: Database) -> AsyncIterator[list[str]]:
    """The statements the block runs straight on asyncpg (varsel.db.one_statement.execute), and the BEGINs and
    COMMITs of SQLAlchemy's transactions, which asyncpg runs the same way: its query logger on every connection
    (the pool emptied first, so that every connection the block uses is a new one)."""
    queries: list[str] = []

    def log(record: Any) -> None:
        queries.append(record.query)

    def connected(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    await database.engine.dispose()
    event.listen(database.engine.sync_engine, "connect", connected)
    try:
        yield queries
    finally:
        event.remove(database.engine.sync_engine, "connect", connected)


async def test_an_instant_order_is_two_statements_without_begin_or_commit(
    gateway_varsel: tuple[Varsel, Gateway],
) -> None:
    varsel, gateway = gateway_varsel
    async with driver_queries(varsel.database) as on_driver:
        with statements_sent(varsel.database, ("WITH", "INSERT", "UPDATE", "SELECT", "BEGIN", "COMMIT")) as sent:
            # The first order on a new connection has asyncpg look up the statements' types; the second is counted.
            await varsel.instant.order("ttd", _draft("first"))
            on_driver.clear()
            sent.clear()
            result = await varsel.instant.order("ttd", _draft("one"))
    assert result.answer is InstantAnswer.CREATED
    assert [query.split(" AS", 1)[0] for query in on_driver] == ["WITH stored_chains", "WITH recorded"]
    assert sent == []  # nothing more through SQLAlchemy's execution
    assert len(gateway.sent) == 2
    shipment = result.shipment.order_id
    async with varsel.database.read() as conn:
        row = (await conn.execute(select(sms_notifications).where(sms_notifications.c.order_id == shipment))).one()
        attempt = (
            await conn.execute(select(notification_attempts).where(notification_attempts.c.notification_id == row.id))
        ).one()
    assert (row.status, row.provider_reference, row.claimed_by, row.claimed_until) == ("Accepted", "ref-2", None, None)
    assert (attempt.outcome, attempt.provider_reference) == ("accepted", "ref-2")


def test_the_statements_are_built_once_per_shape() -> None:
    shapes: Any = instant_repository._store_statement
    before = shapes.cache_info()
    first = instant_repository._store_statement(
        ("id",), ("id", "chain_id"), (("sms_notifications", ("id", "order_id")),)
    )
    again = instant_repository._store_statement(
        ("id",), ("id", "chain_id"), (("sms_notifications", ("id", "order_id")),)
    )
    assert first is again
    assert shapes.cache_info().hits == before.hits + 1


def test_sqlite_has_no_single_statement_writes(tmp_path: Any) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")

    async def open_one() -> None:
        async with database.statement():
            pass

    with pytest.raises(RuntimeError, match="PostgreSQL"):
        asyncio.run(open_one())


class LockingGateway(Gateway):
    """Takes the message, then has `locker` lock its notification's row before answering: the outcome's write then
    waits for the test to let go."""

    def __init__(self, database: Database) -> None:
        super().__init__()
        self.database = database
        self.locker: Any = None

    async def send(self, message: SmsMessage) -> Accepted:
        self.locker = await self.database.engine.connect()
        await self.locker.begin()
        await self.locker.execute(select(sms_notifications.c.id).with_for_update())
        return await super().send(message)


async def test_an_outcome_write_cut_off_by_the_process_stopping_is_still_looked_at(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """At shutdown every task is cancelled: the instant order's, waiting for its outcome's write, and the writer's.
    The write's failure is then logged (its exception retrieved), not dropped for the garbage collector to complain
    about as an exception never retrieved."""
    gateway = LockingGateway(database)
    varsel = build(settings, clock=FrozenClock(NOW), database=database, sms_provider=gateway)
    try:
        ordering = asyncio.create_task(varsel.instant.order("ttd", _draft("stopping")))
        for _ in range(200):
            await asyncio.sleep(0.01)
            under_way = {task.get_coro().__qualname__: task for task in asyncio.all_tasks()}  # type: ignore[union-attr]
            if "InstantService._order" in under_way and "GroupCommit._flush" in under_way and gateway.sent:
                break
        await asyncio.sleep(0.1)  # the outcome's UPDATE waits for the lock
        # As the event loop's teardown does: every task cancelled, the order's and the writer's alike.
        for name in ("InstantService._order", "GroupCommit._flush"):
            under_way[name].cancel()
        await asyncio.sleep(0.1)
        await gateway.locker.rollback()
        await gateway.locker.close()
        with pytest.raises(asyncio.CancelledError):
            await ordering
        for _ in range(200):
            if "could not be written" in caplog.text:
                break
            await asyncio.sleep(0.01)
    finally:
        await varsel.http.aclose()
    assert "instant order: an outcome answered to its caller could not be written" in caplog.text
