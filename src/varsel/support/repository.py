"""SQL of support and usage: a recipient's shipments, usage per service owner (counted per day into the usage_days
rollup of migration 0010, and summed per month from it), a day's final notifications.

Every statement is bounded by an index: of migration 0007, the recipient's identifier (partial indexes on
national_identity_number / organization_number with order_id), orders.requested_send_time, and each notification
table's status_changed; of migration 0010, the rollup's keys and the orders still under way."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import (
    String,
    Table,
    Uuid,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    true,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import email_notifications, orders, sms_notifications, usage_days, usage_days_counted
from varsel.db.types import UtcDateTime
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.orders.simulated import SIMULATED_EMAIL_ADDRESSES, SIMULATED_MOBILE_NUMBERS

EMAIL = "email"
SMS = "sms"

# Successes as the reference's usage counts them (section 7): accepted by the provider or delivered.
EMAIL_SUCCESS_STATUSES = (EmailStatus.SUCCEEDED.value, EmailStatus.DELIVERED.value)
SMS_SUCCESS_STATUSES = (SmsStatus.ACCEPTED.value, SmsStatus.DELIVERED.value)
# Not final yet: left out of the daily export (the reference: e-mail without New/Sending/Succeeded, SMS without
# New/Sending/Accepted), because a later delivery report may still change them.
EMAIL_NOT_FINAL = (EmailStatus.NEW.value, EmailStatus.SENDING.value, EmailStatus.SUCCEEDED.value)
SMS_NOT_FINAL = (SmsStatus.NEW.value, SmsStatus.SENDING.value, SmsStatus.ACCEPTED.value)


def _to_simulated_recipient(table: Table) -> Any:
    """Whether a notification goes to a simulated recipient (varsel.orders.simulated): stored exactly as listed
    there, so one IN; NULL (not true) for a notification without an address, which CASE counts as false."""
    if table is email_notifications:
        return table.c.email_address.in_(sorted(SIMULATED_EMAIL_ADDRESSES))
    return table.c.mobile_number.in_(sorted(SIMULATED_MOBILE_NUMBERS))


def _to_real_recipient(table: Table) -> Any:
    """The daily exports' rows: notifications to anyone but a simulated recipient (an unknown address included)."""
    column = table.c.email_address if table is email_notifications else table.c.mobile_number
    return column.is_(None) | ~_to_simulated_recipient(table)


@dataclass(frozen=True)
class ShipmentRow:
    id: UUID
    creator: str
    resource_id: str | None
    senders_reference: str | None
    requested_send_time: datetime
    notification_channel: str
    order_type: str


@dataclass(frozen=True)
class NotificationRow:
    """One of the recipient's notifications: its channel (email, sms), address, stored status and when it was set."""

    order_id: UUID
    channel: str
    national_identity_number: str | None
    organization_number: str | None
    address: str | None
    status: str
    status_changed: datetime


def _identifier_column(table: Table, identifier: str) -> Any:
    # Only these two columns: the name comes from the service's own enum, never from a request.
    if identifier not in ("national_identity_number", "organization_number"):
        raise ValueError(f"not a recipient identifier column: {identifier!r}")
    return table.c[identifier]


_SHIPMENT_COLUMNS = (
    orders.c.id,
    orders.c.creator,
    orders.c.resource_id,
    orders.c.senders_reference,
    orders.c.requested_send_time,
    orders.c.notification_channel,
    orders.c.order_type,
)


