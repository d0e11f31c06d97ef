"""Reading shipments and the status feed, and purging the feed's old entries: each a short transaction of its own."""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.shipments import repository
from varsel.shipments.repository import FeedEntry, Shipment

log = logging.getLogger("varsel.shipments")

# Entries deleted by one purge transaction: small, so that the feed's writers (and on SQLite every writer) wait
# for it at most a moment.
PURGE_BATCH = 1000


class ShipmentNotFound(Exception):
    """No order with that id for this service owner."""


class Shipments:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def manifest(self, creator: str, shipment_id: UUID) -> Shipment:
        async with self._db.read() as conn:
            shipment = await repository.manifest(conn, shipment_id, creator)
        if shipment is None:
            raise ShipmentNotFound()
        return shipment

    async def feed(self, creator: str, seq: int, page_size: int, *, descending: bool = False) -> list[FeedEntry]:
        async with self._db.read() as conn:
            return await repository.read_feed(conn, creator, seq, page_size, descending=descending)


class FeedRetention:
    """Deletes feed entries older than the retention period, a small batch per round (run by the expiry worker)."""

    def __init__(self, database: Database, clock: Clock, retention_days: int, batch: int = PURGE_BATCH) -> None:
        self._db = database
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._batch = batch

    async def run_once(self) -> int:
        """One batch; answers how many entries were deleted (the batch size when more may be left)."""
        async with self._db.transaction() as conn:
            deleted = await repository.purge_feed(conn, self._clock.now() - self._retention, self._batch)
        if deleted:
            log.info("status feed: %d entries older than %s deleted", deleted, self._retention)
        return deleted
