"""The console's read side: order search, an order's chain with a timeline per notification, cancelling, and the
overview of a period. Each method owns its one short transaction; plain dataclasses in and out.

Tenancy: a viewer is a service owner (sees its own orders; another owner's order is simply not found) or an admin
(sees all). Every query is scoped by the viewer's org before it reaches the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from varsel.clock import Clock
from varsel.console import repository
from varsel.console.repository import Cursor, OrderSearch, QueueDepth, TimeField
from varsel.db.engine import Database
from varsel.dispatch.window import DaytimeWindow
from varsel.notifications.statuses import (
    EMAIL_PENDING,
    EMAIL_STATUS_DESCRIPTIONS,
    EMAIL_SUCCESS,
    SMS_PENDING,
    SMS_STATUS_DESCRIPTIONS,
    SMS_SUCCESS,
    EmailStatus,
    OrderStatus,
    SmsStatus,
    notification_status_description,
    order_status_description,
)
from varsel.orders.drafts import RecipientSpec
from varsel.orders.service import CANCEL_MARGIN_MINUTES, OrderNotFound, OrderService
from varsel.orders.vocabulary import NotificationChannel, OrderType
from varsel.problems import Problem
from varsel.providers.guard import GuardHealth
from varsel.support.status_days import StatusDays

__all__ = [
    "ChainView",
    "ConsoleReads",
    "Cursor",
    "OrderSearch",
    "Overview",
    "Period",
    "TimeField",
    "Viewer",
]

# A page of search results: the default, and the most a caller may ask for.
PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
# Notifications (per channel) and recipients shown of one order: an order may have ten thousand.
NOTIFICATIONS_SHOWN = 100
RECIPIENTS_SHOWN = 100
# Unfinished work is counted up to this many per kind; beyond it the overview says "more than".
QUEUE_COUNT_CAP = 10_000
# The latency sample: the newest SAMPLE_PER_SLICE orders of each of SAMPLE_SLICES equal slices of the period, and
# at most SAMPLE_NOTIFICATIONS of their notifications per channel (an order may have ten thousand): bounded, spread
# over the whole period, five statements whatever its length. 200 orders give some 500 notifications per channel:
# enough for a p95 (the 25 slowest of 500), and reading and converting them is most of the overview's fixed cost
# (bench/console.py: about 55 ms of a month's view at 5,000 orders when the sample was 500 orders).
SAMPLE_SLICES = 20
SAMPLE_PER_SLICE = 10
SAMPLE_NOTIFICATIONS = 2_000
# Provider calls counted for provider health: the last quarter of an hour, whatever the period (health is now).
HEALTH_WINDOW = timedelta(minutes=15)

_CURSOR_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


class Viewer(Protocol):
    """Who looks: the console's signed-in principal has this shape (varsel.console.principal.Principal)."""

    @property
    def org(self) -> str | None: ...

    @property
    def admin(self) -> bool: ...


def _creator(viewer: Viewer) -> str | None:
    """The creator the viewer's queries are limited to; None for an admin (all)."""
    if viewer.admin:
        return None
    if not viewer.org:
        raise ValueError("a console viewer is an org or an admin")
    return viewer.org


class InvalidCursor(Problem):
    def __init__(self) -> None:
        super().__init__(400, "Invalid page cursor", "The page cursor is not one this console handed out.")


def encode_cursor(cursor: Cursor) -> str:
    """A cursor as text for a link: the time in UTC to the microsecond, a tilde, the id."""
    return f"{cursor.time.astimezone(UTC).strftime(_CURSOR_TIME)}~{cursor.id.hex}"


def decode_cursor(text: str) -> Cursor:
    time, _, order_id = text.partition("~")
    try:
        return Cursor(datetime.strptime(time, _CURSOR_TIME).replace(tzinfo=UTC), UUID(hex=order_id))
    except ValueError:
        raise InvalidCursor() from None


# ---------------------------------------------------------------- search


