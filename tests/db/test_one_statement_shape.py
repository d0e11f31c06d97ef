"""The shape of a one-statement write (varsel.db.one_statement): which columns its rows give, in the table's order."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest
from sqlalchemy import String, Text, bindparam, cast, literal, select

from varsel.db.engine import Database
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
            expected = [tuple(row) for row in await conn.execute(statement, values)]
    finally:
        await database.dispose()
    assert [tuple(row) for row in rows] == expected
    assert [row.id for row in rows] == [first, second]
    assert {row.id for row in rows} & {first} == {first}
    assert rows[0].created == moment
    assert rows[0].created.utcoffset() == timedelta(0)
    # JSON's None is JSON null in an array (SQLAlchemy's processor), as SQLAlchemy's own execution binds it.
    assert [row.association for row in rows] == ['{"dialogId": "a"}', "null"]
    assert {(row.constant, row.named) for row in rows} == {("constant", "by name")}
