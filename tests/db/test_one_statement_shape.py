"""The shape of a one-statement write (varsel.db.one_statement): which columns its rows give, in the table's order;
how it runs on the driver (values, constants, conversions) and fails (as SQLAlchemy's own execution fails)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import String, Text, bindparam, cast, func, insert, literal, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from varsel.db.engine import Database, StatementConnection, database_unavailable
from varsel.db.one_statement import execute, parameters, shape, source
from varsel.db.tables import order_chains, orders


def test_the_columns_the_rows_give_in_the_tables_order_whatever_each_row_gives() -> None:
    rows = [{"status": "Processed", "id": 1}, {"creator": "ttd", "id": 2}]
    assert shape(orders, rows) == ("id", "creator", "status")
    # Asked again with the same keys in another order: the same answer (kept per set of keys).
    assert shape(orders, [{"creator": "x", "status": "y", "id": 3}]) == ("id", "creator", "status")
    assert parameters(rows, ("id", "creator", "status"), "new") == {
        "new_id": [1, 2],
        "new_creator": [None, "ttd"],
        "new_status": ["Processed", None],
    }


def test_a_key_that_is_no_column_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match=r"not columns of orders: \['colour'\]"):
            shape(orders, [{"id": 1, "colour": "blue"}])


# ---------------------------------------------------------------- execute: the compiled text and positional values


async def test_execute_binds_by_name_converts_as_sqlalchemy_does_and_keeps_the_statements_constants(
    postgres_url: str,
) -> None:
    """A one-statement write run as driver SQL (varsel.db.one_statement.execute): values given by name reach their
    places, a bound constant of the statement (a literal) keeps its value, values are converted by the column types'
    bind processors (a time to UTC in an array, JSON text), and the ids that come back are equal to, and found in
    a set as, the uuid.UUID they were given as."""
    first, second = uuid4(), uuid4()
    moment = datetime(2026, 3, 2, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    given = source(order_chains, ("id", "created", "dialogporten_association"), "given")
    statement = select(
        given.c.id,
        given.c.created,
        cast(given.c.dialogporten_association, Text).label("association"),
        literal("constant").label("constant"),
        bindparam("named", type_=String).label("named"),
    ).order_by(given.c.created)
    values = {
        "given_id": [first, second],
        "given_created": [moment, moment + timedelta(minutes=1)],
        "given_dialogporten_association": [{"dialogId": "a"}, None],
        "named": "by name",
    }
    database = Database(postgres_url)
    try:
        async with database.statement() as conn:
            rows = list(await execute(conn, statement, values))
        # What SQLAlchemy's own execution of the compiled construct gives.
        async with database.read() as read:
            expected = [tuple(row) for row in await read.execute(statement, values)]
    finally:
        await database.dispose()
    assert [tuple(row) for row in rows] == expected
    assert [row["id"] for row in rows] == [first, second]
    assert {row["id"] for row in rows} & {first} == {first}
    assert rows[0]["created"] == moment
    assert rows[0]["created"].utcoffset() == timedelta(0)
    # JSON's None is JSON null in an array (SQLAlchemy's processor), as SQLAlchemy's own execution binds it.
    assert [row["association"] for row in rows] == ['{"dialogId": "a"}', "null"]
    assert {(row["constant"], row["named"]) for row in rows} == {("constant", "by name")}


# ---------------------------------------------------------------- execute: errors as SQLAlchemy raises them


def _taken_key(chain_id: Any) -> Any:
    """An INSERT of one chain row with `chain_id`: run twice, the second breaks the primary key."""
    given = source(order_chains, ("id",), "given")
    key = chain_id.hex
    return insert(order_chains).from_select(
        ["id", "creator", "family", "idempotency_id", "idempotency_hash", "created"],
        select(given.c.id, literal("ttd"), literal("instant"), literal(key), literal(key), func.now()),
    )


async def test_a_database_error_is_raised_as_sqlalchemy_raises_it_and_the_connection_stays(postgres_url: str) -> None:
    """A broken constraint comes back as the IntegrityError SQLAlchemy's own execution raises (the callers' conflict
    and outage checks read it): the driver's SQLSTATE, not an outage, the connection kept and usable."""
    chain_id = uuid4()
    statement = _taken_key(chain_id)
    values = {"given_id": [chain_id]}
    database = Database(postgres_url)
    try:
        async with database.statement() as conn:
            await execute(conn, statement, values)
            with pytest.raises(IntegrityError) as ours:
                await execute(conn, statement, values)
            assert not conn.invalidated
            assert list(await execute(conn, select(literal(1).label("one")), {})) == [(1,)]
        async with database.transaction() as sqlalchemys:
            with pytest.raises(IntegrityError) as theirs:
                await sqlalchemys.execute(statement, values)
    finally:
        await database.dispose()
    assert type(ours.value) is type(theirs.value)
    assert type(ours.value.orig) is type(theirs.value.orig)
    assert getattr(ours.value.orig, "sqlstate", None) == "23505"
    assert not ours.value.connection_invalidated
    assert not database_unavailable(ours.value)
    # Bound values stay out of the message, as the engine is set up to keep them (they carry personal data).
    assert str(chain_id) not in str(ours.value)