@dataclass(frozen=True)
class OrderSummary:
    id: UUID
    creator: str
    senders_reference: str | None
    order_type: OrderType
    channel: NotificationChannel
    status: OrderStatus
    requested_send_time: datetime
    created: datetime
    status_changed: datetime
    chain_id: UUID | None


@dataclass(frozen=True)
class OrderPage:
    orders: tuple[OrderSummary, ...]
    # Where the next page starts; None on the last page.
    next: Cursor | None


def _summary(row: Any) -> OrderSummary:
    return OrderSummary(
        id=row.id,
        creator=row.creator,
        senders_reference=row.senders_reference,
        order_type=OrderType(row.order_type),
        channel=NotificationChannel(row.notification_channel),
        status=OrderStatus(row.status),
        requested_send_time=row.requested_send_time,
        created=row.created,
        status_changed=row.status_changed,
        chain_id=row.chain_id,
    )


# ---------------------------------------------------------------- an order's chain and timelines


class EventKind(StrEnum):
    CREATED = "created"
    ATTEMPT = "attempt"
    REPORT = "report"
    STATUS = "status"


@dataclass(frozen=True)
class TimelineEvent:
    """One thing that happened to a notification. An attempt: a provider call (`outcome` accepted, retry, failed,
    error or refused; `status` the notification's status after it). A report: a delivery report (`outcome` what
    became of it: applied, duplicate, late, superseded). The last event is the notification's status now."""

    time: datetime
    kind: EventKind
    status: str | None = None
    outcome: str | None = None
    provider: str | None = None
    provider_reference: str | None = None
    detail: str | None = None
    # An attempt's end; a report's time as the provider tells it.
    until: datetime | None = None


@dataclass(frozen=True)
class NotificationView:
    id: UUID
    channel: str  # "email" or "sms"
    status: str
    status_description: str
    # Neither awaiting a provider nor a report: nothing more will happen to it.
    final: bool
    succeeded: bool
    status_changed: datetime
    created: datetime
    # Who: the address it went (or would go) to, and the recipient it was made for.
    address: str | None
    recipient_name: str | None
    national_identity_number: str | None
    organization_number: str | None
    external_identity: str | None
    is_reserved: bool | None
    # What: the content as rendered for this recipient (the order's template where nothing was personalised).
    subject: str | None
    body: str | None
    segments: int | None
    provider: str | None
    provider_reference: str | None
    status_detail: str | None
    events: tuple[TimelineEvent, ...]


@dataclass(frozen=True)
class OrderView:
    id: UUID
    creator: str
    senders_reference: str | None
    order_type: OrderType
    channel: NotificationChannel
    status: OrderStatus
    status_description: str
    status_changed: datetime
    requested_send_time: datetime
    created: datetime
    chain_position: int | None
    resource_id: str | None
    condition_endpoint: str | None
    ignore_reservation: bool | None
    sms_sending_time_policy: str
    email_from_address: str | None
    email_subject: str | None
    email_body: str | None
    email_content_type: str | None
    sms_sender: str | None
    sms_body: str | None
    attachments: tuple[dict[str, str], ...]
    recipients: tuple[RecipientSpec, ...]
    recipient_count: int
    # channel → status → count, over all of the order's notifications.
    counts: Mapping[str, Mapping[str, int]]
    # The first NOTIFICATIONS_SHOWN of each channel, with their timelines.
    notifications: tuple[NotificationView, ...]
    cancellable: bool

    @property
    def notification_count(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.counts.values())


@dataclass(frozen=True)
class ChainView:
    """The order asked for and the orders of its chain (a v2 chain: the main order and its reminders; a v1, instant
    or composed order stands alone)."""

    order_id: UUID
    chain_id: UUID | None
    idempotency_id: str | None
    orders: tuple[OrderView, ...]

    @property
    def order(self) -> OrderView:
        return next(o for o in self.orders if o.id == self.order_id)