async def recipient_shipments(
    conn: AsyncConnection, identifier: str, value: str, start: datetime, end: datetime, limit: int
) -> list[ShipmentRow]:
    """The orders with a notification whose `identifier` column equals `value`, requested in [start, end), newest
    first, at most `limit`. The orders' ids come from the identifier's index alone (distinct), and each is then
    read by its primary key: the time range is checked on those orders, not on a scan of all orders in the range."""
    ids = union(
        *(
            select(table.c.order_id.label("order_id")).where(_identifier_column(table, identifier) == value)
            for table in (email_notifications, sms_notifications)
        )
    ).subquery("recipient_orders")
    in_range = (orders.c.requested_send_time >= start, orders.c.requested_send_time < end)
    if conn.dialect.name == "postgresql":
        # Each order by its key, in a LATERAL subquery that LIMIT 1 keeps PostgreSQL from flattening into a join:
        # for a recipient with a few thousand notifications over a wide range its planner otherwise chose a hash
        # join over a sequential scan of every order (390 ms of 540 at 500,000 orders) instead of a few thousand
        # key look-ups (SQLite's plan already does those).
        one = select(*_SHIPMENT_COLUMNS).where(orders.c.id == ids.c.order_id, *in_range).limit(1).lateral("shipment")
        statement = (
            select(*one.c)
            .select_from(ids.join(one, true()))
            .order_by(one.c.requested_send_time.desc(), one.c.id.desc())
            .limit(limit)
        )
    else:
        statement = (
            select(*_SHIPMENT_COLUMNS)
            .select_from(ids.join(orders, orders.c.id == ids.c.order_id))
            .where(*in_range)
            .order_by(orders.c.requested_send_time.desc(), orders.c.id.desc())
            .limit(limit)
        )
    return [ShipmentRow(**row._mapping) for row in await conn.execute(statement)]


def _among(conn: AsyncConnection, column: Any, ids: Sequence[UUID]) -> Any:
    """`column` is one of `ids`, bound as one value however many (up to the look-up's 1000): an array on
    PostgreSQL, a JSON array of the stored hex form on SQLite. An IN list binds each id apart, which cost more than
    the look-up itself at a thousand ids (as varsel.shipments.repository found for its own)."""
    if conn.dialect.name == "postgresql":
        return column == func.any(bindparam(None, list(ids), type_=ARRAY(Uuid)))
    return column.in_(select(func.json_each(json.dumps([i.hex for i in ids])).table_valued("value").c.value))


async def recipient_notifications(
    conn: AsyncConnection, identifier: str, value: str, order_ids: Sequence[UUID]
) -> list[NotificationRow]:
    """The notifications to `value` in these orders (email first, each channel in the order they were made): seeks
    on the (identifier, order_id) index, one per order."""
    if not order_ids:
        return []
    both = union_all(
        *(
            select(
                table.c.order_id,
                literal(channel).label("channel"),
                table.c.national_identity_number,
                table.c.organization_number,
                address.label("address"),
                table.c.status,
                table.c.status_changed,
                literal(rank).label("rank"),
                table.c.created,
                table.c.id,
            ).where(_identifier_column(table, identifier) == value, _among(conn, table.c.order_id, order_ids))
            for rank, (channel, table, address) in enumerate(
                (
                    (EMAIL, email_notifications, email_notifications.c.email_address),
                    (SMS, sms_notifications, sms_notifications.c.mobile_number),
                )
            )
        )
    ).subquery()
    result = await conn.execute(
        select(
            both.c.order_id,
            both.c.channel,
            both.c.national_identity_number,
            both.c.organization_number,
            both.c.address,
            both.c.status,
            both.c.status_changed,
        ).order_by(both.c.order_id, both.c.rank, both.c.created, both.c.id)
    )
    return [NotificationRow(**row._mapping) for row in result]


# ---------------------------------------------------------------- usage


@dataclass(frozen=True)
class OrgUsageRow:
    """A service owner's usage. Notifications to simulated recipients are not in emails, sms_segments or the
    successful counts: they cost nothing and reach nobody; simulated_emails and simulated_sms count them apart."""

    creator: str
    orders: int
    emails: int
    successful_emails: int
    sms_segments: int
    successful_sms: int
    simulated_emails: int = 0
    simulated_sms: int = 0


def _owner_group(conn: AsyncConnection) -> Any:
    """The service owner the counts are grouped by. On SQLite written `+orders.creator`, which is the same value but
    matches no index: grouped by the bare column, its planner read the whole (creator, requested_send_time) index
    in creator order rather than the range of ix_orders_requested_send_time and a sort of the few groups (a day's
    count cost as much as a month's: seconds at a million notifications)."""
    if conn.dialect.name == "sqlite":
        return literal_column("+orders.creator", String()).label("creator")
    return orders.c.creator