async def _backend(conn: StatementConnection) -> int:
    return int((await execute(conn, select(func.pg_backend_pid().label("pid")), {}))[0]["pid"])


async def test_a_lost_connection_is_an_outage_and_the_pool_hands_out_none_of_its_generation(postgres_url: str) -> None:
    """The server ends the connections (a restart, a failover): the error says the connection was invalidated,
    counts as an outage (the callers retry), and the pool hands out neither it nor the others made before it, dead
    too, as SQLAlchemy's own execution sees to (the next write would fail on one of those)."""
    database = Database(postgres_url)
    try:
        async with database.statement() as first, database.statement() as second:
            pids = [await _backend(first), await _backend(second)]
        killer = Database(postgres_url)  # a pool of its own: none of the connections it ends
        try:
            async with killer.read() as read:
                for pid in pids:
                    await read.execute(select(func.pg_terminate_backend(pid)))
        finally:
            await killer.dispose()
        with pytest.raises(DBAPIError) as lost:
            async with database.statement() as conn:
                await execute(conn, select(literal(1).label("one")), {})
        assert conn.invalidated
        assert lost.value.connection_invalidated
        assert database_unavailable(lost.value)
        # Two at once: the pool's first pick is the lost one's entry, connected anew; the second is the other dead one,
        # unless the pool knows it is of the lost one's generation.
        async with database.statement() as conn, database.statement() as other:
            assert {await _backend(conn), await _backend(other)}.isdisjoint(pids)
    finally:
        await database.dispose()


async def test_a_statement_cut_off_midway_discards_its_connection(postgres_url: str) -> None:
    """Cancelled while the server runs it, the statement's connection is in a state nobody knows: it is invalidated
    (as SQLAlchemy does), not given back to the pool for the next write."""
    database = Database(postgres_url)
    try:
        async with database.statement() as conn:
            running = asyncio.create_task(execute(conn, select(func.pg_sleep(5)), {}))
            await asyncio.sleep(0.2)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            assert conn.invalidated
        async with database.statement() as conn:
            assert list(await execute(conn, select(literal(1).label("one")), {})) == [(1,)]
    finally:
        await database.dispose()


async def test_a_json_value_that_is_a_list_goes_in_as_one_value(postgres_url: str) -> None:
    """Rows travel as one-dimensional arrays: a JSON column whose value is itself a list (a composed email's
    attachments) is one element, not taken for a second dimension of the array and split."""
    attachments = [{"filename": "a.pdf", "mimeType": "application/pdf", "url": "https://x.blob.core.windows.net/a"}]
    given = source(orders, ("id", "attachments"), "given")
    statement = select(given.c.id, cast(given.c.attachments, Text).label("attachments"))
    first, second = uuid4(), uuid4()
    database = Database(postgres_url)
    try:
        async with database.statement() as conn:
            rows = await execute(
                conn,
                statement,
                parameters([{"id": first, "attachments": attachments}, {"id": second}], ("id", "attachments"), "given"),
            )
    finally:
        await database.dispose()
    assert [(row["id"], None if row["attachments"] is None else json.loads(row["attachments"])) for row in rows] == [
        (first, attachments),
        (second, None),
    ]
