"""Support and usage services: each answer is one short read transaction; plain dataclasses in and out, so the
support dashboard API, the metrics API and the console share them.

- `SupportService.recipient_lookup(RecipientQuery) -> RecipientLookup`: every shipment (order) with a notification
  to a national identity number or organisation number, across service owners, newest first, bounded.
- `UsageService.monthly(UsageMonth) -> MonthlyUsage`: per service owner, the month's orders and notifications.
- `UsageService.final_sms(date)` / `final_emails(date)`: the notifications whose final result was recorded on that
  UTC day (`yesterday()` by the injected clock), as the daily billing export lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.support import repository

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
    segments (summed), and the successful SMS notifications (Accepted + Delivered), as the reference counts them."""

    org: str
    orders: int
    emails: int
    successful_emails: int
    sms: int
    successful_sms: int


@dataclass(frozen=True)
class MonthlyUsage:
    month: UsageMonth
    orgs: tuple[OrgUsage, ...]


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


class UsageService:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def yesterday(self) -> date:
        """Yesterday's UTC date, by the clock."""
        return self._clock.now().astimezone(UTC).date() - timedelta(days=1)

    async def monthly(self, month: UsageMonth) -> MonthlyUsage:
        async with self._db.read() as conn:
            rows = await repository.monthly_usage(conn, month.start, month.end)
        return MonthlyUsage(
            month,
            tuple(
                OrgUsage(r.creator, r.orders, r.emails, r.successful_emails, r.sms_segments, r.successful_sms)
                for r in rows
            ),
        )

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
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)
