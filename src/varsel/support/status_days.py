"""The status rollup: orders and notifications created per UTC day, per service owner and status, so that a period's
counts (the console's Overview) add up whole days instead of counting every row of a month on every view.

- `StatusDays.counts(creator, first, last)`: the sums of the whole days first..last, per kind ("order", "email",
  "sms"), channel and status; days missing from the rollup, or not settled and counted longer ago than `freshness`,
  are counted first (one short transaction each), so the answer is never older than `freshness`.
- `StatusDays.refresh()`: the housekeeping worker's round, every `refresh_every` (half of `freshness`): recounts the
  unsettled days counted that long ago and counts the days of the last `KEEP_DAYS` not counted yet, so a page asking
  while a worker runs finds every day fresh and only reads. Days older than that are forgotten.

A day is settled, never counted again, once it ended `settle_after` ago (its notifications have all reached their
expiry, and a day more for late reports) and none of its orders is under way any more (a scheduled order created
that day is still Registered; until it is processed the day is recounted). A status that changes after that (a
delivery report days late) is not seen by the Overview's figures of that day: they are the figures as they stood.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.exc import IntegrityError

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.notifications.statuses import OrderStatus
from varsel.support import repository_status_days as repository
from varsel.support.repository import CountedDay, day_bounds, days
from varsel.support.repository_status_days import StatusCount

log = logging.getLogger(__name__)

# The longest period the Overview shows is 30 days; a day more for the partial first day and one for the UTC day
# boundary. Days before are never asked for, and forgotten.
KEEP_DAYS = 32
# The most days one background round counts (a first round on a full database backfills a month in a few rounds).
REFRESH_DAYS = 8
DEFAULT_FRESHNESS = timedelta(seconds=60)
DEFAULT_SETTLE_AFTER = timedelta(hours=72)

_UNFINISHED = {OrderStatus.REGISTERED.value, OrderStatus.PROCESSING.value, OrderStatus.PROCESSED.value}


class StatusDays:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        freshness: timedelta = DEFAULT_FRESHNESS,
        settle_after: timedelta = DEFAULT_SETTLE_AFTER,
        refresh_days: int = REFRESH_DAYS,
    ) -> None:
        self._db = database
        self._clock = clock
        self.freshness = freshness
        # Half of freshness, as the usage rollup's: a page never finds a day stale while the round runs.
        self.refresh_every = freshness / 2
        self._settle_after = settle_after
        self._refresh_days = refresh_days

    async def counts(self, creator: str | None, first: date, last: date) -> list[StatusCount]:
        """Per kind, channel and status, the sums over the whole UTC days first..last (inclusive, none after
        yesterday): one service owner's, or everyone's for None. Missing and stale days are counted first."""
        now = self._clock.now()
        last = min(last, now.astimezone(UTC).date() - timedelta(days=1))
        if first > last:
            return []
        async with self._db.read() as conn:
            counted = await repository.counted_days(conn, first, last)
        for day in days(first, last):
            if self._wants_count(counted.get(day), now):
                await self._count_day(day, now)
        async with self._db.read() as conn:
            return await repository.counts_of_days(conn, creator, first, last)

    async def refresh(self, now: datetime | None = None) -> int:
        """One round of the background loop (see the module's doc); answers how many days were counted."""
        now = now or self._clock.now()
        yesterday = now.astimezone(UTC).date() - timedelta(days=1)
        first = yesterday - timedelta(days=KEEP_DAYS - 1)
        async with self._db.read() as conn:
            stale = await repository.unsettled_days(conn, now - self.refresh_every, self._refresh_days)
            counted = await repository.counted_days(conn, first, yesterday)
        missing = [day for day in reversed(days(first, yesterday)) if day not in counted][: self._refresh_days]
        due = sorted({day for day in (*stale, *missing) if first <= day <= yesterday})
        for day in due:
            await self._count_day(day, now)
        async with self._db.transaction() as conn:
            await repository.forget_before(conn, first)
        return len(due)

    def _wants_count(self, counted: CountedDay | None, now: datetime) -> bool:
        return counted is None or (not counted.settled and now - counted.counted_at > self.freshness)

    async def _count_day(self, day: date, now: datetime) -> None:
        """Count one day and replace its rows, in one short transaction; settled when it can no longer change."""
        try:
            async with self._db.transaction() as conn:
                rows = await repository.count_day(conn, day)
                ended = now - day_bounds(day)[1]
                # One statement counted the day, so its orders' statuses are one snapshot: none under way in it
                # means none is (an order's status never goes back to Registered).
                settled = ended >= self._settle_after and not _under_way(rows)
                await repository.replace_day(conn, day, rows, now, settled)
        except IntegrityError:
            # Another process counted the same day at the same moment: its count, as new as ours, stands.
            log.info("the status counts of %s were counted by another process at the same time", day)


def _under_way(rows: Sequence[StatusCount]) -> bool:
    return any(row.kind == repository.ORDER and row.status in _UNFINISHED for row in rows)
