"""SQL of the pipeline: claiming work under a lease, guarded status moves, completion and expiry.

Every claim is one statement: PostgreSQL skips rows other workers hold (FOR UPDATE SKIP LOCKED); SQLite runs it
in a write transaction begun IMMEDIATE, which admits one writer at a time. Every later move is guarded by the
status it expects and by the claim, so work taken over after a lease ran out is never recorded twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Table, and_, exists, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import email_notifications, orders, sms_notifications
from varsel.notifications.statuses import EMAIL_PENDING, SMS_PENDING, EmailStatus, OrderStatus, SmsStatus

_PENDING: dict[str, list[str]] = {
    email_notifications.name: [s.value for s in EMAIL_PENDING],
    sms_notifications.name: [s.value for s in SMS_PENDING],
}
# Handed to the provider and waiting for a delivery report.
_AWAITING_REPORT: dict[str, str] = {
    email_notifications.name: EmailStatus.SUCCEEDED.value,
    sms_notifications.name: SmsStatus.ACCEPTED.value,
}
NEW = "New"
SENDING = "Sending"
FAILED_TTL = "Failed_TTL"


# ---------------------------------------------------------------- orders


async def claim_due_orders(
    conn: AsyncConnection, worker: str, now: datetime, lease_until: datetime, limit: int
) -> list[UUID]:
    """Take up to `limit` due orders: Registered ones, and Processing ones whose worker's lease ran out."""
    due = (
        select(orders.c.id)
        .where(
            and_(
                orders.c.process_after <= now,
                or_(
                    orders.c.status == OrderStatus.REGISTERED.value,
                    and_(orders.c.status == OrderStatus.PROCESSING.value, orders.c.claimed_until < now),
                ),
            )
        )
        .order_by(orders.c.process_after)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await conn.execute(
        update(orders)
        .where(orders.c.id.in_(due.scalar_subquery()))
        .values(
            status=OrderStatus.PROCESSING.value,
            status_changed=now,
            claimed_by=worker,
            claimed_until=lease_until,
            processing_attempts=orders.c.processing_attempts + 1,
        )
        .returning(orders.c.id)
    )
    return [row.id for row in result]


def _held_by(worker: str) -> Any:
    return and_(orders.c.status == OrderStatus.PROCESSING.value, orders.c.claimed_by == worker)


async def retry_order_later(conn: AsyncConnection, order_id: UUID, worker: str, at: datetime, now: datetime) -> bool:
    result = await conn.execute(
        update(orders)
        .where(and_(orders.c.id == order_id, _held_by(worker)))
        .values(
            status=OrderStatus.REGISTERED.value,
            status_changed=now,
            process_after=at,
            claimed_by=None,
            claimed_until=None,
        )
    )
    return bool(result.rowcount == 1)


async def finish_order(conn: AsyncConnection, order_id: UUID, worker: str, status: OrderStatus, now: datetime) -> bool:
    """Move an order this worker holds to `status`; False when the claim was lost (nothing must be written)."""
    result = await conn.execute(
        update(orders)
        .where(and_(orders.c.id == order_id, _held_by(worker)))
        .values(status=status.value, status_changed=now, claimed_by=None, claimed_until=None)
    )
    return bool(result.rowcount == 1)


async def next_due_order(conn: AsyncConnection) -> datetime | None:
    result = await conn.execute(
        select(orders.c.process_after)
        .where(orders.c.status.in_([OrderStatus.REGISTERED.value, OrderStatus.PROCESSING.value]))
        .order_by(orders.c.process_after)
        .limit(1)
    )
    return result.scalar()


async def insert_notifications(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    # One statement for all rows needs the same columns in each: a failed row has no address or content.
    columns = {key for row in rows for key in row}
    await conn.execute(insert(table), [{column: row.get(column) for column in columns} for row in rows])


async def complete_orders(conn: AsyncConnection, order_ids: Sequence[UUID], now: datetime) -> list[UUID]:
    """Processed orders among these with nothing pending become Completed."""
    if not order_ids:
        return []
    nothing_pending = [
        ~exists().where(and_(table.c.order_id == orders.c.id, table.c.status.in_(_PENDING[table.name])))
        for table in (email_notifications, sms_notifications)
    ]
    result = await conn.execute(
        update(orders)
        .where(
            and_(
                orders.c.id.in_(sorted(set(order_ids))),
                orders.c.status == OrderStatus.PROCESSED.value,
                *nothing_pending,
            )
        )
        .values(status=OrderStatus.COMPLETED.value, status_changed=now)
        .returning(orders.c.id)
    )
    return [row.id for row in result]


# ---------------------------------------------------------------- notifications


async def claim_notifications(
    conn: AsyncConnection, table: Table, worker: str, now: datetime, lease_until: datetime, limit: int
) -> list[Row[Any]]:
    """Take up to `limit` notifications due for sending (and ones whose sender's lease ran out) as Sending."""
    due = (
        select(table.c.id)
        .where(
            and_(
                table.c.send_after <= now,
                or_(table.c.status == NEW, and_(table.c.status == SENDING, table.c.claimed_until < now)),
            )
        )
        .order_by(table.c.send_after)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await conn.execute(
        update(table)
        .where(table.c.id.in_(due.scalar_subquery()))
        .values(
            status=SENDING,
            status_changed=now,
            claimed_by=worker,
            claimed_until=lease_until,
            attempts=table.c.attempts + 1,
        )
        .returning(*table.c)
    )
    return list(result)


async def order_templates(conn: AsyncConnection, order_ids: Sequence[UUID]) -> dict[UUID, Any]:
    result = await conn.execute(
        select(
            orders.c.id,
            orders.c.email_from_address,
            orders.c.email_subject,
            orders.c.email_body,
            orders.c.email_content_type,
            orders.c.sms_sender,
            orders.c.sms_body,
            orders.c.sms_sending_time_policy,
        ).where(orders.c.id.in_(sorted(set(order_ids))))
    )
    return {row.id: row for row in result}


async def record_outcome(
    conn: AsyncConnection, table: Table, notification_id: UUID, worker: str, values: dict[str, Any]
) -> bool:
    """Write a send outcome, only while this worker still holds the notification as Sending."""
    result = await conn.execute(
        update(table)
        .where(and_(table.c.id == notification_id, table.c.status == SENDING, table.c.claimed_by == worker))
        .values(claimed_by=None, claimed_until=None, **values)
    )
    return bool(result.rowcount == 1)


async def apply_delivery_report(
    conn: AsyncConnection, table: Table, notification_id: UUID, status: str, now: datetime
) -> UUID | None:
    """Move a notification awaiting its report to the reported status. A final status never moves again, and a
    report arriving after expiry changes nothing. Answers the order id when the status moved."""
    result = await conn.execute(
        update(table)
        .where(
            and_(
                table.c.id == notification_id,
                table.c.status == _AWAITING_REPORT[table.name],
                table.c.expiry >= now,
            )
        )
        .values(status=status, status_changed=now)
        .returning(table.c.order_id)
    )
    order_id: UUID | None = result.scalar()
    return order_id


async def expire_notifications(conn: AsyncConnection, table: Table, now: datetime, report_grace: Any) -> list[UUID]:
    """Failed_TTL for notifications past expiry: awaiting a report beyond the grace period, or never sent at all
    (New, or Sending with its sender's lease run out). Answers the affected orders."""
    result = await conn.execute(
        update(table)
        .where(
            or_(
                and_(table.c.status == _AWAITING_REPORT[table.name], table.c.expiry < now - report_grace),
                and_(table.c.status == NEW, table.c.expiry < now),
                and_(table.c.status == SENDING, table.c.expiry < now, table.c.claimed_until < now),
            )
        )
        .values(status=FAILED_TTL, status_changed=now, claimed_by=None, claimed_until=None)
        .returning(table.c.order_id)
    )
    return sorted({row.order_id for row in result})


async def next_sendable(conn: AsyncConnection, table: Table) -> datetime | None:
    result = await conn.execute(
        select(table.c.send_after).where(table.c.status.in_([NEW, SENDING])).order_by(table.c.send_after).limit(1)
    )
    return result.scalar()
