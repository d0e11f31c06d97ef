"""Support and usage services: each answer is one short read transaction; plain dataclasses in and out, so the
support dashboard API, the metrics API and the console share them.

- `SupportService.recipient_lookup(RecipientQuery) -> RecipientLookup`: every shipment (order) with a notification
  to a national identity number or organisation number, across service owners, newest first, bounded.
- `UsageService.monthly(UsageMonth) -> MonthlyUsage`: per service owner, the month's orders and notifications, summed
  from the usage rollup (one row per owner per UTC day, usage_days), with when it was counted. Days missing from the
  rollup, or not settled and counted longer ago than `freshness`, are counted first (one short transaction each).
- `UsageService.refresh()`: the background loop's round (the expiry worker runs it every `refresh_every`, half of
  `freshness`): recounts the unsettled days counted that long ago, settling those that can no longer change, and
  backfills uncounted days (from the first order's month) a bounded number at a time. Counted ahead of `freshness`
  like this, a page asking while a worker runs finds every day fresh and only reads.
- `UsageService.final_sms(date)` / `final_emails(date)`: the notifications whose final result was recorded on that
  UTC day (`yesterday()` by the injected clock), as the daily billing export lists them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID

from sqlalchemy.exc import IntegrityError

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.support import repository

log = logging.getLogger(__name__)

# The most shipments one look-up answers, newest first: a person's notifications over ten years can run into the
# thousands (an organisation's, far more), and one support question must not read or return millions of rows.
# When there are more, the answer says it is truncated; narrow the time range to see older ones.
MAX_SHIPMENTS = 1000


class RecipientIdentifier(StrEnum):
    """Which stored identifier of the recipient a look-up matches (the column of each notification)."""

    NATIONAL_IDENTITY_NUMBER = "national_identity_number"
    ORGANIZATION_NUMBER = "organization_number"


@dataclass(frozen=True)
class RecipientQuery:
    """A look-up: the identifier's kind and value, and the orders' requested send time in [start, end) (UTC)."""

    identifier: RecipientIdentifier
    value: str
    start: datetime
    end: datetime
    limit: int = MAX_SHIPMENTS


@dataclass(frozen=True)
class DeliveryAttempt:
    """One notification to the recipient: channel "email" or "sms", the address or number it went to (None when
    none was found), the stored result (New, Delivered, Failed_RecipientReserved, …) and when it was recorded."""

    channel: str
    national_identity_number: str | None
    organization_number: str | None
    address: str | None
    result: str
    result_time: datetime


@dataclass(frozen=True)
class RecipientShipment:
    shipment_id: UUID
    creator: str
    resource_id: str | None
    senders_reference: str | None
    requested_send_time: datetime
    notification_channel: str
    order_type: str
    attempts: tuple[DeliveryAttempt, ...]


@dataclass(frozen=True)
class RecipientLookup:
    shipments: tuple[RecipientShipment, ...]
    # More shipments matched than the query's limit: the newest `limit` are answered.
    truncated: bool


class SupportService:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def recipient_lookup(self, query: RecipientQuery) -> RecipientLookup:
        identifier = query.identifier.value
        async with self._db.read() as conn:
            # One more than the limit, to know whether there were more.
            rows = await repository.recipient_shipments(
                conn, identifier, query.value, query.start, query.end, query.limit + 1
            )
            truncated = len(rows) > query.limit
            rows = rows[: query.limit]
            notifications = await repository.recipient_notifications(
                conn, identifier, query.value, [row.id for row in rows]
            )
        attempts: dict[UUID, list[DeliveryAttempt]] = {}
        for n in notifications:
            attempts.setdefault(n.order_id, []).append(
                DeliveryAttempt(
                    channel=n.channel,
                    national_identity_number=n.national_identity_number,
                    organization_number=n.organization_number,
                    address=n.address or None,
                    result=n.status,
                    result_time=n.status_changed,
                )
            )
        shipments = tuple(
            RecipientShipment(
                shipment_id=row.id,
                creator=row.creator,
                resource_id=row.resource_id,
                senders_reference=row.senders_reference,
                requested_send_time=row.requested_send_time,
                notification_channel=row.notification_channel,
                order_type=row.order_type,
                attempts=tuple(attempts.get(row.id, ())),
            )
            for row in rows
        )
        return RecipientLookup(shipments, truncated)


# ---------------------------------------------------------------- usage

MIN_YEAR = 2000
MAX_YEAR = 9998


@dataclass(frozen=True)
class UsageMonth:
    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError("month must be 1-12")
        if not MIN_YEAR <= self.year <= MAX_YEAR:
            raise ValueError(f"year must be {MIN_YEAR}-{MAX_YEAR}")

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime(self.year + self.month // 12, self.month % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OrgUsage:
    """A service owner's month: orders, email notifications and the successful ones (Succeeded + Delivered), SMS as
    segments (summed), and the successful SMS notifications (Accepted + Delivered), as the reference counts them;
    but for the notifications to simulated recipients (issue #18), which are counted apart, by channel."""

    org: str
    orders: int
    emails: int
    successful_emails: int
    sms: int
    successful_sms: int
    simulated_emails: int = 0
    simulated_sms: int = 0


@dataclass(frozen=True)
class MonthlyUsage:
    month: UsageMonth
    orgs: tuple[OrgUsage, ...]
    # The oldest count among the month's days: every figure is at least as new as this. None when none of the month
    # is counted (a month still ahead: its scheduled orders are counted as they are asked for).
    counted_at: datetime | None = None


@dataclass(frozen=True)
class SmsUsageRecord:
    """One final SMS as the daily export lists it (reference 7)."""

    sms_id: UUID
    shipment_id: UUID
    senders_reference: str
    requested_send_time: datetime
    creator_name: str
    resource_id: str | None
    result: str
    gateway_reference: str
    rate: str
    mobile_number_prefix: str
    sms_count: int
    body_length: int
    custom_body_length: int


@dataclass(frozen=True)
class EmailUsageRecord:
    email_id: UUID
    shipment_id: UUID
    senders_reference: str
    requested_send_time: datetime
    creator_name: str
    resource_id: str | None
    result: str
    operation_id: str


def sms_rate(mobile_number: str | None) -> str:
    """innland for a Norwegian number (+47 or 0047), utland for any other, n/a when there is none (the reference)."""
    if not mobile_number:
        return "n/a"
    return "innland" if mobile_number.startswith(("+47", "0047")) else "utland"


# How old an unsettled day's count may be before it is counted again (settings usage.fresh_seconds).
DEFAULT_FRESHNESS = timedelta(seconds=60)
# A day can change until every notification of its orders has ended: the expiry sweeper ends each by its expiry
# (dispatch.expiry_hours after its send time, 48 h by default) and delivery reports after that are ignored. A day is
# settled once its end is this long ago (expiry + a day, for notifications sent late in their day and the sweep's
# own pace) and none of its orders is still under way; a settled day is never counted again.
DEFAULT_SETTLE_AFTER = timedelta(hours=48 + 24)
# The most days one refresh round counts of each kind (stale, never counted): a round stays short; the loop runs
# again at once while there is more.
REFRESH_DAYS = 31


class UsageService:
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
        # The background round counts a day again after half of freshness: by the time a page would count it
        # itself (after freshness), the round has (a round that ran every `freshness` left a window, as long as
        # the round, where a page and the round both counted the same days).
        self.refresh_every = freshness / 2
        self._settle_after = settle_after
        self._refresh_days = refresh_days

    def yesterday(self) -> date:
        """Yesterday's UTC date, by the clock."""
        return self._clock.now().astimezone(UTC).date() - timedelta(days=1)

    async def monthly(self, month: UsageMonth) -> MonthlyUsage:
        """The month's usage per service owner: the counted days up to today summed from the rollup (each missing
        or stale one counted first), and the days still ahead (scheduled orders only) counted as they are now."""
        now = self._clock.now()
        today = now.astimezone(UTC).date()
        first = month.start.date()
        last = min((month.end - timedelta(days=1)).date(), today)
        if first <= last:
            async with self._db.read() as conn:
                counted = await repository.counted_days(conn, first, last)
            for day in repository.days(first, last):
                if self._wants_count(counted.get(day), now):
                    await self._count_day(day, now)
        ahead = max(month.start, datetime.combine(today + timedelta(days=1), time(0), tzinfo=UTC))
        oldest: datetime | None = None
        async with self._db.read() as conn:
            rows = await repository.usage_of_days(conn, first, last) if first <= last else []
            if first <= last:
                counts = (await repository.counted_days(conn, first, last)).values()
                oldest = min((c.counted_at for c in counts), default=None)
            # The month's days still ahead hold only scheduled orders: few, counted live and never stored (they
            # can change until their day has come).
            scheduled = await repository.usage_between(conn, ahead, month.end) if ahead < month.end else []
        return MonthlyUsage(month, _merged(rows, scheduled), oldest)

    async def refresh(self, now: datetime | None = None) -> int:
        """One round of the background loop: count again the unsettled days counted longer ago than
        `refresh_every` (settling those that can be), and up to `refresh_days` days never counted, newest first,
        from the first day of the earliest order's month to today (so that every month with orders is whole).
        Answers how many days were counted (0: nothing was due)."""
        now = now or self._clock.now()
        today = now.astimezone(UTC).date()
        async with self._db.read() as conn:
            stale = await repository.unsettled_days(conn, now - self.refresh_every, self._refresh_days)
            earliest = await repository.first_order_day(conn)
            first = min(earliest, today).replace(day=1) if earliest is not None else today
            missing = await repository.uncounted_days(conn, first, today, self._refresh_days)
        # A day counted as "today" and later asked for again is never ahead of today here: the rollup holds only
        # days that have begun.
        due = sorted({day for day in (*stale, *missing) if day <= today})
        for day in due:
            await self._count_day(day, now)
        return len(due)

    def _wants_count(self, counted: repository.CountedDay | None, now: datetime) -> bool:
        return counted is None or (not counted.settled and now - counted.counted_at > self.freshness)

    async def _count_day(self, day: date, now: datetime) -> None:
        """Count one day and replace its rows, in one short transaction; settled when it can no longer change."""
        try:
            async with self._db.transaction() as conn:
                settled = False
                if now - repository.day_bounds(day)[1] >= self._settle_after:
                    # Checked before counting: an order that finishes after the check only makes the count that
                    # follows more final, whereas one checked after the count could have changed in between.
                    settled = not await repository.has_unfinished_orders(conn, day)
                rows = await repository.count_usage_day(conn, day)
                await repository.replace_usage_day(conn, day, rows, now, settled)
        except IntegrityError:
            # Another process (the API counting on demand, a worker's refresh) wrote the same day at the same
            # moment: its count, as new as ours, stands.
            log.info("usage of %s was counted by another process at the same time", day)

    async def final_sms(self, day: date) -> list[SmsUsageRecord]:
        """The SMS whose final result (status_changed, which is when varsel recorded the current status) fell on
        `day` (UTC)."""
        start, end = _day(day)
        async with self._db.read() as conn:
            rows = await repository.final_sms_between(conn, start, end)
        return [
            SmsUsageRecord(
                sms_id=r.id,
                shipment_id=r.order_id,
                senders_reference=r.senders_reference or "",
                requested_send_time=r.requested_send_time,
                creator_name=r.creator,
                resource_id=r.resource_id,
                result=r.status,
                gateway_reference=r.provider_reference or "",
                rate=sms_rate(r.mobile_number),
                mobile_number_prefix=(r.mobile_number or "")[:4],
                sms_count=r.segments if r.segments is not None else 1,
                body_length=len(r.template_body or ""),
                custom_body_length=len(r.custom_body or ""),
            )
            for r in rows
        ]

    async def final_emails(self, day: date) -> list[EmailUsageRecord]:
        start, end = _day(day)
        async with self._db.read() as conn:
            rows = await repository.final_emails_between(conn, start, end)
        return [
            EmailUsageRecord(
                email_id=r.id,
                shipment_id=r.order_id,
                senders_reference=r.senders_reference or "",
                requested_send_time=r.requested_send_time,
                creator_name=r.creator,
                resource_id=r.resource_id,
                result=r.status,
                operation_id=r.provider_reference or "",
            )
            for r in rows
        ]


def _day(day: date) -> tuple[datetime, datetime]:
    return repository.day_bounds(day)


def _merged(*parts: list[repository.OrgUsageRow]) -> tuple[OrgUsage, ...]:
    """Each owner's sums over the parts, by owner name."""
    totals: dict[str, list[int]] = {}
    for part in parts:
        for r in part:
            into = totals.setdefault(r.creator, [0] * 7)
            counts = (r.orders, r.emails, r.successful_emails, r.sms_segments, r.successful_sms, r.simulated_emails,
                      r.simulated_sms)  # fmt: skip
            for i, value in enumerate(counts):
                into[i] += value
    return tuple(OrgUsage(org, *totals[org]) for org in sorted(totals))
