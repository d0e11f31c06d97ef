"""The instant order's two writes as each database makes them (PostgreSQL: one statement each; SQLite: a few calls
straight on the driver): every value reads back through SQLAlchemy as it was given (ids, times, flags, JSON, NULLs);
a batch stores each free key once and nothing of a taken one; an outcome is written, with its attempt, only for a
notification its sender still holds; a locked SQLite database is an outage, as it is on SQLAlchemy's way. On SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

from tests.conftest import NOW
from varsel.app import Varsel
from varsel.db.engine import Database, database_unavailable
from varsel.db.sqlite_direct import DirectWrite, SqliteWriter
from varsel.db.tables import notification_attempts, order_chains, order_recipients, orders, sms_notifications
from varsel.dispatch import repository
from varsel.orders import chain_repository
from varsel.orders.drafts import ChainDraft, InstantDraft, InstantSms, SmsTemplateSpec
from varsel.orders.instant import _NewInstant, _order_draft
from varsel.orders.vocabulary import IdempotencyFamily

WORKER = "api-1:instant"


def _new(varsel: Varsel, key: str, creator: str = "ttd") -> _NewInstant:
    """An instant order's rows, made as InstantService.order makes them."""
    draft = InstantDraft(key, InstantSms("+4799999999", SmsTemplateSpec("Varsel", "Your code is 123456"), 300), "ref")
    chain_id, order_id, notification_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    order_draft = _order_draft(draft, NOW)
    order = chain_repository.chain_order_row(order_id, creator, order_draft, NOW, chain_id, 0)
    order.update(status="Processed")
    chain = chain_repository.chain_row(chain_id, creator, IdempotencyFamily.INSTANT, ChainDraft(key, order_draft), NOW)
    # A JSON value and a NULL one: both must come back as they went in.
    chain["dialogporten_association"] = {"dialogId": "d-1", "transmissionId": None}
    notification = varsel.instant._notification_row(draft, order_id, notification_id, creator, NOW)
    notification["claimed_by"] = WORKER
    return _NewInstant(chain, order, chain_repository.chain_recipient_rows(order_id, order_draft), "sms", notification)


async def _rows(database: Database, table: Any) -> list[Any]:
    async with database.read() as conn:
        return list(await conn.execute(select(table)))


def _assert_as_given(row: Any, given: dict[str, Any]) -> None:
    for key, value in given.items():
        assert getattr(row, key) == value, key


async def _record(database: Database, worker: str, outcomes: list[Any], attempts: list[dict[str, Any]]) -> set[Any]:
    if database.dialect == "postgresql":
        async with database.statement() as conn:
            return await repository.record_pending_outcomes(conn, sms_notifications, worker, outcomes, attempts, NOW)
    return await database.sqlite_write(
        lambda write: repository.record_pending_outcomes_sqlite(write, sms_notifications, worker, outcomes, attempts)
    )


def _attempt(notification_id: uuid.UUID, reference: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "channel": "sms",
        "notification_id": notification_id,
        "attempt": 1,
        "started": NOW,
        "finished": NOW + timedelta(milliseconds=40),
        "provider": "linkmobility",
        "outcome": "accepted",
        "status": "Accepted",
        "provider_reference": reference,
        "detail": None,
    }


async def test_every_value_reads_back_as_it_was_given(varsel: Varsel, database: Database) -> None:
    new = _new(varsel, "k")
    assert await varsel.instant._insert([new]) == [True]
    for table, given in (
        (order_chains, new.chain),
        (orders, new.order),
        (order_recipients, new.recipients[0]),
        (sms_notifications, new.notification),
    ):
        [row] = await _rows(database, table)
        _assert_as_given(row, given)

    later = NOW + timedelta(seconds=1)
    outcome = {"status": "Accepted", "status_changed": later, "provider_reference": "gw-1", "status_detail": None}
    held = await _record(
        database, WORKER, [(new.notification["id"], outcome)], [_attempt(new.notification["id"], "gw-1")]
    )
    assert held == {new.notification["id"]}
    [row] = await _rows(database, sms_notifications)
    _assert_as_given(row, {**outcome, "claimed_by": None, "claimed_until": None, "mobile_number": "+4799999999"})
    [attempt] = await _rows(database, notification_attempts)
    _assert_as_given(attempt, _attempt(new.notification["id"], "gw-1") | {"id": attempt.id})


async def test_a_batch_stores_each_free_key_once_and_nothing_of_a_taken_one(varsel: Varsel, database: Database) -> None:
    first = _new(varsel, "taken")
    assert await varsel.instant._insert([first]) == [True]
    batch = [_new(varsel, key) for key in ("taken", "a", "a", "b")] + [_new(varsel, "a", creator="nav")]
    assert await varsel.instant._insert(batch) == [False, True, False, True, True]
    async with database.read() as conn:
        for table in (order_chains, orders, order_recipients, sms_notifications):
            count = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            assert count == 4, table.name
        stored = set((await conn.execute(select(orders.c.id))).scalars())
    assert stored == {new.order["id"] for new in (first, batch[1], batch[3], batch[4])}


