"""Building blocks for writes made as one PostgreSQL statement (data-modifying CTEs over rows given as arrays).

A transaction of several statements costs a round trip for each, and BEGIN and COMMIT besides: the instant order's
store (the key, the order, its recipient, its notification) was six round trips and its outcome five. PostgreSQL runs
a statement whose WITH clauses insert or update as one atomic unit, so the same rows go in one round trip, without
BEGIN and COMMIT (see Database.statement). SQLite has no data-modifying CTEs: its writes stay as they are.

Rows travel as one array per column, read back into rows by unnest(): the statement's text then depends only on
which columns are given, never on how many rows. The statements are built once per such shape and kept (building
one of these from SQLAlchemy's constructs costs more CPU than the round trips it saves), and SQLAlchemy compiles
each once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, Table, bindparam, column, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import ResourceClosedError
from sqlalchemy.util import greenlet_spawn

from varsel.db.engine import StatementConnection, as_sqlalchemy_error


def shape(table: Table, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The columns the rows give, in the table's column order (a row without one gives NULL, as an INSERT of that
    row would). Raises ValueError for a key that is not a column."""
    # Asked for every table of every write (an instant order's store asks four times): the keys are gathered in C
    # and the answer kept per set of keys, not worked out again from the table's columns each time.
    return _shape(table, frozenset().union(*rows))


@functools.lru_cache(maxsize=1024)
def _shape(table: Table, present: frozenset[str]) -> tuple[str, ...]:
    keys = tuple(c.name for c in table.columns if c.name in present)
    unknown = present - set(keys)
    if unknown:
        raise ValueError(f"not columns of {table.name}: {sorted(unknown)}")
    return keys


def source(table: Table, keys: Sequence[str], name: str) -> Any:
    """A FROM clause named `name` with the columns `keys` of `table`, one row per element of the arrays bound as
    parameters(name, …)."""
    # One dimension, said so: else SQLAlchemy takes a first value that is itself a list (a JSON column's, a composed
    # email's attachments) for a second dimension and splits it.
    arrays = [bindparam(f"{name}_{key}", type_=ARRAY(table.c[key].type, dimensions=1)) for key in keys]
    return func.unnest(*arrays).table_valued(*[column(key, table.c[key].type) for key in keys]).render_derived(name)


def parameters(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], name: str) -> dict[str, list[Any]]:
    """The arrays `source(table, keys, name)` reads the rows from."""
    return {parameter: [row.get(key) for row in rows] for parameter, key in _names(name, tuple(keys))}


@functools.lru_cache(maxsize=1024)
def _names(name: str, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((f"{name}_{key}", key) for key in keys)


async def execute(conn: StatementConnection, statement: Executable, values: Mapping[str, Any]) -> list[Any]:
    """Run one of these statements with `values` (by parameter name) on `conn` (from Database.statement), straight
    on the driver: its compiled text (compiled once per statement: they are built once per shape, and kept) and
    positional arguments converted by SQLAlchemy's own bind processors, handed to asyncpg as SQLAlchemy would hand
    them, without SQLAlchemy's execution and result machinery around the call. That machinery cost more CPU than
    the write itself: an instant order's two writes took 0.2 ms less of the API's CPU this way (of ~2 ms per order,
    measured sequentially on PostgreSQL), and before that, running the compiled text rather than the construct took
    an outcome write from 0.28 to 0.18-0.21 ms.

    Errors are raised as SQLAlchemy raises them, so the outage and conflict checks apply unchanged: a database error
    as a DBAPIError (with the driver's SQLSTATE; `connection_invalidated`, and the connection discarded with the
    pool's others of its generation, when it was lost), anything else (an OSError) as it is; a statement cut off
    midway (cancelled) discards the connection, whose state is then unknown. The rows come back as asyncpg's
    records: by name (`row["id"]`) or position; a UUID as asyncpg's, equal to and hashed as uuid.UUID."""
    compiled = _compiled(statement, conn.dialect)
    arguments = tuple(
        value if convert is None else convert(value)
        for value, convert in zip(
            (values[name] if name in values else compiled.fixed[name] for name in compiled.names),
            compiled.processors,
            strict=True,
        )
    )
    if conn.invalidated:
        raise ResourceClosedError("this connection was discarded; take another from Database.statement")
    pooled = conn.pooled
    driver: Any = pooled.driver_connection  # asyncpg's Connection
    try:
        rows: list[Any] = await driver.fetch(compiled.sql, *arguments)
    except Exception as error:
        translated = await _as_sqlalchemy_raises(conn, compiled.sql, arguments, error)
        if translated is error:
            raise
        raise translated from error
    except BaseException:
        await greenlet_spawn(pooled.invalidate)
        raise
    return rows


async def _as_sqlalchemy_raises(
    conn: StatementConnection, sql: str, arguments: tuple[Any, ...], error: Exception
) -> Exception:
    """The exception SQLAlchemy raises for `error` from the driver (see execute): a DBAPIError for a database error
    (a lost connection discarded), else `error` itself."""
    dialect = conn.dialect
    adapted: Any = conn.pooled.dbapi_connection
    try:
        # The asyncpg adapter's own translation into its DB-API exception classes (re-raising what it does not
        # translate, an OSError say).
        adapted._handle_exception(error)
    except dialect.loaded_dbapi.Error as dbapi_error:
        lost = dialect.is_disconnect(dbapi_error, adapted, None)
        if lost:
            # As SQLAlchemy's Connection does: this connection, and the pool's others made before it (a server
            # restart took them all), are not handed out again.
            await greenlet_spawn(conn.engine.pool._invalidate, conn.pooled, dbapi_error)
        return as_sqlalchemy_error(conn.engine, dbapi_error, sql, arguments, lost=lost)
    except Exception:
        return error  # not the database's (an OSError): raised as it is, as SQLAlchemy does
    return error  # not reached: the adapter always raises


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    # The values of the statement's own constants (literals, the NOTIFY's channel), by name.
    fixed: dict[str, Any]


@functools.lru_cache(maxsize=256)
def _compiled(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup or ())
    if "POSTCOMPILE" in compiled.string or compiled.escaped_bind_names:
        raise ValueError("a one-statement write takes no expanding or escaped parameters")
    processors = compiled._bind_processors
    fixed = {name: compiled.binds[name].effective_value for name in names if not compiled.binds[name].required}
    return _Compiled(compiled.string, names, tuple(processors.get(name) for name in names), fixed)
