"""Engine setup for both databases, and the one way to open a transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from varsel.db.sqlite_direct import DirectWrite, SqliteWriter, WalCheckpointer

T = TypeVar("T")


# A pooled PostgreSQL connection is checked with a ping before use once it has been idle this long (seconds).
PING_AFTER_IDLE_SECONDS = 2.0

# How long a SQLite writer waits for another writer's lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# SQLite's WAL is copied into the database file by each long-running process's checkpointer, every so many seconds
# (varsel.db.sqlite_direct.WalCheckpointer); a commit copies it only past this many pages (some 40 MB, against
# SQLite's default of 1,000), a backstop for a process that runs no checkpointer. Often and small: the copy and its
# fsync hold up the commits made meanwhile (200 writes/s, bench at /tmp: every second, writes' p99 2.3 ms, longest
# 23 ms; every 5 s, 11 and 53 ms; every 0.1 s, 2.4 and 5 ms). A round with nothing to copy costs next to nothing.
WAL_CHECKPOINT_SECONDS = 0.1
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000


# Every SQLite connection's settings: the engine's and the direct writer's (varsel.db.sqlite_direct).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    # WAL with NORMAL is durable against application crashes (what we promise); only an OS crash or power loss can
    # take the last transactions, and FULL would cost an fsync per commit.
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}",
)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin, so writers can BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer takes the write lock up front: a deferred transaction that reads and then writes can fail with
        # SQLITE_BUSY without waiting, which is what PostgreSQL's row locks spare us on the other database.
        if conn.get_execution_options().get("varsel_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """SQLAlchemy's pool_pre_ping, only for connections that sat idle: a ping is three round trips (BEGIN, an empty
    query, ROLLBACK) and, on a busy connection, half the cost of a small transaction (measured: four statements in
    a transaction took 2.1 ms of CPU with the ping and 1.6 ms without). A connection back in use within
    PING_AFTER_IDLE_SECONDS is used as it is; should the server have gone away meanwhile, its first statement fails
    as a database outage (503 at the API, a retry in a worker) and SQLAlchemy then replaces every connection of the
    pool that is older than the failure, so a restart costs one such failure per process, not one per connection."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["varsel_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("varsel_idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or used a moment ago
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out another (SQLAlchemy's contract for this event).
            raise DisconnectionError("the pooled connection did not answer a ping") from error


@dataclass(frozen=True, slots=True)
class StatementConnection:
    """A pooled PostgreSQL connection lent by Database.statement, for varsel.db.one_statement.execute only: nothing
    else may run on it (a statement through SQLAlchemy's DB-API adapter would open a transaction that nobody
    commits)."""

    pooled: PoolProxiedConnection
    engine: Engine

    @property
    def dialect(self) -> Dialect:
        return self.engine.dialect

    @property
    def invalidated(self) -> bool:
        """The connection was found lost (or a statement on it cut off) and discarded."""
        return not self.pooled.is_valid


def as_sqlalchemy_error(
    engine: Engine, error: Exception, sql: str | None = None, arguments: Any = None, *, lost: bool
) -> StatementError:
    """The DBAPIError SQLAlchemy wraps a driver's database error in (`error`: the DB-API adapter's exception), for
    work done past SQLAlchemy's Connection (Database.statement, varsel.db.one_statement.execute): the outage and
    conflict checks read its SQLSTATE and `connection_invalidated` (`lost`); bound values hidden as the engine
    hides them."""
    return DBAPIError.instance(
        sql, arguments, error, engine.dialect.loaded_dbapi.Error, hide_parameters=engine.hide_parameters,
        connection_invalidated=lost, dialect=engine.dialect,
    )  # fmt: skip


class Database:
    """The engine plus the transaction discipline: services own transactions, repositories run SQL in them."""

    def __init__(
        self, url: str, *, echo: bool = False, ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS
    ) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # Bound values stay out of error messages: they carry identity numbers, addresses and message texts, and a
        # database error is logged (app.py) with its message, which would otherwise list every parameter.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        elif self.dialect == "postgresql":
            # LIFO: the connection used last goes out first, so under a light load one connection stays busy and
            # the rest go idle (and are pinged before their next use) instead of all of them being cycled through.
            kwargs.update(pool_size=10, max_overflow=10, pool_use_lifo=True)
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use postgresql+asyncpg or sqlite+aiosqlite")
        self.url = url
        self.engine = create_async_engine(url, **kwargs)
        self._write_turns = asyncio.Lock() if self.dialect == "sqlite" else None
        self._sqlite_file = parsed.database if self.dialect == "sqlite" else None
        # Made on first use, gone with dispose() (see sqlite_write and start_wal_checkpoints).
        self._writer: SqliteWriter | None = None
        self._checkpointer: WalCheckpointer | None = None
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        else:
            _ping_when_idle(self.engine, ping_after_idle_seconds)

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
        """One transaction; committed when the block ends, rolled back when it raises.

        On SQLite the writers of this process take turns here before they take the database's write lock: left to
        SQLite, a writer that finds the lock taken sleeps in its busy handler (1, 2, 5, 10 … 100 ms at a time) and
        wakes late, long after the lock was free, which put hundreds of milliseconds on the tail of every writer
        when several group commits (intake, instant orders, their outcomes) wrote at once. Writers of other
        processes on the same file still meet SQLite's busy handler."""
        if write and self._write_turns is not None:
            async with self._write_turns, self._transaction(write) as conn:
                yield conn
            return
        async with self._transaction(write) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            if write:
                conn = await conn.execution_options(varsel_write=True)
            async with conn.begin():
                yield conn

    def read(self) -> Any:
        return self.transaction(write=False)

    async def sqlite_write(self, work: Callable[[DirectWrite], T]) -> T:
        """SQLite only: `work` as one write transaction in a thread with its own connection (varsel.db.sqlite_direct),
        one hop from the event loop however many statements; it takes its turn with this process's other writers as
        transaction() does. A file database only (another connection to ":memory:" would be another database)."""
        if self._write_turns is None or not self._sqlite_file or self._sqlite_file == ":memory:":
            raise RuntimeError("direct writes are for a SQLite file; use statement() or transaction()")
        async with self._write_turns:
            if self._writer is None:
                self._writer = SqliteWriter(self._sqlite_file, self.engine.dialect, SQLITE_PRAGMAS)
            return await self._writer.run(work)

    def start_wal_checkpoints(self) -> None:
        """SQLite file: copy the WAL into the database in the background from now until dispose() (the API and
        worker processes start it). Nothing on PostgreSQL; a second call changes nothing."""
        if self._sqlite_file and self._sqlite_file != ":memory:" and self._checkpointer is None:
            self._checkpointer = WalCheckpointer(self._sqlite_file, SQLITE_PRAGMAS, WAL_CHECKPOINT_SECONDS)
            self._checkpointer.start()

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[StatementConnection]:
        """PostgreSQL only: a pooled connection for writes that are one statement each, run straight on the driver
        (varsel.db.one_statement.execute), each committing by itself with no BEGIN or COMMIT around it (two round
        trips fewer): PostgreSQL makes a statement atomic, its data-modifying WITH clauses included. Taken from the
        pool and given back without SQLAlchemy's Connection around it (40 us less CPU a write, measured)."""
        if self.dialect != "postgresql":
            raise RuntimeError("single-statement writes are for PostgreSQL; on SQLite use transaction()")
        engine = self.engine.sync_engine
        try:
            pooled = await self.engine.raw_connection()
        except engine.dialect.loaded_dbapi.Error as error:
            # Raised as SQLAlchemy's Connection raises it when it cannot connect (the server starting up or
            # shutting down, too many clients): a DBAPIError with the SQLSTATE, which the outage checks read. The
            # pool alone raises the driver adapter's own exception, which they would take for a bug (a 500).
            raise as_sqlalchemy_error(engine, error, lost=engine.dialect.is_disconnect(error, None, None)) from error
        try:
            yield StatementConnection(pooled, engine)
        finally:
            # In a greenlet, as SQLAlchemy gives a connection back: a pool that is full closes it, which awaits.
            await greenlet_spawn(pooled.close)

    async def ping(self) -> None:
        """Raises when the database does not answer."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await checkpointer.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()
        await self.engine.dispose()


# PostgreSQL error classes that mean "not now" rather than "wrong": connection exceptions, server shutting down or
# starting, too many connections, and the transaction conflicts a retry resolves.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57P", "53300", "40001", "40P01")


def database_unavailable(exc: BaseException) -> bool:
    """True when a database error is an outage or a conflict worth retrying, not a bug."""
    if isinstance(exc, OSError):
        return True  # the connection could not be made at all
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
    message = str(exc.orig).lower()
    # SQLite: another writer held the lock for longer than the busy timeout.
    return "database is locked" in message or "database is busy" in message
