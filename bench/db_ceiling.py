"""The database ceiling: the rows one order writes (its order row and its recipient row, one transaction per order),
inserted as fast as the database takes them, with no HTTP, validation or auth. In a process of its own:
`python -m bench.db_ceiling CONFIG.json`, answering JSON on standard output.

Two ways, both through the same driver as varsel (asyncpg, aiosqlite):

* `sqlalchemy`: varsel's own Database (engine, pool, SQLite PRAGMAs, BEGIN IMMEDIATE) and its table definitions,
  with the statements varsel.orders.repository.insert_order runs;
* `sqlalchemy_prebuilt`: as `sqlalchemy`, but with the statements built once and the row passed as parameters;
* `driver`: the driver alone, with hand-written SQL: the floor under any Python on top;
* `sqlalchemy_serialized` (SQLite): as `sqlalchemy`, but the writers of the process take turns on an asyncio lock
  before they begin, as an in-process write lock in varsel would have them do;
* `driver_grouped`: the driver alone, the orders in flight written as varsel's intake groups them (group commit):
  as many transactions at once as varsel has (varsel.orders.intake.PARALLEL_BATCHES), each with one
  executemany per table. The ceiling for varsel as it is built now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy import insert

from bench.data import EMAIL, _order_row
from varsel.db.engine import Database
from varsel.db.tables import order_recipients, orders
from varsel.ids import new_id
from varsel.orders.intake import MAX_BATCH_ORDERS, PARALLEL_BATCHES


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rows() -> tuple[dict[str, Any], dict[str, Any]]:
    order_id = new_id()
    moment = datetime.now(UTC)
    order = _order_row(order_id, "email", moment, moment, "Registered")
    order["sms_sending_time_policy"] = "Daytime"
    recipient = {
        "order_id": order_id,
        "position": 0,
        "email_address": EMAIL,
        "mobile_number": None,
        "national_identity_number": None,
        "organization_number": None,
    }
    return order, recipient


class _Window:
    def __init__(self, warmup: float, duration: float) -> None:
        self.start = time.monotonic() + warmup
        self.end = self.start + duration
        self.count = 0
        self.cpu_start: float | None = None

    def done(self) -> bool:
        now = time.monotonic()
        if self.cpu_start is None and now >= self.start:
            self.cpu_start = _cpu()
        return now >= self.end

    def committed(self, orders: int = 1) -> None:
        if self.start <= time.monotonic() < self.end:
            self.count += orders


async def _sqlalchemy(url: str, concurrency: int, window: _Window, serialized: bool = False) -> None:
    """As varsel.orders.repository.insert_order: a new `insert(orders).values(...)` statement per order."""
    database = Database(url)
    # `serialized`: writers take turns in the process before they ask SQLite for its lock, instead of every pooled
    # connection waiting in SQLite's busy handler (which sleeps in steps of up to 100 ms) for the one lock.
    lock = asyncio.Lock() if serialized else contextlib.nullcontext()

    async def one() -> None:
        while not window.done():
            order, recipient = _rows()
            async with lock, database.transaction() as conn:
                await conn.execute(insert(orders).values(**order))
                await conn.execute(insert(order_recipients), [recipient])
            window.committed()

    try:
        await asyncio.gather(*(one() for _ in range(concurrency)))
    finally:
        await database.dispose()


async def _sqlalchemy_prebuilt(url: str, concurrency: int, window: _Window) -> None:
    """The same rows through the same Database, but with statements built once and the values passed as
    parameters: SQLAlchemy's compiled cache is then hit without building and hashing a new statement per order."""
    database = Database(url)
    insert_order, insert_recipient = insert(orders), insert(order_recipients)

    async def one() -> None:
        while not window.done():
            order, recipient = _rows()
            async with database.transaction() as conn:
                await conn.execute(insert_order, order)
                await conn.execute(insert_recipient, [recipient])
            window.committed()

    try:
        await asyncio.gather(*(one() for _ in range(concurrency)))
    finally:
        await database.dispose()


# The columns varsel's v1 intake writes (order_row); the v2 ones (order_type, chain_id, …) take their defaults.
_COLUMNS = [c.name for c in orders.c if c.name in _rows()[0]]
_RECIPIENT_COLUMNS = ["order_id", "position", "email_address", "mobile_number", "national_identity_number",
                      "organization_number"]  # fmt: skip


def _insert_sql(mark: Callable[[int], str]) -> tuple[str, str]:
    """The hand-written INSERTs of an order and of a recipient, with the driver's placeholders (`mark(i)`)."""

    def one(table: str, columns: list[str]) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(mark(i) for i in range(len(columns)))})"

    return one("orders", _COLUMNS), one("order_recipients", _RECIPIENT_COLUMNS)


_ASYNCPG_SQL = _insert_sql(lambda i: f"${i + 1}")
_SQLITE_SQL = _insert_sql(lambda i: "?")