async def usage_between(conn: AsyncConnection, start: datetime, end: datetime) -> list[OrgUsageRow]:
    """Per service owner, for the orders requested in [start, end): orders, email notifications and the successful
    ones, SMS segments (summed) and successful SMS notifications, and apart from those the email and SMS
    notifications to simulated recipients; by owner name. Three grouped statements, each walking the orders of the
    range by ix_orders_requested_send_time and their notifications by order_id.

    The rollup counts one UTC day with it (count_usage_day); the monthly summary counts the month's days still
    ahead with it (their orders are scheduled ones, few)."""
    in_range = (orders.c.requested_send_time >= start) & (orders.c.requested_send_time < end)
    owner = _owner_group(conn)
    found: dict[str, dict[str, int]] = {}

    def row_of(creator: str) -> dict[str, int]:
        return found.setdefault(
            creator,
            {"orders": 0, "emails": 0, "successful_emails": 0, "sms_segments": 0, "successful_sms": 0,
             "simulated_emails": 0, "simulated_sms": 0},
        )  # fmt: skip

    counted = await conn.execute(select(owner, func.count()).where(in_range).group_by(owner))
    for creator, count in counted:
        row_of(creator)["orders"] = int(count)

    email = email_notifications
    simulated_email = _to_simulated_recipient(email)
    emails = await conn.execute(
        select(
            owner,
            func.count(),
            func.sum(case((simulated_email, 0), (email.c.status.in_(EMAIL_SUCCESS_STATUSES), 1), else_=0)),
            func.sum(case((simulated_email, 1), else_=0)),
        )
        .select_from(orders.join(email, email.c.order_id == orders.c.id))
        .where(in_range)
        .group_by(owner)
    )
    for creator, total, successful, simulated in emails:
        usage = row_of(creator)
        usage["emails"], usage["successful_emails"] = int(total) - int(simulated or 0), int(successful or 0)
        usage["simulated_emails"] = int(simulated or 0)

    sms = sms_notifications
    simulated_sms = _to_simulated_recipient(sms)
    texts = await conn.execute(
        select(
            owner,
            # A notification whose segments were never counted (none are: generation counts them) is one message.
            func.sum(case((simulated_sms, 0), else_=func.coalesce(sms.c.segments, 1))),
            func.sum(case((simulated_sms, 0), (sms.c.status.in_(SMS_SUCCESS_STATUSES), 1), else_=0)),
            func.sum(case((simulated_sms, 1), else_=0)),
        )
        .select_from(orders.join(sms, sms.c.order_id == orders.c.id))
        .where(in_range)
        .group_by(owner)
    )
    for creator, segments, successful, simulated in texts:
        usage = row_of(creator)
        usage["sms_segments"], usage["successful_sms"] = int(segments or 0), int(successful or 0)
        usage["simulated_sms"] = int(simulated or 0)

    return [OrgUsageRow(creator=creator, **found[creator]) for creator in sorted(found)]


# ---------------------------------------------------------------- the usage rollup (usage_days, migration 0010)

# Orders still under way: their notifications may yet be made or change status, so their day is not settled.
UNFINISHED_ORDER_STATUSES = (OrderStatus.REGISTERED.value, OrderStatus.PROCESSING.value, OrderStatus.PROCESSED.value)


@dataclass(frozen=True)
class CountedDay:
    """When a day's usage was last counted, and whether for good (settled: its counts can no longer change)."""

    counted_at: datetime
    settled: bool


def days(first: date, last: date) -> list[date]:
    """The days first..last, inclusive."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC day as [start, end)."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


async def count_usage_day(conn: AsyncConnection, day: date) -> list[OrgUsageRow]:
    """One UTC day's usage per service owner, counted from the orders and notifications (usage_between)."""
    return await usage_between(conn, *day_bounds(day))


