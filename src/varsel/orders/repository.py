"""SQL for orders and their recipients. Functions run inside a transaction their caller owns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import order_recipients, orders
from varsel.notifications.statuses import OrderStatus
from varsel.orders.drafts import EmailTemplateSpec, OrderDraft, RecipientSpec, SmsTemplateSpec
from varsel.orders.vocabulary import EmailContentType, NotificationChannel, OrderType


@dataclass(frozen=True)
class StoredOrder:
    id: UUID
    creator: str
    senders_reference: str | None
    channel: NotificationChannel
    requested_send_time: datetime
    created: datetime
    ignore_reservation: bool | None
    resource_id: str | None
    resource_action: str | None
    condition_endpoint: str | None
    status: OrderStatus
    status_changed: datetime
    email_template: EmailTemplateSpec | None
    sms_template: SmsTemplateSpec | None
    recipients: tuple[RecipientSpec, ...]
    processing_attempts: int = 0
    # "Daytime": SMS only between 09:00 and 17:00 Oslo time (every v1 order); "Anytime": at once.
    sms_sending_time_policy: str = "Daytime"
    order_type: OrderType = OrderType.NOTIFICATION
    # A person's contact details confirmed over 18 months ago count as absent unless this is set (v2).
    use_stale_contact_information: bool = False
    # When a Registered order is next taken up: its requested send time, or the time of a retry.
    process_after: datetime | None = None
    # The order's fallbackAfterMinutes (varsel.dispatch.fallback); None when it gave none.
    fallback_after_minutes: int | None = None


def order_row(order_id: UUID, creator: str, draft: OrderDraft, now: datetime) -> dict[str, Any]:
    """The orders row of a new order, for insert_orders."""
    email, sms = draft.email_template, draft.sms_template
    return {
        "id": order_id,
        "creator": creator,
        "senders_reference": draft.senders_reference,
        "notification_channel": draft.channel.value,
        "requested_send_time": draft.requested_send_time,
        "created": now,
        "ignore_reservation": draft.ignore_reservation,
        "resource_id": draft.resource_id,
        "resource_action": draft.resource_action,
        "condition_endpoint": draft.condition_endpoint,
        "status": OrderStatus.REGISTERED.value,
        "status_changed": now,
        "email_from_address": email.from_address if email else None,
        "email_subject": email.subject if email else None,
        "email_body": email.body if email else None,
        "email_content_type": email.content_type.value if email else None,
        "sms_sender": sms.sender if sms else None,
        "sms_body": sms.body if sms else None,
        "sms_sending_time_policy": "Daytime",
        "process_after": draft.requested_send_time,
        "attachments": [{"filename": a.filename, "mimeType": a.mime_type, "url": a.url} for a in draft.attachments]
        or None,
        "fallback_after_minutes": draft.fallback_after_minutes,
    }


def recipient_rows(order_id: UUID, draft: OrderDraft) -> list[dict[str, Any]]:
    """The order_recipients rows of a new order, in the order's own order, for insert_orders."""
    return [
        {
            "order_id": order_id,
            "position": position,
            "email_address": r.email_address,
            "mobile_number": r.mobile_number,
            "national_identity_number": r.national_identity_number,
            "organization_number": r.organization_number,
        }
        for position, r in enumerate(draft.recipients)
    ]


# Built once: a statement built per call costs more than the insert itself (SQLAlchemy coerces every value into a
# bind parameter and computes a cache key), while one built once is compiled once and then only bound.
_INSERT_ORDERS = insert(orders)
_INSERT_RECIPIENTS = insert(order_recipients)


async def insert_orders(
    conn: AsyncConnection, order_rows: list[dict[str, Any]], recipients: list[dict[str, Any]]
) -> None:
    """Insert new orders and their recipients (rows from order_row and recipient_rows), two statements in all."""
    await conn.execute(_INSERT_ORDERS, order_rows)
    if recipients:
        await conn.execute(_INSERT_RECIPIENTS, recipients)