def _final(channel: str, status: str) -> bool:
    pending = EMAIL_PENDING if channel == "email" else SMS_PENDING
    return status not in {s.value for s in pending}


def _description(channel: str, status: str, waiting: _Waiting | None = None, row: Any = None) -> str:
    """The status's description; for a notification `row` shown now (`waiting`), with what a New one waits for
    and until when (as v1's notification lists say it)."""
    try:
        if channel == "email":
            value: EmailStatus | SmsStatus = EmailStatus(status)
            descriptions: Mapping[Any, str] = EMAIL_STATUS_DESCRIPTIONS
        else:
            value, descriptions = SmsStatus(status), SMS_STATUS_DESCRIPTIONS
    except ValueError:
        return status
    if waiting is None or row is None:
        return descriptions[value]
    return notification_status_description(
        descriptions,
        value,
        now=waiting.now,
        send_after=row.send_after,
        attempts=row.attempts,
        sms_window=waiting.window,
    )


@dataclass(frozen=True)
class _Waiting:
    """What a waiting notification's description is told: the time it is shown, and its order's SMS window."""

    now: datetime
    window: DaytimeWindow | None


_SUCCESS = {"email": {s.value for s in EMAIL_SUCCESS}, "sms": {s.value for s in SMS_SUCCESS}}
_EVENT_ORDER = {EventKind.CREATED: 0, EventKind.ATTEMPT: 1, EventKind.REPORT: 2, EventKind.STATUS: 3}


def _timeline(
    channel: str, row: Any, attempts: Sequence[Any], reports: Sequence[Any], waiting: _Waiting | None = None
) -> tuple[TimelineEvent, ...]:
    events = [TimelineEvent(row.created, EventKind.CREATED)]
    events += [
        TimelineEvent(
            a.started,
            EventKind.ATTEMPT,
            status=a.status,
            outcome=a.outcome,
            provider=a.provider,
            provider_reference=a.provider_reference,
            detail=a.detail,
            until=a.finished,
        )
        for a in attempts
    ]
    events += [
        TimelineEvent(
            r.received,
            EventKind.REPORT,
            status=r.status,
            outcome=r.state,
            provider=r.provider,
            provider_reference=r.provider_reference,
            detail=r.detail,
            until=r.occurred,
        )
        for r in reports
    ]
    # Sorted by time; at one instant, in the order things happen (made, sent, reported, ended).
    events.sort(key=lambda e: (e.time, _EVENT_ORDER[e.kind]))
    events.append(
        TimelineEvent(
            row.status_changed,
            EventKind.STATUS,
            status=row.status,
            detail=_description(channel, row.status, waiting, row),
        )
    )
    return tuple(events)


def _notification(
    channel: str, row: Any, order: Any, attempts: Sequence[Any], reports: Sequence[Any], waiting: _Waiting | None = None
) -> NotificationView:
    email = channel == "email"
    return NotificationView(
        id=row.id,
        channel=channel,
        status=row.status,
        status_description=_description(channel, row.status, waiting, row),
        final=_final(channel, row.status),
        succeeded=row.status in _SUCCESS[channel],
        status_changed=row.status_changed,
        created=row.created,
        address=row.email_address if email else row.mobile_number,
        recipient_name=row.recipient_name,
        national_identity_number=row.national_identity_number,
        organization_number=row.organization_number,
        external_identity=row.external_identity,
        is_reserved=row.is_reserved,
        subject=(row.subject if row.subject is not None else order.email_subject) if email else None,
        body=row.body if row.body is not None else (order.email_body if email else order.sms_body),
        segments=None if email else row.segments,
        provider=row.provider,
        provider_reference=row.provider_reference,
        status_detail=row.status_detail,
        events=_timeline(channel, row, attempts, reports, waiting),
    )


def cancellable(status: OrderStatus, requested_send_time: datetime, now: datetime) -> bool:
    """The order service's cancel rule (varsel.orders.service): Registered, and its send time more than the margin
    away. Shown beside the order; the cancel itself is decided by that service's guarded update."""
    return status is OrderStatus.REGISTERED and requested_send_time > now + timedelta(minutes=CANCEL_MARGIN_MINUTES)