async def replace_usage_day(
    conn: AsyncConnection, day: date, rows: Sequence[OrgUsageRow], counted_at: datetime, settled: bool
) -> None:
    """The day's counts become `rows`, counted at `counted_at`: its old rows deleted and these written, in the
    caller's transaction (so a reader sees the old day or the new one, never a mix)."""
    await conn.execute(delete(usage_days).where(usage_days.c.day == day))
    await conn.execute(delete(usage_days_counted).where(usage_days_counted.c.day == day))
    if rows:
        await conn.execute(
            insert(usage_days),
            [
                {
                    "day": day,
                    "creator": row.creator,
                    "orders": row.orders,
                    "email_notifications": row.emails,
                    "successful_emails": row.successful_emails,
                    "sms_segments": row.sms_segments,
                    "successful_sms": row.successful_sms,
                    "simulated_emails": row.simulated_emails,
                    "simulated_sms": row.simulated_sms,
                }
                for row in rows
            ],
        )
    await conn.execute(insert(usage_days_counted).values(day=day, counted_at=counted_at, settled=settled))


async def usage_of_days(conn: AsyncConnection, first: date, last: date) -> list[OrgUsageRow]:
    """Per service owner, the sums of the counted days first..last (inclusive), by owner name: a range of
    usage_days' primary key."""
    u = usage_days
    result = await conn.execute(
        select(
            u.c.creator,
            func.sum(u.c.orders),
            func.sum(u.c.email_notifications),
            func.sum(u.c.successful_emails),
            func.sum(u.c.sms_segments),
            func.sum(u.c.successful_sms),
            func.sum(u.c.simulated_emails),
            func.sum(u.c.simulated_sms),
        )
        .where(u.c.day >= first, u.c.day <= last)
        .group_by(u.c.creator)
        .order_by(u.c.creator)
    )
    return [OrgUsageRow(creator, *(int(value) for value in counts)) for creator, *counts in result]


async def counted_days(
    conn: AsyncConnection, first: date, last: date, counted: Table = usage_days_counted
) -> dict[date, CountedDay]:
    """The days first..last (inclusive) that are counted, with when and whether settled: of the usage rollup, or
    of another rollup's table of counted days (day, counted_at, settled), as the status rollup's."""
    c = counted
    result = await conn.execute(select(c.c.day, c.c.counted_at, c.c.settled).where(c.c.day >= first, c.c.day <= last))
    return {day: CountedDay(counted_at, bool(settled)) for day, counted_at, settled in result}


async def uncounted_days(conn: AsyncConnection, first: date, last: date, limit: int) -> list[date]:
    """Up to `limit` days first..last (inclusive) not counted yet, newest first (the recent months are the ones
    asked for): the counted ones are read from usage_days_counted's key, the rest is arithmetic."""
    counted = set(await counted_days(conn, first, last))
    missing: list[date] = []
    day = last
    while day >= first and len(missing) < limit:
        if day not in counted:
            missing.append(day)
        day -= timedelta(days=1)
    return missing


async def unsettled_days(
    conn: AsyncConnection, before: datetime, limit: int, counted: Table = usage_days_counted
) -> list[date]:
    """Up to `limit` counted days not settled and counted before `before`, oldest count first (of `counted`, as
    counted_days)."""
    c = counted
    result = await conn.execute(
        select(c.c.day)
        .where(c.c.settled == false(), c.c.counted_at < before)
        .order_by(c.c.counted_at, c.c.day)
        .limit(limit)
    )
    return list(result.scalars())


async def first_order_day(conn: AsyncConnection) -> date | None:
    """The UTC day of the earliest requested send time (one end of ix_orders_requested_send_time), None without
    orders: the rollup's backfill need not go further back."""
    first = (await conn.execute(select(func.min(orders.c.requested_send_time)))).scalar()
    return first.astimezone(UTC).date() if first is not None else None


