"""Group commit for incoming orders: the orders that arrive while one transaction commits are stored together in the
next one.

An order is answered 202 only once its transaction has committed, so batching changes nothing a caller can see but
the cost: one BEGIN, one COMMIT (and on SQLite one write lock and one WAL append), one wake-up notice and two
statements for a whole batch instead of for every order. Nothing waits to fill a batch: an order arriving at a quiet
service is written at once; under load, orders queue while the previous batch commits and go in the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from varsel.db.engine import Database, database_unavailable
from varsel.dispatch import repository as dispatch_repository
from varsel.orders import repository

# A batch holds at most this many orders, and once it holds one it takes no order that would bring it past this
# many recipients: an order of ten thousand recipients goes alone, and no transaction grows without bound.
MAX_BATCH_ORDERS = 256
MAX_BATCH_RECIPIENTS = 2048

# Batches committing at once. PostgreSQL takes concurrent writers, so while one batch waits for its commit (a round
# trip and a WAL flush) the next can be written; SQLite has one writer, and a second batch would only wait for the lock.
PARALLEL_BATCHES = {"postgresql": 4, "sqlite": 1}


@dataclass
class _Pending:
    order: dict[str, Any]
    recipients: list[dict[str, Any]]
    due_soon: bool
    stored: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class OrderWriter:
    """Writes orders in as few transactions as the load allows. One writer per process (per Database)."""

    def __init__(
        self,
        database: Database,
        on_batch: Callable[[int], None] = lambda size: None,
        max_orders: int = MAX_BATCH_ORDERS,
        max_recipients: int = MAX_BATCH_RECIPIENTS,
        parallel: int | None = None,
    ) -> None:
        self._db = database
        self._on_batch = on_batch
        self._max_orders = max_orders
        self._max_recipients = max_recipients
        self._parallel = parallel or PARALLEL_BATCHES.get(database.dialect, 1)
        self._queue: list[_Pending] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def write(self, order: dict[str, Any], recipients: list[dict[str, Any]], *, due_soon: bool) -> None:
        """Store one order and its recipients; returns once they are committed, raises if they could not be."""
        pending = _Pending(order, recipients, due_soon)
        self._queue.append(pending)
        if len(self._flushers) < self._parallel:
            # A flusher is a task of its own, not the first caller's: a caller that goes away (a client that hangs
            # up) must not take the other callers' orders with it.
            self._flushers.add(asyncio.create_task(self._flush()))
        # Shielded for the same reason: the order is being written whether or not its caller still waits.
        await asyncio.shield(pending.stored)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                await self._store(batch)
        except BaseException as error:  # cancelled at shutdown: nobody may be left waiting for ever
            for pending in self._queue:
                if not pending.stored.done():
                    pending.stored.set_exception(error if isinstance(error, Exception) else RuntimeError("stopped"))
            self._queue.clear()
            raise
        finally:
            # At once, not in a done callback: one scheduled for later would let a write arriving meanwhile find
            # every flusher taken, queue its order, and wait for ever.
            task = asyncio.current_task()
            if task is not None:
                self._flushers.discard(task)

    def _take(self) -> list[_Pending]:
        batch = [self._queue[0]]
        recipients = len(batch[0].recipients)
        for pending in self._queue[1:]:
            if len(batch) >= self._max_orders or recipients + len(pending.recipients) > self._max_recipients:
                break
            batch.append(pending)
            recipients += len(pending.recipients)
        del self._queue[: len(batch)]
        return batch

    async def _store(self, batch: list[_Pending]) -> None:
        try:
            await self._insert(batch)
        except Exception as error:
            if len(batch) == 1 or database_unavailable(error):
                # An outage fails every order of the batch alike (each caller answers 503 with Retry-After).
                for pending in batch:
                    _fail(pending, error)
                return
            # Something in one order the database refused: store the others one by one, so only that one fails.
            for pending in batch:
                try:
                    await self._insert([pending])
                except Exception as single_error:
                    _fail(pending, single_error)
                else:
                    _succeed(pending)
            return
        for pending in batch:
            _succeed(pending)

    async def _insert(self, batch: list[_Pending]) -> None:
        async with self._db.transaction() as conn:
            await repository.insert_orders(conn, [p.order for p in batch], [row for p in batch for row in p.recipients])
            if any(p.due_soon for p in batch):
                # Workers in other processes (PostgreSQL) learn of it when this commits.
                await dispatch_repository.announce_work(conn, orders=True)
        self._on_batch(len(batch))


def _succeed(pending: _Pending) -> None:
    if not pending.stored.done():
        pending.stored.set_result(None)


def _fail(pending: _Pending, error: Exception) -> None:
    if not pending.stored.done():
        pending.stored.set_exception(error)
