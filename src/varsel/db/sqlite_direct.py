"""SQLite writes made on a connection and thread of their own, for the instant order's two writes.

The SQLite driver SQLAlchemy uses (aiosqlite) runs every call in a thread and hands the result back to the event
loop: one hop each way per call, and SQLAlchemy makes up to four calls of a statement (cursor, execute, fetch,
close). An instant order's store and outcome were some thirty such hops, most of the API process's CPU for the
order. Here a whole write transaction is one function run in the writer's thread (BEGIN IMMEDIATE, one executemany
per table, a RETURNING statement, COMMIT): one hop. The writer's connection is configured as the engine's are (WAL,
foreign keys, busy timeout, synchronous NORMAL) and takes its turn with the process's other writers
(Database.sqlite_write).

Values are converted as SQLAlchemy converts them (each column type's bind processor for the SQLite dialect), so the
rows read back the same whichever way they were written. The SQL is written from the tables' metadata (column
names, never a value); the statements of a write are in its repository module. PostgreSQL's counterpart is
varsel.db.one_statement.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")

log = logging.getLogger("varsel.db")


class DirectWrite:
    """One write transaction, inside the writer's thread: what a repository function is given to write with."""

    def __init__(self, cursor: sqlite3.Cursor, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def values(self, table: Table, keys: Sequence[str], row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's values of `keys`, converted for the driver as SQLAlchemy would convert them."""
        processors = _processors(table, tuple(keys), self._dialect)
        return tuple(
            value if process is None else process(value)
            for process, value in zip(processors, (row.get(key) for key in keys), strict=True)
        )

    def value(self, table: Table, key: str, value: Any) -> Any:
        return self.values(table, (key,), {key: value})[0]

    def insert(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows in one call whatever their number; the columns are those any row has."""
        if not rows:
            return
        keys = columns_of(table, rows)
        self._cursor.executemany(insert_sql(table, keys), [self.values(table, keys, row) for row in rows])

    def fetch(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        """One statement's rows (a RETURNING statement's too)."""
        return self._cursor.execute(sql, parameters).fetchall()


class SqliteWriter:
    """A thread with its own connection to the database file, running one write transaction at a time."""

    def __init__(self, path: str, dialect: Dialect, pragmas: Sequence[str]) -> None:
        self._path = path
        self._dialect = dialect
        self._pragmas = tuple(pragmas)
        self._connection: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="varsel-sqlite-writer")

    async def run(self, work: Callable[[DirectWrite], T]) -> T:
        """`work` in one transaction (BEGIN IMMEDIATE … COMMIT, rolled back when it or the COMMIT fails), in the
        writer's thread. A database error is raised as SQLAlchemy raises it, so that a locked database is the outage
        (503, a retry) it is on SQLAlchemy's way. A caller cancelled meanwhile is cancelled only once the transaction
        has ended (committed or not, as a write cut off by a crash would be), so that the process's next writer
        (Database.sqlite_write's turn) never finds it still holding SQLite's write lock."""
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._transaction, work)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait({done})
            raise

    def _transaction(self, work: Callable[[DirectWrite], T]) -> T:
        try:
            if self._connection is None:
                self._connection = self._open()
            connection = self._connection
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                result = work(DirectWrite(cursor, self._dialect))
                cursor.execute("COMMIT")
            except BaseException:
                self._end_failed(connection)
                raise
            return result
        except sqlite3.Error as error:
            raise DBAPIError.instance(None, None, error, sqlite3.Error, hide_parameters=True) from error

    def _end_failed(self, connection: sqlite3.Connection) -> None:
        """After a failure inside the transaction, or of its COMMIT (SQLite keeps the transaction open then): roll
        back if a transaction is still open (SQLite may have rolled back by itself, after a full disk or an I/O
        error). A connection that cannot be brought out of its transaction is closed, never used again: held open,
        it would keep the write lock from every writer of the file."""
        try:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if connection.in_transaction:
            connection.close()
            self._connection = None

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode: the transaction is begun and ended above, as SQLAlchemy's are (see varsel.db.engine).
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        for pragma in self._pragmas:
            connection.execute(pragma)
        return connection

    async def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close_connection)
        self._thread.shutdown(wait=True)


def quoted(name: str) -> str:
    """A table or column name from the metadata, quoted (a future column named `order` stays a name)."""
    return '"' + name.replace('"', '""') + '"'


def columns_of(table: Table, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The table's columns the rows give, in its column order; a key that is no column is refused (as SQLAlchemy
    refuses it), never dropped."""
    present = {key for row in rows for key in row}
    unknown = present - set(table.c.keys())
    if unknown:
        raise ValueError(f"not columns of {table.name}: {sorted(unknown)}")
    return tuple(c.name for c in table.columns if c.name in present)


def insert_sql(table: Table, keys: Sequence[str]) -> str:
    names = ", ".join(quoted(key) for key in keys)
    return f"INSERT INTO {quoted(table.name)} ({names}) VALUES ({', '.join('?' for _ in keys)})"


@functools.lru_cache(maxsize=256)
def _processors(table: Table, keys: tuple[str, ...], dialect: Dialect) -> tuple[Callable[[Any], Any] | None, ...]:
    # The dialect's own implementation of each type, as SQLAlchemy binds it: a TypeDecorator's bind_processor alone
    # falls back to the generic type (a DateTime then went to the driver unformatted, and a time at a whole second
    # was stored without its ".000000", comparing below the same time written by SQLAlchemy).
    return tuple(table.c[key].type.dialect_impl(dialect).bind_processor(dialect) for key in keys)


class WalCheckpointer:
    """Copies SQLite's WAL into the database file every `every` seconds (a PASSIVE checkpoint: it never waits for
    readers or writers, who carry on meanwhile), in a thread with its own connection.

    Left to SQLite, the commit that takes the WAL past its limit copies it, and that commit's caller waits for the
    copy and its fsync: at 200 instant orders/s that put the p99 at 12-36 ms over the provider's own; with small
    copies made here every 0.1 s instead, 3-9 ms (bench, instant step, quick). The engine's connections keep a far
    higher limit of their own (varsel.db.engine.SQLITE_WAL_AUTOCHECKPOINT_PAGES) as a backstop for a process that
    runs no checkpointer."""

    def __init__(self, path: str, pragmas: Sequence[str], every: float) -> None:
        self._path = path
        self._pragmas = tuple(pragmas)
        self._every = every
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="varsel-sqlite-checkpoint")
        self._connection: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.checkpoint()
            except Exception as error:
                # The next round tries again; meanwhile the commits' own backstop bounds the WAL.
                log.warning("SQLite WAL checkpoint failed: %s", error)

    async def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint; SQLite's answer: (busy, frames in the WAL, frames copied)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)

    def _checkpoint(self) -> tuple[int, int, int]:
        if self._connection is None:
            self._connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            for pragma in self._pragmas:
                self._connection.execute(pragma)
        busy, frames, copied = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close_connection)
        self._thread.shutdown(wait=True)