async def test_an_outcome_is_written_only_for_a_notification_its_sender_holds(
    varsel: Varsel, database: Database
) -> None:
    mine, theirs = _new(varsel, "mine"), _new(varsel, "theirs")
    theirs.notification["claimed_by"] = "another-process:instant"
    await varsel.instant._insert([mine, theirs])
    outcome = {"status": "Accepted", "status_changed": NOW, "provider_reference": "gw"}
    ids = [mine.notification["id"], theirs.notification["id"]]
    held = await _record(database, WORKER, [(i, outcome) for i in ids], [_attempt(i, "gw") for i in ids])
    assert held == {mine.notification["id"]}
    # Written once: the same outcome again finds it no longer Sending.
    assert await _record(database, WORKER, [(ids[0], outcome)], [_attempt(ids[0], "again")]) == set()
    rows = {row.id: row for row in await _rows(database, sms_notifications)}
    assert (rows[ids[0]].status, rows[ids[1]].status) == ("Accepted", "Sending")
    assert [a.notification_id for a in await _rows(database, notification_attempts)] == [ids[0]]


async def test_a_locked_sqlite_database_is_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    # A short wait for the lock, not the engine's ten seconds.
    writer = SqliteWriter(str(path), sqlite.dialect(), ["PRAGMA busy_timeout=50"])
    try:
        with pytest.raises(DBAPIError) as raised:
            await writer.run(lambda write: write.fetch("INSERT INTO t VALUES (1) RETURNING x", ()))
        assert database_unavailable(raised.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Free again, the same writer writes.
    assert await writer.run(lambda write: write.fetch("INSERT INTO t VALUES (2) RETURNING x", ())) == [(2,)]
    await writer.close()


@pytest.fixture
async def sqlite_database(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Database]:
    """SQLite alone: PostgreSQL's writes are single statements, with nothing to roll back."""
    target = tmp_path / "direct.db"
    shutil.copy(sqlite_template, target)
    database = Database(f"sqlite+aiosqlite:///{target}")
    yield database
    await database.dispose()


async def test_a_failed_direct_write_is_rolled_back(sqlite_database: Database) -> None:
    database = sqlite_database
    rows = [{"id": uuid.uuid4(), "creator": "ttd", "family": "Instant", "idempotency_id": "x",
             "idempotency_hash": "h", "created": NOW}]  # fmt: skip

    def half_then_fail(write: DirectWrite) -> None:
        write.insert(order_chains, rows)
        raise RuntimeError("after the first insert")

    with pytest.raises(RuntimeError):
        await database.sqlite_write(half_then_fail)
    assert await _rows(database, order_chains) == []


async def test_a_time_is_stored_as_sqlalchemy_stores_it(sqlite_database: Database) -> None:
    # At a whole second: SQLAlchemy writes "…10:00:00.000000"; written otherwise it compares below the same time.
    direct, through_sqlalchemy = (
        {"id": uuid.uuid4(), "creator": "ttd", "family": "Instant", "idempotency_id": key,
         "idempotency_hash": key, "created": NOW}
        for key in ("direct", "sqlalchemy")
    )  # fmt: skip
    await sqlite_database.sqlite_write(lambda write: write.insert(order_chains, [direct]))
    async with sqlite_database.transaction() as conn:
        await conn.execute(order_chains.insert(), [through_sqlalchemy])
    async with sqlite_database.read() as conn:
        same = (await conn.execute(select(order_chains.c.idempotency_id).where(order_chains.c.created == NOW))).all()
        stored = (await conn.execute(text("SELECT DISTINCT created FROM order_chains"))).all()
    assert sorted(row[0] for row in same) == ["direct", "sqlalchemy"]
    assert stored == [("2026-03-02 10:00:00.000000",)]


async def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    path = tmp_path / "commit.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        setup.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id))")
    writer = SqliteWriter(str(path), sqlite.dialect(), ["PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=50"])

    def orphan(write: DirectWrite) -> None:
        # Checked at COMMIT, not at the INSERT: it is the COMMIT that fails.
        write.fetch("PRAGMA defer_foreign_keys=ON", ())
        write.fetch("INSERT INTO child VALUES (7)", ())

    with pytest.raises(DBAPIError, match="FOREIGN KEY"):
        await writer.run(orphan)
    # Neither this writer nor anyone else is left locked out.
    assert await writer.run(lambda write: write.fetch("INSERT INTO parent VALUES (7) RETURNING id", ())) == [(7,)]
    with sqlite3.connect(path, timeout=0.05, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    await writer.close()


async def test_a_cancelled_caller_returns_once_the_transaction_has_ended(tmp_path: Path) -> None:
    path = tmp_path / "cancel.db"
    writer = SqliteWriter(str(path), sqlite.dialect(), [])
    await writer.run(lambda write: write.fetch("CREATE TABLE t (x)", ()))
    started = threading.Event()

    def slow(write: DirectWrite) -> None:
        write.fetch("INSERT INTO t VALUES (1)", ())
        started.set()
        time.sleep(0.3)

    task = asyncio.ensure_future(writer.run(slow))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # By now the transaction has ended (committed, as a write cut off by a crash may be): the lock is free.
    with sqlite3.connect(path, timeout=0, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")
        assert other.execute("SELECT count(*) FROM t").fetchone() == (1,)
        other.execute("ROLLBACK")
    await writer.close()


async def test_a_key_that_is_no_column_is_refused(sqlite_database: Database) -> None:
    row = {"id": uuid.uuid4(), "creator": "ttd", "family": "Instant", "idempotency_id": "k", "idempotency_hash": "k",
           "created": NOW, "creatd": NOW}  # fmt: skip
    with pytest.raises(ValueError, match="creatd"):
        await sqlite_database.sqlite_write(lambda write: write.insert(order_chains, [row]))