# ---------------------------------------------------------------- overview


class Period(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"

    @property
    def length(self) -> timedelta:
        return _PERIOD_LENGTHS[self]


_PERIOD_LENGTHS = {
    Period.HOUR: timedelta(hours=1),
    Period.DAY: timedelta(hours=24),
    Period.WEEK: timedelta(days=7),
    Period.MONTH: timedelta(days=30),
}


@dataclass(frozen=True)
class Latency:
    """Seconds from an order's requested send time (or its creation, when it was asked for a time already past) to
    an event of its notifications, over a bounded sample: p50 and p95 by nearest rank; None when no sampled
    notification has reached the event."""

    samples: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class ChannelFigures:
    channel: str
    by_status: Mapping[str, int]
    total: int
    # Handed to the provider and not failed (Succeeded, Accepted, Delivered).
    succeeded: int
    delivered: int
    failed: int
    # Not yet handed to a provider, or waiting for its delivery report.
    pending: int
    # Of those that ended (delivered or failed), the share delivered; None when none ended.
    delivery_rate: float | None
    to_provider: Latency
    to_delivery: Latency


@dataclass(frozen=True)
class ProviderHealth:
    channel: str
    provider: str
    # This process's guard; None when this process has no guard for the channel.
    guard: GuardHealth | None
    # Every process's calls to the provider in the last HEALTH_WINDOW, by outcome (admin only: empty for an org).
    calls: Mapping[str, int]
    last_failure: datetime | None
    last_failure_outcome: str | None
    last_failure_detail: str | None


@dataclass(frozen=True)
class Overview:
    period: Period
    since: datetime
    until: datetime
    # Orders created in the period: channel → status → count.
    orders: Mapping[str, Mapping[str, int]]
    order_total: int
    channels: tuple[ChannelFigures, ...]
    order_queue: QueueDepth
    notification_queues: Mapping[str, QueueDepth]
    providers: tuple[ProviderHealth, ...]


class HealthSource(Protocol):
    """A provider's guard (varsel.providers.guard.ProviderGuard): its provider's name and health."""

    @property
    def name(self) -> str: ...

    def health(self) -> GuardHealth: ...


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of `values` (sorted or not); None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _latency(values: Sequence[float]) -> Latency:
    return Latency(len(values), percentile(values, 0.50), percentile(values, 0.95))


class _Counts(dict[tuple[str, str], dict[str, int]]):
    """(kind, channel) → status → count, added up from the rollup's days and the live edges."""

    def add(self, kind: str, channel: str, status: str, count: int) -> None:
        statuses = self.setdefault((kind, channel), {})
        statuses[status] = statuses.get(status, 0) + count

    def of(self, kind: str, channel: str) -> dict[str, int]:
        """The statuses with a count, in the order of their enum (as the page lists them)."""
        counted = self.get((kind, channel), {})
        return {status: counted[status] for status in _STATUS_ORDER[kind] if counted.get(status)}


_STATUS_ORDER = {
    "order": [status.value for status in OrderStatus],
    "email": [status.value for status in EmailStatus],
    "sms": [status.value for status in SmsStatus],
}


def _day_start(moment: datetime) -> datetime:
    """The start of the moment's UTC day."""
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)


@dataclass
class _Sample:
    to_provider: list[float] = field(default_factory=list)
    to_delivery: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- the service


