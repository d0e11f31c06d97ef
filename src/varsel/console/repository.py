"""SQL of the console's read side: order search, an order's chain and timelines, and the overview's figures.

Functions run inside a transaction their caller (varsel.console.service) owns. Every query is bounded: searches are
keyset-paged by (time, id) and never use OFFSET, an order's notifications are read a page at a time, and the
overview counts only its period's rows, from indexes that hold every column it counts (migration 0008), never a
whole table. `creator` None means an admin: every service owner's rows; otherwise only that owner's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Column,
    ColumnElement,
    Table,
    Uuid,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import (
    NOTIFICATION_TABLES,
    delivery_reports,
    notification_attempts,
    order_chains,
    order_recipients,
    orders,
)
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.orders.vocabulary import NotificationChannel, OrderType

# The statuses the partial indexes of unfinished work hold (see varsel.db.tables), as literals: SQLite uses a partial
# index only when the query's WHERE contains its condition as written, with constants, not bound parameters.
_UNSENT = ("New", "Sending")
_UNPROCESSED = (OrderStatus.REGISTERED.value, OrderStatus.PROCESSING.value)


def _status_in(table: Table, statuses: Sequence[str]) -> ColumnElement[bool]:
    return table.c.status.in_([literal_column(f"'{status}'") for status in statuses])


class TimeField(StrEnum):
    """Which time an order search ranges over and sorts by."""

    CREATED = "created"
    REQUESTED_SEND_TIME = "requested_send_time"


@dataclass(frozen=True)
class OrderSearch:
    """What to look for; every field left None matches all. `order_id` finds an order by its id (a v2 shipment id is
    its order's id) or the orders of a chain by the chain's id. The time range is [since, until)."""

    senders_reference: str | None = None
    order_id: UUID | None = None
    status: OrderStatus | None = None
    order_type: OrderType | None = None
    channel: NotificationChannel | None = None
    time_field: TimeField = TimeField.CREATED
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a page of search results ends: the last order's time (of the search's time field) and id. The next page
    holds the orders strictly before it in (time, id) order, so orders with equal times are neither skipped nor
    repeated, whatever is written meanwhile."""

    time: datetime
    id: UUID


_SUMMARY_COLUMNS = (
    orders.c.id,
    orders.c.creator,
    orders.c.senders_reference,
    orders.c.order_type,
    orders.c.notification_channel,
    orders.c.status,
    orders.c.requested_send_time,
    orders.c.created,
    orders.c.status_changed,
    orders.c.chain_id,
    orders.c.chain_position,
)


async def search_orders(
    conn: AsyncConnection, creator: str | None, search: OrderSearch, after: Cursor | None, limit: int
) -> list[Row[Any]]:
    """Orders matching `search`, newest first by its time field, then by id; those after `after` only; at most
    `limit` rows. Served by ix_orders_creator_created / ix_orders_creator_requested_send_time for a service owner,
    ix_orders_created / ix_orders_requested_send_time for an admin, read backwards from the cursor."""
    time = orders.c.created if search.time_field is TimeField.CREATED else orders.c.requested_send_time
    conditions: list[ColumnElement[bool]] = []
    if creator is not None:
        conditions.append(orders.c.creator == creator)
    if search.senders_reference is not None:
        conditions.append(orders.c.senders_reference == search.senders_reference)
    if search.order_id is not None:
        conditions.append(or_(orders.c.id == search.order_id, orders.c.chain_id == search.order_id))
    if search.status is not None:
        status: ColumnElement[str] = orders.c.status
        if search.time_field is not TimeField.CREATED:
            # Written so that no index can serve it: ix_orders_status_created would hand over every order of the
            # status, all to be sorted by send time, where walking the send-time index in order and testing each
            # order's status stops at the page's end. (Without statistics SQLite takes the equality's index.)
            status = orders.c.status + ""
        conditions.append(status == search.status.value)
    if search.order_type is not None:
        conditions.append(orders.c.order_type == search.order_type.value)
    if search.channel is not None:
        conditions.append(orders.c.notification_channel == search.channel.value)
    if search.since is not None:
        conditions.append(time >= search.since)
    if search.until is not None:
        conditions.append(time < search.until)
    if after is not None:
        conditions.append(tuple_(time, orders.c.id) < tuple_(after.time, after.id))
    query = select(*_SUMMARY_COLUMNS).order_by(time.desc(), orders.c.id.desc()).limit(limit)
    if conditions:
        query = query.where(and_(*conditions))
    return list(await conn.execute(query))


# ---------------------------------------------------------------- an order, its chain and its notifications


async def order(conn: AsyncConnection, order_id: UUID, creator: str | None) -> Row[Any] | None:
    """The whole order row; None when there is none, or `creator` did not create it (as good as absent)."""
    condition = orders.c.id == order_id
    if creator is not None:
        condition = and_(condition, orders.c.creator == creator)
    return (await conn.execute(select(orders).where(condition))).first()


async def chain(conn: AsyncConnection, chain_id: UUID) -> Row[Any] | None:
    return (await conn.execute(select(order_chains).where(order_chains.c.id == chain_id))).first()


async def chain_orders(conn: AsyncConnection, chain_id: UUID, creator: str) -> list[Row[Any]]:
    """A chain's orders, the main order first and then its reminders in request order. The chain's creator is its
    orders' creator; it is named anyway, so that no query of the console can cross service owners."""
    result = await conn.execute(
        select(orders)
        .where(and_(orders.c.chain_id == chain_id, orders.c.creator == creator))
        .order_by(orders.c.chain_position, orders.c.created, orders.c.id)
    )
    return list(result)


async def recipients(conn: AsyncConnection, order_id: UUID, limit: int) -> tuple[list[Row[Any]], int]:
    """The first `limit` recipients as ordered, and how many the order has."""
    rows = await conn.execute(
        select(order_recipients)
        .where(order_recipients.c.order_id == order_id)
        .order_by(order_recipients.c.position)
        .limit(limit)
    )
    listed = list(rows)
    if len(listed) < limit:
        return listed, len(listed)
    total = await conn.scalar(
        select(func.count()).select_from(order_recipients).where(order_recipients.c.order_id == order_id)
    )
    return listed, int(total or 0)


async def notification_counts_of(conn: AsyncConnection, order_id: UUID) -> dict[str, dict[str, int]]:
    """An order's notifications by channel and status (from the order id index: bounded by the order's size)."""
    counts: dict[str, dict[str, int]] = {}
    for channel, table in NOTIFICATION_TABLES.items():
        result = await conn.execute(
            select(table.c.status, func.count()).where(table.c.order_id == order_id).group_by(table.c.status)
        )
        counts[channel] = {row[0]: int(row[1]) for row in result}
    return counts


async def notifications_of(conn: AsyncConnection, channel: str, order_id: UUID, limit: int) -> list[Row[Any]]:
    """An order's first `limit` notifications on one channel ("email" or "sms"), in the order they were made."""
    table = NOTIFICATION_TABLES[channel]
    result = await conn.execute(
        select(table).where(table.c.order_id == order_id).order_by(table.c.created, table.c.id).limit(limit)
    )
    return list(result)


async def attempts_of(conn: AsyncConnection, notification_ids: Sequence[UUID]) -> list[Row[Any]]:
    """Every provider call made for these notifications, in the order they were made."""
    if not notification_ids:
        return []
    result = await conn.execute(
        select(notification_attempts)
        .where(notification_attempts.c.notification_id.in_(list(notification_ids)))
        .order_by(notification_attempts.c.started, notification_attempts.c.attempt)
    )
    return list(result)


async def reports_of(conn: AsyncConnection, notification_ids: Sequence[UUID]) -> list[Row[Any]]:
    """The delivery reports matched to these notifications, in the order they arrived. (A report that never matched
    one, pending or dead, names no notification: the delivery reports page shows those.)"""
    if not notification_ids:
        return []
    result = await conn.execute(
        select(delivery_reports)
        .where(delivery_reports.c.notification_id.in_(list(notification_ids)))
        .order_by(delivery_reports.c.received, delivery_reports.c.id)
    )
    return list(result)


# ---------------------------------------------------------------- the overview


def _among(conn: AsyncConnection, column: Any, ids: Sequence[UUID]) -> ColumnElement[bool]:
    """`column` is one of `ids`, as one bound value whatever their number. On PostgreSQL an array, unnested and
    joined: given a plain IN of a few thousand values its planner chose to read the whole table and test each row
    against the list."""
    if conn.dialect.name != "postgresql":
        # SQLite: one JSON array of the ids in their stored form (hex), not one bound parameter per id, which cost
        # more to compile and bind than the look-ups themselves at a thousand ids.
        return column.in_(  # type: ignore[no-any-return]
            select(func.json_each(json.dumps([i.hex for i in ids])).table_valued("value").c.value)
        )
    wanted = (
        func.unnest(bindparam(None, list(ids), type_=ARRAY(Uuid)))
        .table_valued(Column("id", Uuid))
        .render_derived(name="wanted")
    )
    return column.in_(select(wanted.c.id))  # type: ignore[no-any-return]


def _period(table: Table, creator: str | None, since: datetime, until: datetime) -> list[ColumnElement[bool]]:
    conditions = [table.c.created >= since, table.c.created < until]
    if creator is not None:
        conditions.append(table.c.creator == creator)
    return conditions


async def order_counts(
    conn: AsyncConnection, creator: str | None, since: datetime, until: datetime
) -> list[tuple[str, str, int]]:
    """(channel, status, count) of the orders created in [since, until), those with none left out.

    Each status is one range of ix_orders_status_created, read from the index alone, its channels counted as it is
    read; all statuses in one statement. A GROUP BY over the period's range of a time index is simpler, but SQLite
    sorts every row of the period for it: at a month of a million notifications that alone took longer than the
    page may."""
    channels = [channel.value for channel in NotificationChannel]
    parts = [
        select(
            literal(status.value).label("status"),
            *(func.count().filter(orders.c.notification_channel == channel).label(channel) for channel in channels),
        ).where(and_(orders.c.status == status.value, *_period(orders, creator, since, until)))
        for status in OrderStatus
    ]
    result = await conn.execute(union_all(*parts))
    return [
        (channel, row.status, int(count))
        for row in result
        for channel, count in zip(channels, row[1:], strict=True)
        if count
    ]


async def notification_counts(
    conn: AsyncConnection, channel: str, creator: str | None, since: datetime, until: datetime
) -> dict[str, int]:
    """Status → count of one channel's notifications created in [since, until), those with none left out: one count
    per status, each a range of ix_<table>_status_created (see order_counts)."""
    table = NOTIFICATION_TABLES[channel]
    statuses = [status.value for status in (EmailStatus if channel == "email" else SmsStatus)]
    counts = [
        select(func.count())
        .where(and_(table.c.status == status, *_period(table, creator, since, until)))
        .scalar_subquery()
        for status in statuses
    ]
    row = (await conn.execute(select(*counts))).one()
    return {status: int(count) for status, count in zip(statuses, row, strict=True) if count}


async def sample_orders(
    conn: AsyncConnection, creator: str | None, slices: Sequence[tuple[datetime, datetime]], per_slice: int
) -> list[Any]:
    """The newest `per_slice` orders created in each slice [since, until): (id, requested_send_time, created), from
    ix_orders_created alone, one statement. The overview's latency sample: spread over the whole period instead of
    describing only its last minutes."""
    parts = [
        select(orders.c.id, orders.c.requested_send_time, orders.c.created)
        .where(and_(*_period(orders, creator, since, until)))
        .order_by(orders.c.created.desc(), orders.c.id.desc())
        .limit(per_slice)
        .subquery()
        for since, until in slices
    ]
    if not parts:
        return []
    result = await conn.execute(union_all(*(select(part) for part in parts)))
    return list(result.all())


async def notifications_of_orders(
    conn: AsyncConnection, channel: str, order_ids: Sequence[UUID], limit: int
) -> list[Any]:
    """Up to `limit` of these orders' notifications on one channel: (id, order_id, status, status_changed)."""
    if not order_ids:
        return []
    table = NOTIFICATION_TABLES[channel]
    result = await conn.execute(
        select(table.c.id, table.c.order_id, table.c.status, table.c.status_changed)
        .where(_among(conn, table.c.order_id, order_ids))
        .limit(limit)
    )
    return list(result.all())


async def handed_off(conn: AsyncConnection, notification_ids: Sequence[UUID]) -> dict[UUID, datetime]:
    """Notification id → when a provider first accepted it (the end of its first accepted call)."""
    if not notification_ids:
        return {}
    result = await conn.execute(
        select(notification_attempts.c.notification_id, func.min(notification_attempts.c.finished))
        .where(
            and_(
                _among(conn, notification_attempts.c.notification_id, notification_ids),
                notification_attempts.c.outcome == "accepted",
            )
        )
        .group_by(notification_attempts.c.notification_id)
    )
    return {row[0]: row[1] for row in result}


@dataclass(frozen=True)
class QueueDepth:
    """Unfinished work of one kind: how many are due now and how many wait for a later time, each counted up to a
    cap (`capped` when there are more), and since when the oldest due one has been due."""

    due: int
    waiting: int
    capped: bool
    oldest_due: datetime | None


async def _count_upto(conn: AsyncConnection, query: Any, cap: int) -> int:
    """How many rows `query` (a SELECT of one column) has, counting no further than cap + 1."""
    return int(await conn.scalar(select(func.count()).select_from(query.limit(cap + 1).subquery())) or 0)


async def notification_queue(
    conn: AsyncConnection, channel: str, creator: str | None, now: datetime, cap: int
) -> QueueDepth:
    """One channel's unsent notifications (New, Sending), from its partial index of unsent work."""
    table = NOTIFICATION_TABLES[channel]
    unsent: list[ColumnElement[bool]] = [_status_in(table, _UNSENT)]
    if creator is not None:
        unsent.append(table.c.creator == creator)
    due = await _count_upto(conn, select(table.c.id).where(and_(*unsent, table.c.send_after <= now)), cap)
    waiting = await _count_upto(conn, select(table.c.id).where(and_(*unsent, table.c.send_after > now)), cap)
    oldest = await conn.scalar(select(func.min(table.c.send_after)).where(and_(*unsent, table.c.send_after <= now)))
    return QueueDepth(min(due, cap), min(waiting, cap), due > cap or waiting > cap, oldest)


async def order_queue(conn: AsyncConnection, creator: str | None, now: datetime, cap: int) -> QueueDepth:
    """Orders not yet processed (Registered, Processing), from the partial index of due orders."""
    unprocessed: list[ColumnElement[bool]] = [_status_in(orders, _UNPROCESSED)]
    if creator is not None:
        unprocessed.append(orders.c.creator == creator)
    due = await _count_upto(conn, select(orders.c.id).where(and_(*unprocessed, orders.c.process_after <= now)), cap)
    waiting = await _count_upto(conn, select(orders.c.id).where(and_(*unprocessed, orders.c.process_after > now)), cap)
    oldest = await conn.scalar(
        select(func.min(orders.c.process_after)).where(and_(*unprocessed, orders.c.process_after <= now))
    )
    return QueueDepth(min(due, cap), min(waiting, cap), due > cap or waiting > cap, oldest)


async def provider_calls(conn: AsyncConnection, since: datetime, until: datetime) -> list[tuple[str, str, str, int]]:
    """(channel, provider, outcome, count) of the provider calls started in [since, until), every process's."""
    attempts = notification_attempts
    result = await conn.execute(
        select(attempts.c.channel, attempts.c.provider, attempts.c.outcome, func.count())
        .where(and_(attempts.c.started >= since, attempts.c.started < until))
        .group_by(attempts.c.channel, attempts.c.provider, attempts.c.outcome)
    )
    return [(row[0], row[1], row[2], int(row[3])) for row in result]


async def last_failed_call(conn: AsyncConnection, channel: str, provider: str, since: datetime) -> Row[Any] | None:
    """The latest provider call since `since` that did not get through (retry, failed, error, refused)."""
    attempts = notification_attempts
    result = await conn.execute(
        select(attempts.c.started, attempts.c.outcome, attempts.c.detail)
        .where(
            and_(
                attempts.c.started >= since,
                attempts.c.channel == channel,
                attempts.c.provider == provider,
                attempts.c.outcome != "accepted",
            )
        )
        .order_by(attempts.c.started.desc())
        .limit(1)
    )
    row: Row[Any] | None = result.first()  # type: ignore[assignment]
    return row
