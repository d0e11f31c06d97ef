"""SQL that reads notifications for the order API. Functions run inside a transaction their caller owns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import email_notifications, sms_notifications
from varsel.notifications.statuses import EMAIL_SUCCESS, SMS_SUCCESS


@dataclass(frozen=True)
class ChannelCounts:
    generated: int
    succeeded: int


@dataclass(frozen=True)
class NotificationRow:
    id: UUID
    status: str
    status_changed: datetime
    email_address: str | None
    mobile_number: str | None
    national_identity_number: str | None
    organization_number: str | None
    is_reserved: bool | None


async def channel_counts(conn: AsyncConnection, order_id: UUID) -> tuple[ChannelCounts, ChannelCounts]:
    """How many email and SMS notifications the order has, and how many of them succeeded."""
    counts: list[ChannelCounts] = []
    for table, success in ((email_notifications, EMAIL_SUCCESS), (sms_notifications, SMS_SUCCESS)):
        row = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((table.c.status.in_([s.value for s in success]), 1), else_=0)), 0),
                ).where(table.c.order_id == order_id)
            )
        ).one()
        counts.append(ChannelCounts(int(row[0]), int(row[1])))
    return counts[0], counts[1]


async def email_notifications_of(conn: AsyncConnection, order_id: UUID) -> list[NotificationRow]:
    t = email_notifications
    rows = await conn.execute(
        select(
            t.c.id,
            t.c.status,
            t.c.status_changed,
            t.c.email_address,
            t.c.national_identity_number,
            t.c.organization_number,
            t.c.is_reserved,
        )
        .where(t.c.order_id == order_id)
        .order_by(t.c.created, t.c.id)
    )
    return [
        NotificationRow(
            r.id,
            r.status,
            r.status_changed,
            r.email_address,
            None,
            r.national_identity_number,
            r.organization_number,
            r.is_reserved,
        )
        for r in rows
    ]


async def sms_notifications_of(conn: AsyncConnection, order_id: UUID) -> list[NotificationRow]:
    t = sms_notifications
    rows = await conn.execute(
        select(
            t.c.id,
            t.c.status,
            t.c.status_changed,
            t.c.mobile_number,
            t.c.national_identity_number,
            t.c.organization_number,
            t.c.is_reserved,
        )
        .where(t.c.order_id == order_id)
        .order_by(t.c.created, t.c.id)
    )
    return [
        NotificationRow(
            r.id,
            r.status,
            r.status_changed,
            None,
            r.mobile_number,
            r.national_identity_number,
            r.organization_number,
            r.is_reserved,
        )
        for r in rows
    ]