class ConsoleReads:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        orders: OrderService,
        providers: Mapping[str, HealthSource] | None = None,
        status_days: StatusDays | None = None,
        *,
        sms_daytime: DaytimeWindow | None = None,
        condition_failure_policy: str = "send",
    ) -> None:
        self._db = database
        self._clock = clock
        self._orders = orders
        # The status rollup the overview adds whole days up from; without it, every count is live.
        self._status_days = status_days
        # What a waiting order or notification's description says (the workers' settings, as v1's reads use them).
        self._sms_daytime = sms_daytime or DaytimeWindow()
        self._condition_failure_policy = condition_failure_policy
        # channel → this process's guard of its provider.
        self._providers = dict(providers or {})

    async def search(
        self, viewer: Viewer, search: OrderSearch, *, after: Cursor | None = None, page_size: int = PAGE_SIZE
    ) -> OrderPage:
        """A page of the viewer's orders matching `search`, newest first; `after` the previous page's `next`."""
        size = min(max(page_size, 1), MAX_PAGE_SIZE)
        async with self._db.read() as conn:
            rows = await repository.search_orders(conn, _creator(viewer), search, after, size + 1)
        page = [_summary(row) for row in rows[:size]]
        following = None
        if len(rows) > size:
            last = page[-1]
            time = last.created if search.time_field is TimeField.CREATED else last.requested_send_time
            following = Cursor(time, last.id)
        return OrderPage(tuple(page), following)

    async def chain(self, viewer: Viewer, order_id: UUID) -> ChainView:
        """The order and the orders of its chain, each with its notifications' timelines. OrderNotFound when the
        viewer may not see the order (another service owner's is as good as absent)."""
        now = self._clock.now()
        async with self._db.read() as conn:
            row = await repository.order(conn, order_id, _creator(viewer))
            if row is None:
                raise OrderNotFound()
            chain_row = None
            members = [row]
            if row.chain_id is not None:
                chain_row = await repository.chain(conn, row.chain_id)
                members = await repository.chain_orders(conn, row.chain_id, row.creator) or [row]
            views = [await self._order_view(conn, member, now) for member in members]
        return ChainView(
            order_id=order_id,
            chain_id=row.chain_id,
            idempotency_id=chain_row.idempotency_id if chain_row is not None else None,
            orders=tuple(views),
        )

    async def _order_view(self, conn: Any, row: Any, now: datetime) -> OrderView:
        recipients, recipient_count = await repository.recipients(conn, row.id, RECIPIENTS_SHOWN)
        counts = await repository.notification_counts_of(conn, row.id)
        shown: list[tuple[str, Any]] = []
        for channel in ("email", "sms"):
            if counts.get(channel):
                shown += [
                    (channel, n) for n in await repository.notifications_of(conn, channel, row.id, NOTIFICATIONS_SHOWN)
                ]
        ids = [n.id for _, n in shown]
        attempts: dict[UUID, list[Any]] = {}
        for attempt in await repository.attempts_of(conn, ids):
            attempts.setdefault(attempt.notification_id, []).append(attempt)
        reports: dict[UUID, list[Any]] = {}
        for report in await repository.reports_of(conn, ids):
            reports.setdefault(report.notification_id, []).append(report)
        status = OrderStatus(row.status)
        # The window the workers hold this order's SMS for: none for an order sent Anytime.
        waiting = _Waiting(now, None if row.sms_sending_time_policy == "Anytime" else self._sms_daytime)
        return OrderView(
            id=row.id,
            creator=row.creator,
            senders_reference=row.senders_reference,
            order_type=OrderType(row.order_type),
            channel=NotificationChannel(row.notification_channel),
            status=status,
            status_description=order_status_description(
                status,
                now=now,
                process_after=row.process_after,
                processing_attempts=row.processing_attempts,
                condition_endpoint=row.condition_endpoint,
                condition_failure_policy=self._condition_failure_policy,
            ),
            status_changed=row.status_changed,
            requested_send_time=row.requested_send_time,
            created=row.created,
            chain_position=row.chain_position,
            resource_id=row.resource_id,
            condition_endpoint=row.condition_endpoint,
            ignore_reservation=row.ignore_reservation,
            sms_sending_time_policy=row.sms_sending_time_policy,
            email_from_address=row.email_from_address,
            email_subject=row.email_subject,
            email_body=row.email_body,
            email_content_type=row.email_content_type,
            sms_sender=row.sms_sender,
            sms_body=row.sms_body,
            attachments=tuple(row.attachments or ()),
            recipients=tuple(
                RecipientSpec(
                    r.email_address,
                    r.mobile_number,
                    r.national_identity_number,
                    r.organization_number,
                    r.external_identity,
                )
                for r in recipients
            ),
            recipient_count=recipient_count,
            counts=counts,
            notifications=tuple(
                _notification(channel, n, row, attempts.get(n.id, ()), reports.get(n.id, ()), waiting)
                for channel, n in shown
            ),
            cancellable=cancellable(status, row.requested_send_time, now),
        )

    async def cancel(self, viewer: Viewer, order_id: UUID) -> OrderStatus:
        """Cancel the order by the order service's rules (OrderNotCancellable, 409, once it may no longer be);
        OrderNotFound when the viewer may not see it. An admin cancels on its creator's behalf."""
        async with self._db.read() as conn:
            row = await repository.order(conn, order_id, _creator(viewer))
        if row is None:
            raise OrderNotFound()
        view = await self._orders.cancel(row.creator, order_id)
        return view.order.status

    async def overview(self, viewer: Viewer, period: Period) -> Overview:
        until = self._clock.now()
        since = until - period.length
        creator = _creator(viewer)
        counts = _Counts()
        live = [(since, until)]
        # The period's whole UTC days are added up from the status rollup; its partial first and last day are
        # counted live. At a month of a million notifications, counting them all took longer than a page may.
        first_whole = _day_start(since) + (timedelta(days=1) if _day_start(since) < since else timedelta(0))
        last_whole_end = _day_start(until)
        if self._status_days is not None and first_whole < last_whole_end:
            for row in await self._status_days.counts(
                creator, first_whole.date(), (last_whole_end - timedelta(days=1)).date()
            ):
                counts.add(row.kind, row.channel, row.status, row.count)
            live = [(since, first_whole), (last_whole_end, until)]
        async with self._db.read() as conn:
            for start, end in live:
                if start >= end:
                    continue
                for channel_name, status, count in await repository.order_counts(conn, creator, start, end):
                    counts.add("order", channel_name, status, count)
                for channel in ("email", "sms"):
                    for status, count in (
                        await repository.notification_counts(conn, channel, creator, start, end)
                    ).items():
                        counts.add(channel, "", status, count)
            by_channel = {
                channel_name: counts.of("order", channel_name)
                for kind, channel_name in sorted(counts)
                if kind == "order" and counts.of("order", channel_name)
            }
            sampled = await self._sample_orders(conn, creator, since, until)
            figures = [
                await self._channel(conn, channel, counts.of(channel, ""), sampled) for channel in ("email", "sms")
            ]
            order_queue = await repository.order_queue(conn, creator, until, QUEUE_COUNT_CAP)
            queues = {
                channel: await repository.notification_queue(conn, channel, creator, until, QUEUE_COUNT_CAP)
                for channel in ("email", "sms")
            }
            providers = await self._provider_health(conn, creator is None, until)
        return Overview(
            period=period,
            since=since,
            until=until,
            orders=by_channel,
            order_total=sum(sum(statuses.values()) for statuses in by_channel.values()),
            channels=tuple(figures),
            order_queue=order_queue,
            notification_queues=queues,
            providers=providers,
        )

    async def _channel(
        self, conn: Any, channel: str, by_status: Mapping[str, int], sampled: Mapping[UUID, datetime]
    ) -> ChannelFigures:
        pending_statuses = {s.value for s in (EMAIL_PENDING if channel == "email" else SMS_PENDING)}
        delivered = by_status.get("Delivered", 0)
        failed = sum(count for status, count in by_status.items() if status.startswith("Failed"))
        ended = delivered + failed
        sample = await self._sample(conn, channel, sampled)
        return ChannelFigures(
            channel=channel,
            by_status=dict(by_status),
            total=sum(by_status.values()),
            succeeded=sum(count for status, count in by_status.items() if status in _SUCCESS[channel]),
            delivered=delivered,
            failed=failed,
            pending=sum(count for status, count in by_status.items() if status in pending_statuses),
            delivery_rate=delivered / ended if ended else None,
            to_provider=_latency(sample.to_provider),
            to_delivery=_latency(sample.to_delivery),
        )

    async def _sample_orders(
        self, conn: Any, creator: str | None, since: datetime, until: datetime
    ) -> dict[UUID, datetime]:
        """The latency sample's orders: the newest of each slice of the period, order id → when its notifications
        were due (its requested send time, or its creation when it asked for a time already past).

        Bounded and spread over the whole period, the same on both databases. A uniform random sample would need
        every row of the period read (PostgreSQL's TABLESAMPLE ignores the period, and SQLite has none);
        percentiles in SQL (PostgreSQL's percentile_cont; SQLite has none) would need every notification of the
        period joined to its order and its provider calls: a month of a million notifications, on every view."""
        step = (until - since) / SAMPLE_SLICES
        slices = [
            (since + step * i, until if i == SAMPLE_SLICES - 1 else since + step * (i + 1))
            for i in range(SAMPLE_SLICES)
        ]
        rows = await repository.sample_orders(conn, creator, slices, SAMPLE_PER_SLICE)
        return {row.id: max(row.requested_send_time, row.created) for row in rows}

    async def _sample(self, conn: Any, channel: str, sampled: Mapping[UUID, datetime]) -> _Sample:
        """Latencies of the sampled orders' notifications on one channel (at most SAMPLE_NOTIFICATIONS of them)."""
        sample = _Sample()
        rows = await repository.notifications_of_orders(conn, channel, list(sampled), SAMPLE_NOTIFICATIONS)
        if not rows:
            return sample
        handed = await repository.handed_off(conn, [row.id for row in rows])
        for row in rows:
            due = sampled[row.order_id]
            if row.id in handed:
                sample.to_provider.append((handed[row.id] - due).total_seconds())
            if row.status == "Delivered":
                sample.to_delivery.append((row.status_changed - due).total_seconds())
        return sample

    async def _provider_health(self, conn: Any, admin: bool, now: datetime) -> tuple[ProviderHealth, ...]:
        """Per channel: this process's guard (breaker, pause) and, for an admin, every process's calls of the last
        quarter hour from the database. A guard lives in the memory of each process that sends (every `varsel
        worker`, and the API process for instant orders), so what a process shows is its own guard's view; the
        calls recorded in the database are every process's, and show a provider failing wherever it is called."""
        calls: dict[tuple[str, str], dict[str, int]] = {}
        if admin:
            for channel, provider, outcome, count in await repository.provider_calls(conn, now - HEALTH_WINDOW, now):
                calls.setdefault((channel, provider), {})[outcome] = count
        health: list[ProviderHealth] = []
        seen: set[tuple[str, str]] = set()
        for channel in ("email", "sms"):
            guard = self._providers.get(channel)
            keys = [key for key in calls if key[0] == channel]
            if guard is not None and (channel, guard.name) not in keys:
                keys.insert(0, (channel, guard.name))
            for key in keys:
                if key in seen:
                    continue
                seen.add(key)
                last = None
                if admin and any(outcome != "accepted" for outcome in calls.get(key, {})):
                    last = await repository.last_failed_call(conn, channel, key[1], now - HEALTH_WINDOW)
                health.append(
                    ProviderHealth(
                        channel=channel,
                        provider=key[1],
                        guard=guard.health() if guard is not None and guard.name == key[1] else None,
                        calls=calls.get(key, {}),
                        last_failure=last.started if last is not None else None,
                        last_failure_outcome=last.outcome if last is not None else None,
                        last_failure_detail=last.detail if last is not None else None,
                    )
                )
        return tuple(health)