def _order(row: Any, recipients: tuple[RecipientSpec, ...]) -> StoredOrder:
    email = None
    if row.email_body is not None:
        email = EmailTemplateSpec(
            row.email_from_address, row.email_subject, row.email_body, EmailContentType(row.email_content_type)
        )
    sms = SmsTemplateSpec(row.sms_sender, row.sms_body) if row.sms_body is not None else None
    return StoredOrder(
        id=row.id,
        creator=row.creator,
        senders_reference=row.senders_reference,
        channel=NotificationChannel(row.notification_channel),
        requested_send_time=row.requested_send_time,
        created=row.created,
        ignore_reservation=row.ignore_reservation,
        resource_id=row.resource_id,
        resource_action=row.resource_action,
        condition_endpoint=row.condition_endpoint,
        status=OrderStatus(row.status),
        status_changed=row.status_changed,
        email_template=email,
        sms_template=sms,
        recipients=recipients,
        processing_attempts=row.processing_attempts,
        sms_sending_time_policy=row.sms_sending_time_policy,
        order_type=OrderType(row.order_type),
        use_stale_contact_information=bool(row.use_stale_contact_information),
        process_after=row.process_after,
        fallback_after_minutes=row.fallback_after_minutes,
    )


async def _recipients_of(conn: AsyncConnection, order_ids: list[UUID]) -> dict[UUID, list[RecipientSpec]]:
    found: dict[UUID, list[RecipientSpec]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return found
    result = await conn.execute(
        select(order_recipients)
        .where(order_recipients.c.order_id.in_(order_ids))
        .order_by(order_recipients.c.order_id, order_recipients.c.position)
    )
    for row in result:
        found[row.order_id].append(
            RecipientSpec(
                row.email_address,
                row.mobile_number,
                row.national_identity_number,
                row.organization_number,
                row.external_identity,
            )
        )
    return found


async def get_order(
    conn: AsyncConnection, order_id: UUID, creator: str, *, with_recipients: bool = True
) -> StoredOrder | None:
    """The creator's order, or None: another creator's order is as good as absent. Without recipients when the
    answer does not show them: an order may have ten thousand."""
    row = (await conn.execute(select(orders).where(and_(orders.c.id == order_id, orders.c.creator == creator)))).first()
    if row is None:
        return None
    recipients = (await _recipients_of(conn, [order_id]))[order_id] if with_recipients else []
    return _order(row, tuple(recipients))


async def find_orders(conn: AsyncConnection, creator: str, senders_reference: str, limit: int) -> list[StoredOrder]:
    rows = (
        await conn.execute(
            select(orders)
            .where(and_(orders.c.creator == creator, orders.c.senders_reference == senders_reference))
            .order_by(orders.c.created, orders.c.id)
            .limit(limit)
        )
    ).all()
    recipients = await _recipients_of(conn, [row.id for row in rows])
    return [_order(row, tuple(recipients[row.id])) for row in rows]


async def cancel_order(
    conn: AsyncConnection, order_id: UUID, creator: str, now: datetime, send_time_after: datetime
) -> bool:
    """Cancel if still Registered and not due before `send_time_after`; guarded, so a worker's claim wins cleanly."""
    result = await conn.execute(
        update(orders)
        .where(
            and_(
                orders.c.id == order_id,
                orders.c.creator == creator,
                orders.c.status == OrderStatus.REGISTERED.value,
                orders.c.requested_send_time > send_time_after,
            )
        )
        .values(status=OrderStatus.CANCELLED.value, status_changed=now)
    )
    return bool(result.rowcount == 1)


async def load_orders(
    conn: AsyncConnection, order_ids: list[UUID], *, with_recipients: bool = True
) -> list[StoredOrder]:
    """Orders by id, whoever created them: for the workers, never for an endpoint. Without recipients when the
    worker reads those it needs itself: an order may have ten thousand."""
    if not order_ids:
        return []
    rows = (await conn.execute(select(orders).where(orders.c.id.in_(order_ids)))).all()
    if not with_recipients:
        return [_order(row, ()) for row in rows]
    recipients = await _recipients_of(conn, [row.id for row in rows])
    return [_order(row, tuple(recipients[row.id])) for row in rows]
