"""SQLite writes made straight on the driver's connection, for the instant order's two writes.

The SQLite driver (aiosqlite) runs every call in a thread of its own and hands the result back to the event loop:
one hop each way per call, and SQLAlchemy makes four calls of most statements (cursor, execute, fetch, close). An
instant order's store and outcome were some thirty such hops, most of the API process's CPU for the order. Here
the same rows go in a few calls: BEGIN IMMEDIATE, one executemany per table (a loop in C), one call per
RETURNING statement, COMMIT. Values are converted as SQLAlchemy converts them (each column type's bind processor
for the SQLite dialect), so the rows read back the same whichever way they were written.

The SQL is written from the tables' metadata (column names, never a value); the statements of a write are in its
repository module. PostgreSQL's counterpart is varsel.db.one_statement.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


class DirectWrite:
    """One write transaction on the driver's connection (see Database.sqlite_write)."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self._connection = connection
        self._dialect = dialect

    async def begin(self) -> None:
        # IMMEDIATE, as every writer here: the write lock is taken up front (see varsel.db.engine).
        await self._call(self._connection.execute, "BEGIN IMMEDIATE", ())

    async def commit(self) -> None:
        await self._call(self._connection.execute, "COMMIT", ())

    async def rollback(self) -> None:
        await self._call(self._connection.execute, "ROLLBACK", ())

    def values(self, table: Table, keys: Sequence[str], row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's values of `keys`, converted for the driver as SQLAlchemy would convert them."""
        processors = _processors(table, tuple(keys), self._dialect)
        return tuple(
            value if process is None else process(value)
            for process, value in zip(processors, (row.get(key) for key in keys), strict=True)
        )

    def value(self, table: Table, key: str, value: Any) -> Any:
        return self.values(table, (key,), {key: value})[0]

    async def insert(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows, one call whatever their number; the columns are those any row has."""
        if not rows:
            return
        keys = tuple(c.name for c in table.columns if any(c.name in row for row in rows))
        await self.many(insert_sql(table, keys), [self.values(table, keys, row) for row in rows])

    async def many(self, sql: str, parameters: Sequence[tuple[Any, ...]]) -> None:
        if parameters:
            await self._call(self._connection.executemany, sql, parameters)

    async def fetch(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        """One statement's rows (a RETURNING statement's too), in one call."""
        rows: list[Any] = await self._call(self._connection.execute_fetchall, sql, parameters)
        return list(rows)

    async def _call(self, method: Callable[..., Any], sql: str, parameters: Any) -> Any:
        try:
            return await method(sql, parameters)
        except sqlite3.Error as error:
            # As SQLAlchemy raises it, so that a locked database is the outage (503, a retry) it is elsewhere.
            raise DBAPIError.instance(sql, None, error, sqlite3.Error, hide_parameters=True) from error


def insert_sql(table: Table, keys: Sequence[str]) -> str:
    return f"INSERT INTO {table.name} ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})"


@functools.lru_cache(maxsize=256)
def _processors(table: Table, keys: tuple[str, ...], dialect: Dialect) -> tuple[Callable[[Any], Any] | None, ...]:
    return tuple(table.c[key].type.bind_processor(dialect) for key in keys)
