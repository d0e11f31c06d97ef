"""SQL of the status rollup (status_days, migration 0011): how many orders and notifications were created on a UTC
day, per service owner and status (orders also per channel), and which days are counted.

A day is counted one status at a time: each status is one range of ix_orders_status_created (status, created,
notification_channel, creator) or ix_<notifications>_status_created (status, created, creator), read from the index
alone, and only that range's rows are grouped. A GROUP BY over the day's range of a time index would sort every row
of the day on SQLite."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, delete, func, insert, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import (
    email_notifications,
    orders,
    sms_notifications,
    status_days,
    status_days_counted,
)
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.support import repository as support_repository
from varsel.support.repository import CountedDay, day_bounds

ORDER = "order"
EMAIL = "email"
SMS = "sms"
KINDS = (ORDER, EMAIL, SMS)

_NOTIFICATIONS = {EMAIL: (email_notifications, EmailStatus), SMS: (sms_notifications, SmsStatus)}


@dataclass(frozen=True)
class StatusCount:
    """So many of a kind ("order", "email", "sms") in a status; `channel` is an order's notification channel, ""
    for a notification."""

    kind: str
    creator: str
    channel: str
    status: str
    count: int


def _in_day(table: Any, status: str) -> Any:
    return and_(table.c.status == status, table.c.created >= bindparam("start"), table.c.created < bindparam("end"))


@functools.cache
def _count_statement() -> Any:
    parts: list[Any] = [
        select(
            literal(ORDER, String()).label("kind"),
            orders.c.creator,
            orders.c.notification_channel.label("channel"),
            literal(status.value, String()).label("status"),
            func.count().label("n"),
        )
        .where(_in_day(orders, status.value))
        .group_by(orders.c.notification_channel, orders.c.creator)
        for status in OrderStatus
    ]
    for kind, (table, statuses) in _NOTIFICATIONS.items():
        parts += [
            select(
                literal(kind, String()).label("kind"),
                table.c.creator,
                literal("", String()).label("channel"),
                literal(status.value, String()).label("status"),
                func.count().label("n"),
            )
            .where(_in_day(table, status.value))
            .group_by(table.c.creator)
            for status in statuses
        ]
    return union_all(*parts)


async def count_day(conn: AsyncConnection, day: date) -> list[StatusCount]:
    """The orders and notifications created on `day` (UTC), per service owner and status, counted from the tables."""
    start, end = day_bounds(day)
    result = await conn.execute(_count_statement(), {"start": start, "end": end})
    return [StatusCount(row.kind, row.creator, row.channel, row.status, int(row.n)) for row in result]


async def replace_day(
    conn: AsyncConnection, day: date, rows: Sequence[StatusCount], counted_at: datetime, settled: bool
) -> None:
    """The day's counts become `rows`, counted at `counted_at`, in the caller's transaction (a reader sees the old
    day or the new one, never a mix)."""
    await conn.execute(delete(status_days).where(status_days.c.day == day))
    await conn.execute(delete(status_days_counted).where(status_days_counted.c.day == day))
    if rows:
        await conn.execute(
            insert(status_days),
            [
                {
                    "day": day,
                    "kind": row.kind,
                    "creator": row.creator,
                    "channel": row.channel,
                    "status": row.status,
                    "count": row.count,
                }
                for row in rows
            ],
        )
    await conn.execute(insert(status_days_counted).values(day=day, counted_at=counted_at, settled=settled))


async def counts_of_days(conn: AsyncConnection, creator: str | None, first: date, last: date) -> list[StatusCount]:
    """The sums over the counted days first..last (inclusive), per kind, channel and status (`creator` "" in the
    answer): one service owner's, or everyone's when `creator` is None. A range of status_days' primary key."""
    s = status_days
    conditions = [s.c.day >= first, s.c.day <= last]
    if creator is not None:
        conditions.append(s.c.creator == creator)
    result = await conn.execute(
        select(s.c.kind, s.c.channel, s.c.status, func.sum(s.c.count))
        .where(*conditions)
        .group_by(s.c.kind, s.c.channel, s.c.status)
    )
    return [StatusCount(kind, "", channel, status, int(count)) for kind, channel, status, count in result]


async def counted_days(conn: AsyncConnection, first: date, last: date) -> dict[date, CountedDay]:
    """The days first..last (inclusive) that are counted, with when and whether settled."""
    return await support_repository.counted_days(conn, first, last, status_days_counted)


async def unsettled_days(conn: AsyncConnection, before: datetime, limit: int) -> list[date]:
    """Up to `limit` counted days not settled and counted before `before`, oldest count first."""
    return await support_repository.unsettled_days(conn, before, limit, status_days_counted)


async def forget_before(conn: AsyncConnection, day: date) -> int:
    """Drop the counts of the days before `day` (no period reaches back that far); answers how many days."""
    gone = await conn.execute(delete(status_days_counted).where(status_days_counted.c.day < day))
    await conn.execute(delete(status_days).where(status_days.c.day < day))
    return int(gone.rowcount or 0)
