"""Group commit: writes that arrive while one transaction commits are made together in the next.

Each caller is answered only once its write has committed (or has failed), so grouping changes nothing a caller can
see but the cost: one BEGIN, one COMMIT (on SQLite one write lock and one WAL append) and a few statements for a
whole group instead of for every item. Nothing waits to fill a group: a write arriving when all is quiet goes at
once; under load, writes queue while earlier groups commit and go in the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from varsel.db.engine import database_unavailable

log = logging.getLogger("varsel.db")

Item = TypeVar("Item")
Result = TypeVar("Result")


class WriterStopped(ConnectionError):
    """The process is stopping and the write was not made. A ConnectionError, so that it is treated as the database
    being unavailable (503 with Retry-After at the API; given back, uncounted, by a worker), never as a bug."""


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    done: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit(Generic[Item, Result]):
    """Feeds queued items, in groups, to `store`, which writes one group in one transaction and answers one result
    (or exception) per item, in order. When a whole group fails for a reason other than an outage, its items are
    stored one by one, so that the one item the database refuses fails alone.

    `on_group` is told of the items of each commit that were written (not answered with an exception), once their
    callers are answered: the place for what must follow a commit (metrics, the transition log) and must happen
    even if a caller was cancelled meanwhile. It runs outside `store`, so a failure in it cannot send a committed
    group to the one-by-one path; it is logged, not raised."""

    def __init__(
        self,
        store: Callable[[list[Item]], Awaitable[Sequence[Result | Exception]]],
        *,
        max_items: int,
        weight: Callable[[Item], int] = lambda item: 1,
        max_weight: int | None = None,
        parallel: int = 1,
        on_group: Callable[[list[Item]], None] = lambda items: None,
    ) -> None:
        self._store = store
        self._on_group = on_group
        self._max_items = max_items
        self._weight = weight
        self._max_weight = max_weight
        self._parallel = parallel
        self._queue: list[_Pending[Item, Result]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def write(self, item: Item) -> Result:
        # Shielded: the item is being written whether or not its caller still waits.
        return await asyncio.shield(self.submit(item))

    def submit(self, item: Item) -> asyncio.Future[Result]:
        """Queue `item` without waiting: the future is answered as `write` is, once its group is written. For a
        caller with other work meanwhile, which would otherwise need a task of its own just to hold the write.
        Cancelling the future gives up waiting for it, not the write."""
        pending: _Pending[Item, Result] = _Pending(item)
        self._queue.append(pending)
        # Only live flushers count: one cancelled before its first step never ran its `finally`.
        self._flushers = {task for task in self._flushers if not task.done()}
        if len(self._flushers) < self._parallel:
            # A flusher is a task of its own, not the caller's: a caller that goes away (a client that hangs up)
            # must not take the other callers' writes with it.
            self._flushers.add(asyncio.create_task(self._flush()))
        return pending.done

    async def _flush(self) -> None:
        group: list[_Pending[Item, Result]] = []
        try:
            while self._queue:
                group = self._take()
                await self._write(group)
        except BaseException:  # cancelled at shutdown: nobody may be left waiting for ever
            # The group under way may or may not have committed; its callers learn that it is unknown, as with any
            # write cut off by a crash (an accepted order is answered 202 only once committed, so it was not).
            for pending in [*group, *self._queue]:
                _answer(pending, WriterStopped("the process is stopping; the write was not confirmed"))
            self._queue.clear()
            raise
        finally:
            # At once, not in a done callback: one scheduled for later would let a write arriving meanwhile find
            # every flusher taken, queue its item, and wait for ever.
            task = asyncio.current_task()
            if task is not None:
                self._flushers.discard(task)

    def _take(self) -> list[_Pending[Item, Result]]:
        # The first item always goes, however heavy: a large one goes alone rather than never.
        group = [self._queue[0]]
        weight = self._weight(group[0].item)
        for pending in self._queue[1:]:
            if len(group) >= self._max_items:
                break
            if self._max_weight is not None and weight + self._weight(pending.item) > self._max_weight:
                break
            group.append(pending)
            weight += self._weight(pending.item)
        del self._queue[: len(group)]
        return group

    async def _write(self, group: list[_Pending[Item, Result]]) -> None:
        try:
            results = await self._store([p.item for p in group])
        except Exception as error:
            if len(group) == 1 or database_unavailable(error):
                # An outage fails every item of the group alike.
                for pending in group:
                    _answer(pending, error)
                return
            for pending in group:
                try:
                    (result,) = await self._store([pending.item])
                except Exception as single_error:
                    _answer(pending, single_error)
                else:
                    _answer(pending, result)
                    self._committed([pending.item], [result])
            return
        for pending, result in zip(group, results, strict=True):
            _answer(pending, result)
        self._committed([p.item for p in group], results)

    def _committed(self, items: list[Item], results: Sequence[Result | Exception]) -> None:
        written = [item for item, result in zip(items, results, strict=True) if not isinstance(result, Exception)]
        try:
            self._on_group(written)
        except Exception:
            log.exception("after a group commit of %d items", len(written))


def _answer(pending: _Pending[Item, Result], result: Result | BaseException) -> None:
    if pending.done.done():
        return
    if isinstance(result, BaseException):
        pending.done.set_exception(result)
    else:
        pending.done.set_result(result)