async def has_unfinished_orders(conn: AsyncConnection, day: date) -> bool:
    """Whether an order requested on `day` (UTC) is still under way (Registered, Processing, Processed): one seek on
    the partial ix_orders_unfinished_requested_send_time, which holds only such orders."""
    start, end = day_bounds(day)
    # Written out, not bound: a partial index serves only a statement whose own text implies the index's WHERE
    # (the values are the enum's, never a request's).
    unfinished = orders.c.status.in_([literal_column(f"'{status}'") for status in UNFINISHED_ORDER_STATUSES])
    in_day = (orders.c.requested_send_time >= start, orders.c.requested_send_time < end)
    statement: Any = select(literal(1)).where(unfinished, *in_day).limit(1)
    if conn.dialect.name == "sqlite":
        # Named: with statistics, SQLite's planner took ix_orders_status_created (every unfinished order of all
        # days, each row read for its send time) over the partial index. SQLAlchemy renders no table hint for
        # SQLite, so the statement is written out; the bound times keep their column type (UtcDateTime).
        statuses = ", ".join(f"'{status}'" for status in UNFINISHED_ORDER_STATUSES)
        statement = text(
            "SELECT 1 FROM orders INDEXED BY ix_orders_unfinished_requested_send_time"
            f" WHERE status IN ({statuses}) AND requested_send_time >= :start AND requested_send_time < :end LIMIT 1"
        ).bindparams(bindparam("start", start, type_=UtcDateTime()), bindparam("end", end, type_=UtcDateTime()))
    found = await conn.execute(statement)
    return found.first() is not None


# ---------------------------------------------------------------- a day's final notifications (the Parquet export)


@dataclass(frozen=True)
class FinalSmsRow:
    id: UUID
    order_id: UUID
    senders_reference: str | None
    requested_send_time: datetime
    creator: str
    resource_id: str | None
    status: str
    provider_reference: str | None
    mobile_number: str | None
    segments: int | None
    template_body: str | None
    custom_body: str | None


@dataclass(frozen=True)
class FinalEmailRow:
    id: UUID
    order_id: UUID
    senders_reference: str | None
    requested_send_time: datetime
    creator: str
    resource_id: str | None
    status: str
    provider_reference: str | None


_ORDER_FIELDS = (orders.c.senders_reference, orders.c.requested_send_time, orders.c.creator, orders.c.resource_id)


async def final_sms_between(conn: AsyncConnection, start: datetime, end: datetime) -> list[FinalSmsRow]:
    """SMS notifications whose final status was set in [start, end) (ix_sms_notifications_status_changed), oldest
    result first."""
    sms = sms_notifications
    statement = (
        select(
            sms.c.id,
            sms.c.order_id,
            *_ORDER_FIELDS,
            sms.c.status,
            sms.c.provider_reference,
            sms.c.mobile_number,
            sms.c.segments,
            orders.c.sms_body.label("template_body"),
            sms.c.body.label("custom_body"),
        )
        .select_from(sms.join(orders, orders.c.id == sms.c.order_id))
        .where(
            sms.c.status_changed >= start,
            sms.c.status_changed < end,
            sms.c.status.not_in(SMS_NOT_FINAL),
            # Billing and the data warehouse: a simulated recipient's notification cost nothing and reached nobody.
            _to_real_recipient(sms),
        )
        .order_by(sms.c.status_changed, sms.c.id)
    )
    return [FinalSmsRow(**row._mapping) for row in await conn.execute(statement)]


async def final_emails_between(conn: AsyncConnection, start: datetime, end: datetime) -> list[FinalEmailRow]:
    """Email notifications whose final status was set in [start, end), oldest result first."""
    email = email_notifications
    statement = (
        select(email.c.id, email.c.order_id, *_ORDER_FIELDS, email.c.status, email.c.provider_reference)
        .select_from(email.join(orders, orders.c.id == email.c.order_id))
        .where(
            email.c.status_changed >= start,
            email.c.status_changed < end,
            email.c.status.not_in(EMAIL_NOT_FINAL),
            _to_real_recipient(email),
        )
        .order_by(email.c.status_changed, email.c.id)
    )
    return [FinalEmailRow(**row._mapping) for row in await conn.execute(statement)]
