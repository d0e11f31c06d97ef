"""Group commit for incoming orders: the orders that arrive while one transaction commits are stored together in the
next one (see varsel.db.group_commit).

An order is answered 202 only once its transaction has committed, so this changes nothing a caller can see but the
cost: one BEGIN, one COMMIT, one wake-up notice and two statements for a whole batch instead of for every order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from varsel.db.engine import Database
from varsel.db.group_commit import GroupCommit
from varsel.dispatch import repository as dispatch_repository
from varsel.orders import repository

# A batch holds at most this many orders, and once it holds one it takes no order that would bring it past this
# many recipients: an order of ten thousand recipients goes alone, and no transaction grows without bound.
MAX_BATCH_ORDERS = 256
MAX_BATCH_RECIPIENTS = 2048

# Batches committing at once: one, on both databases. SQLite has one writer anyway. On PostgreSQL four at once had
# been chosen so that one batch could be written while another waited for its commit, but under a steady load that
# split the orders into four times as many transactions: at 1,000 orders/s the API spent 0.94-0.97 of a core (and
# PostgreSQL 0.30-0.33) against 0.77-0.82 (0.21) with one, p99 22-45 ms against 11-21 ms, and at saturation the two
# did the same. With one, the orders that arrive during a commit wait for it and go together in the next.
PARALLEL_BATCHES = 1


@dataclass(frozen=True)
class _NewOrder:
    order: dict[str, Any]
    recipients: list[dict[str, Any]]
    due_soon: bool


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
        self._group: GroupCommit[_NewOrder, None] = GroupCommit(
            self._insert,
            max_items=max_orders,
            weight=lambda new: len(new.recipients),
            max_weight=max_recipients,
            parallel=parallel or PARALLEL_BATCHES,
            on_group=lambda batch: on_batch(len(batch)),
        )

    async def write(self, order: dict[str, Any], recipients: list[dict[str, Any]], *, due_soon: bool) -> None:
        """Store one order and its recipients; returns once they are committed, raises if they could not be."""
        await self._group.write(_NewOrder(order, recipients, due_soon))

    async def _insert(self, batch: list[_NewOrder]) -> list[None]:
        async with self._db.transaction() as conn:
            await repository.insert_orders(
                conn, [new.order for new in batch], [row for new in batch for row in new.recipients]
            )
            if any(new.due_soon for new in batch):
                # Workers in other processes (PostgreSQL) learn of it when this commits.
                await dispatch_repository.announce_work(conn, orders=True)
        return [None] * len(batch)