async def _sqlite_connect(url: str) -> aiosqlite.Connection:
    """A connection set up as varsel's engine sets its own (WAL, NORMAL, foreign keys, busy timeout)."""
    conn = await aiosqlite.connect(url.split("///", 1)[1], isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000"):
        await conn.execute(f"PRAGMA {pragma}")
    return conn


async def _asyncpg(url: str, concurrency: int, window: _Window) -> None:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    pool = await asyncpg.create_pool(dsn, min_size=min(concurrency, 20), max_size=20)
    insert_order, insert_recipient = _ASYNCPG_SQL

    async def one() -> None:
        while not window.done():
            order, recipient = _rows()
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(insert_order, *[order[c] for c in _COLUMNS])
                await conn.execute(insert_recipient, *[recipient[c] for c in _RECIPIENT_COLUMNS])
            window.committed()

    try:
        await asyncio.gather(*(one() for _ in range(concurrency)))
    finally:
        await pool.close()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
    if hasattr(value, "hex") and not isinstance(value, (bytes, str, int, float)):
        return value.hex  # a UUID: SQLAlchemy's Uuid type stores 32 hex digits on SQLite
    return value


async def _aiosqlite(url: str, concurrency: int, window: _Window) -> None:
    conn = await _sqlite_connect(url)
    insert_order, insert_recipient = _SQLITE_SQL
    # SQLite admits one writer at a time: the concurrent tasks take turns on one connection, as varsel's
    # BEGIN IMMEDIATE transactions take turns on the file.
    lock = asyncio.Lock()

    async def one() -> None:
        while not window.done():
            order, recipient = _rows()
            async with lock:
                await conn.execute("BEGIN IMMEDIATE")
                await conn.execute(insert_order, [_sqlite_value(order[c]) for c in _COLUMNS])
                await conn.execute(insert_recipient, [_sqlite_value(recipient[c]) for c in _RECIPIENT_COLUMNS])
                await conn.execute("COMMIT")
            window.committed()

    try:
        await asyncio.gather(*(one() for _ in range(concurrency)))
    finally:
        await conn.close()


async def _asyncpg_grouped(url: str, concurrency: int, window: _Window) -> None:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    groups = PARALLEL_BATCHES
    size = min(MAX_BATCH_ORDERS, max(1, concurrency // groups))
    pool = await asyncpg.create_pool(dsn, min_size=groups, max_size=groups)
    insert_order, insert_recipient = _ASYNCPG_SQL

    async def group() -> None:
        while not window.done():
            rows = [_rows() for _ in range(size)]
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(insert_order, [[order[c] for c in _COLUMNS] for order, _ in rows])
                await conn.executemany(insert_recipient, [[r[c] for c in _RECIPIENT_COLUMNS] for _, r in rows])
            window.committed(size)

    try:
        await asyncio.gather(*(group() for _ in range(groups)))
    finally:
        await pool.close()


async def _aiosqlite_grouped(url: str, concurrency: int, window: _Window) -> None:
    conn = await _sqlite_connect(url)
    insert_order, insert_recipient = _SQLITE_SQL
    try:
        while not window.done():
            rows = [_rows() for _ in range(min(concurrency, MAX_BATCH_ORDERS))]
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(insert_order, [[_sqlite_value(o[c]) for c in _COLUMNS] for o, _ in rows])
            await conn.executemany(
                insert_recipient, [[_sqlite_value(r[c]) for c in _RECIPIENT_COLUMNS] for _, r in rows]
            )
            await conn.execute("COMMIT")
            window.committed(len(rows))
    finally:
        await conn.close()


async def run(config: dict[str, Any]) -> dict[str, Any]:
    url: str = config["url"]
    window = _Window(config.get("warmup", 1.0), config["duration"])
    if config["mode"] in ("sqlalchemy", "sqlalchemy_serialized"):
        await _sqlalchemy(url, config["concurrency"], window, serialized=config["mode"] == "sqlalchemy_serialized")
    elif config["mode"] == "sqlalchemy_prebuilt":
        await _sqlalchemy_prebuilt(url, config["concurrency"], window)
    elif config["mode"] == "driver_grouped":
        grouped = _aiosqlite_grouped if url.startswith("sqlite") else _asyncpg_grouped
        await grouped(url, config["concurrency"], window)
    elif url.startswith("sqlite"):
        await _aiosqlite(url, config["concurrency"], window)
    else:
        await _asyncpg(url, config["concurrency"], window)
    cpu = _cpu() - (window.cpu_start or 0.0)
    duration = config["duration"]
    return {
        "mode": config["mode"],
        "concurrency": config["concurrency"],
        "orders": window.count,
        "throughput_per_s": round(window.count / duration, 1),
        "cpu_share": round(cpu / duration, 3),
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    json.dump(asyncio.run(run(config)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
