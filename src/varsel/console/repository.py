"""SQL of the console's read side: order search, an order's chain and timelines, and the overview's figures.

Functions run inside a transaction their caller (varsel.console.service) owns. Every query is bounded: searches are
keyset-paged by (time, id) and never use OFFSET, an order's notifications are read a page at a time, and the
overview counts only its period's rows, from indexes that hold every column it counts (migration 0008), never a
whole table. `creator` None means an admin: every service owner's rows; otherwise only that owner's.
"""

from __future__ import annotations

import functools
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
    String,
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


# The overview's statements are built once per shape and then only bound: each names every status (and a slice of
# the period per sample row), and building that many subqueries again on every view cost more than running them.


def _ids(dialect: str) -> Any:
    """A list of ids as one bound value ("ids"), whatever their number, as a subquery to test a column against. On
    PostgreSQL an array, unnested and joined: given a plain IN of a few thousand values its planner chose to read
    the whole table and test each row against the list. On SQLite a JSON array of the ids in their stored form
    (hex): one bound parameter per id cost more to compile and bind than the look-ups themselves."""
    if dialect == "postgresql":
        wanted = (
            func.unnest(bindparam("ids", type_=ARRAY(Uuid)))
            .table_valued(Column("id", Uuid))
            .render_derived(name="wanted")
        )
        return select(wanted.c.id)
    return select(func.json_each(bindparam("ids", type_=String())).table_valued("value").c.value)


def _ids_value(conn: AsyncConnection, ids: Sequence[UUID]) -> Any:
    return list(ids) if conn.dialect.name == "postgresql" else json.dumps([i.hex for i in ids])


def _period(table: Table, scoped: bool) -> list[ColumnElement[bool]]:
    """[since, until) of the table's creation time, bound as "since" and "until"; scoped: only "creator"'s."""
    conditions = [table.c.created >= bindparam("since"), table.c.created < bindparam("until")]
    if scoped:
        conditions.append(table.c.creator == bindparam("creator"))
    return conditions


def _bound(creator: str | None, since: datetime, until: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"since": since, "until": until}
    if creator is not None:
        values["creator"] = creator
    return values


_ORDER_CHANNELS = [channel.value for channel in NotificationChannel]


@functools.cache
def _order_counts_statement(scoped: bool) -> Any:
    return union_all(
        *(
            select(
                literal(status.value).label("status"),
                *(
                    func.count().filter(orders.c.notification_channel == channel).label(channel)
                    for channel in _ORDER_CHANNELS
                ),
            ).where(and_(orders.c.status == status.value, *_period(orders, scoped)))
            for status in OrderStatus
        )
    )


async def order_counts(
    conn: AsyncConnection, creator: str | None, since: datetime, until: datetime
) -> list[tuple[str, str, int]]:
    """(channel, status, count) of the orders created in [since, until), those with none left out.

    Each status is one range of ix_orders_status_created, read from the index alone, its channels counted as it is
    read; all statuses in one statement. A GROUP BY over the period's range of a time index is simpler, but SQLite
    sorts every row of the period for it: at a month of a million notifications that alone took longer than the
    page may."""
    result = await conn.execute(_order_counts_statement(creator is not None), _bound(creator, since, until))
    return [
        (channel, row.status, int(count))
        for row in result
        for channel, count in zip(_ORDER_CHANNELS, row[1:], strict=True)
        if count
    ]


def _statuses(channel: str) -> list[str]:
    return [status.value for status in (EmailStatus if channel == "email" else SmsStatus)]


@functools.cache
def _notification_counts_statement(channel: str, scoped: bool) -> Any:
    table = NOTIFICATION_TABLES[channel]
    return select(
        *(
            select(func.count()).where(and_(table.c.status == status, *_period(table, scoped))).scalar_subquery()
            for status in _statuses(channel)
        )
    )


async def notification_counts(
    conn: AsyncConnection, channel: str, creator: str | None, since: datetime, until: datetime
) -> dict[str, int]:
    """Status → count of one channel's notifications created in [since, until), those with none left out: one count
    per status, each a range of ix_<table>_status_created (see order_counts)."""
    statement = _notification_counts_statement(channel, creator is not None)
    row = (await conn.execute(statement, _bound(creator, since, until))).one()
    return {status: int(count) for status, count in zip(_statuses(channel), row, strict=True) if count}


@functools.cache
def _sample_orders_statement(slices: int, per_slice: int, scoped: bool) -> Any:
    def part(index: int) -> Any:
        conditions = [orders.c.created >= bindparam(f"since{index}"), orders.c.created < bindparam(f"until{index}")]
        if scoped:
            conditions.append(orders.c.creator == bindparam("creator"))
        return (
            select(orders.c.id, orders.c.requested_send_time, orders.c.created)
            .where(and_(*conditions))
            .order_by(orders.c.created.desc(), orders.c.id.desc())
            .limit(per_slice)
            .subquery()
        )

    return union_all(*(select(part(index)) for index in range(slices)))


async def sample_orders(
    conn: AsyncConnection, creator: str | None, slices: Sequence[tuple[datetime, datetime]], per_slice: int
) -> list[Any]:
    """The newest `per_slice` orders created in each slice [since, until): (id, requested_send_time, created), from
    ix_orders_created alone, one statement. The overview's latency sample: spread over the whole period instead of
    describing only its last minutes."""
    if not slices:
        return []
    values: dict[str, Any] = {} if creator is None else {"creator": creator}
    for index, (since, until) in enumerate(slices):
        values[f"since{index}"] = since
        values[f"until{index}"] = until
    result = await conn.execute(_sample_orders_statement(len(slices), per_slice, creator is not None), values)
    return list(result.all())


@functools.cache
def _notifications_of_orders_statement(dialect: str, channel: str) -> Any:
    table = NOTIFICATION_TABLES[channel]
    return (
        select(table.c.id, table.c.order_id, table.c.status, table.c.status_changed)
        .where(table.c.order_id.in_(_ids(dialect)))
        .limit(bindparam("limit"))
    )


async def notifications_of_orders(
    conn: AsyncConnection, channel: str, order_ids: Sequence[UUID], limit: int
) -> list[Any]:
    """Up to `limit` of these orders' notifications on one channel: (id, order_id, status, status_changed)."""
    if not order_ids:
        return []
    statement = _notifications_of_orders_statement(conn.dialect.name, channel)
    result = await conn.execute(statement, {"ids": _ids_value(conn, order_ids), "limit": limit})
    return list(result.all())


@functools.cache
def _handed_off_statement(dialect: str) -> Any:
    attempts = notification_attempts
    return (
        select(attempts.c.notification_id, func.min(attempts.c.finished))
        .where(and_(attempts.c.notification_id.in_(_ids(dialect)), attempts.c.outcome == "accepted"))
        .group_by(attempts.c.notification_id)
    )


async def handed_off(conn: AsyncConnection, notification_ids: Sequence[UUID]) -> dict[UUID, datetime]:
    """Notification id → when a provider first accepted it (the end of its first accepted call)."""
    if not notification_ids:
        return {}
    result = await conn.execute(_handed_off_statement(conn.dialect.name), {"ids": _ids_value(conn, notification_ids)})
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
