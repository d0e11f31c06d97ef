"""SQL that reads notifications for the order API. Functions run inside a transaction their caller owns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import Table, case, func, select
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
    # When it may next be handed to the provider, and how often it was: what a New notification waits for.
    send_after: datetime | None = None
    attempts: int = 0
    # Receipt-driven fallback: the first notification (on the other channel) this one was sent for, and why.
    fallback_of: UUID | None = None
    fallback_reason: str | None = None


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


async def notifications_of(conn: AsyncConnection, table: Table, order_id: UUID) -> list[NotificationRow]:
    """The order's notifications on one channel (email_notifications or sms_notifications), oldest first."""
    email = table is email_notifications
    address = table.c.email_address if email else table.c.mobile_number
    rows = await conn.execute(
        select(
            table.c.id,
            table.c.status,
            table.c.status_changed,
            address.label("address"),
            table.c.national_identity_number,
            table.c.organization_number,
            table.c.is_reserved,
            table.c.send_after,
            table.c.attempts,
            table.c.fallback_of,
            table.c.fallback_reason,
        )
        .where(table.c.order_id == order_id)
        .order_by(table.c.created, table.c.id)
    )
    return [
        NotificationRow(
            r.id,
            r.status,
            r.status_changed,
            r.address if email else None,
            None if email else r.address,
            r.national_identity_number,
            r.organization_number,
            r.is_reserved,
            r.send_after,
            r.attempts,
            r.fallback_of,
            r.fallback_reason,
        )
        for r in rows
    ]
