"""From an order and its looked-up recipients to notification rows (a pure function: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from varsel.dispatch.segments import sms_segments
from varsel.dispatch.window import DAYTIME, DaytimeWindow
from varsel.ids import new_id
from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.repository import StoredOrder
from varsel.orders.vocabulary import EmailContentType, NotificationChannel
from varsel.recipients.keywords import has_keywords, render, render_subject
from varsel.recipients.lookup import LookupResult, Medium, Outcome, ResolvedRecipient


@dataclass
class GeneratedNotifications:
    email: list[dict[str, Any]] = field(default_factory=list)
    sms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return any(row["status"] == "New" for row in (*self.email, *self.sms))


def generate(
    order: StoredOrder,
    lookup: LookupResult,
    now: datetime,
    expiry: timedelta,
    sms_window: DaytimeWindow | None = DAYTIME,
) -> GeneratedNotifications:
    """One row per address; a reserved or unreachable recipient gets one failed row, so the sender sees it.

    SMS wait for `sms_window` to open; None (an order whose policy is Anytime) sends them at once.
    """
    out = GeneratedNotifications()
    email_first = (
        order.channel is not NotificationChannel.SMS and order.channel is not NotificationChannel.SMS_PREFERRED
    )
    sms_send_after = sms_window.next_send(now) if sms_window is not None else now
    for resolved in lookup.recipients:
        base = {
            "order_id": order.id,
            "creator": order.creator,
            "national_identity_number": resolved.recipient.national_identity_number,
            "organization_number": resolved.recipient.organization_number,
            "external_identity": resolved.recipient.external_identity,
            "recipient_name": resolved.name,
            "is_reserved": _reserved_flag(resolved),
            "created": now,
            "status_changed": now,
        }
        if resolved.outcome in (Outcome.RESERVED, Outcome.MISSING_CONTACT):
            reserved = resolved.outcome is Outcome.RESERVED
            if email_first:
                status = (
                    EmailStatus.FAILED_RECIPIENT_RESERVED if reserved else EmailStatus.FAILED_RECIPIENT_NOT_IDENTIFIED
                )
                out.email.append({**base, "id": new_id(), "status": status.value, "send_after": now,
                                  "expiry": now + expiry})  # fmt: skip
            else:
                sms_status = (
                    SmsStatus.FAILED_RECIPIENT_RESERVED if reserved else SmsStatus.FAILED_RECIPIENT_NOT_IDENTIFIED
                )
                out.sms.append({**base, "id": new_id(), "status": sms_status.value, "send_after": now,
                                "expiry": now + expiry})  # fmt: skip
            continue
        for address in resolved.addresses:
            if address.medium is Medium.EMAIL:
                out.email.append(_email_row(order, resolved, base, address.address, now, expiry))
            else:
                out.sms.append(_sms_row(order, resolved, base, address.address, sms_send_after, expiry))
    return out


def _reserved_flag(resolved: ResolvedRecipient) -> bool | None:
    if resolved.recipient.national_identity_number is None:
        return None
    return resolved.outcome is Outcome.RESERVED


def _email_row(
    order: StoredOrder,
    resolved: ResolvedRecipient,
    base: dict[str, Any],
    address: str,
    now: datetime,
    expiry: timedelta,
) -> dict[str, Any]:
    template = order.email_template
    assert template is not None  # validation guarantees a template for every channel that makes emails
    subject = body = None
    # Rendered copies only where the template has keywords: most orders send one text to everyone.
    if has_keywords(template.subject):
        subject = render_subject(template.subject, name=resolved.name, number=resolved.number)
    if has_keywords(template.body):
        html_body = template.content_type is EmailContentType.HTML
        body = render(template.body, name=resolved.name, number=resolved.number, html_body=html_body)
    return {
        **base,
        "id": new_id(),
        "email_address": address,
        "subject": subject,
        "body": body,
        "status": EmailStatus.NEW.value,
        "send_after": now,
        "expiry": max(now, order.requested_send_time) + expiry,
    }


def _sms_row(
    order: StoredOrder,
    resolved: ResolvedRecipient,
    base: dict[str, Any],
    address: str,
    send_after: datetime,
    expiry: timedelta,
) -> dict[str, Any]:
    template = order.sms_template
    assert template is not None
    body = render(template.body, name=resolved.name, number=resolved.number) if has_keywords(template.body) else None
    return {
        **base,
        "id": new_id(),
        "mobile_number": address,
        "body": body,
        "segments": sms_segments(body if body is not None else template.body),
        "status": SmsStatus.NEW.value,
        "send_after": send_after,
        # A Daytime SMS waiting for the window gets its 48 hours from the opening it waits for.
        "expiry": max(send_after, order.requested_send_time) + expiry,
    }


def undeliverable(order: StoredOrder, now: datetime, reason: str) -> GeneratedNotifications:
    """An order that could not be processed before its notifications would have expired: one Failed row per
    recipient, saying why, so the order ends and its owner sees what happened to each recipient."""
    out = GeneratedNotifications()
    email_first = (
        order.channel is not NotificationChannel.SMS and order.channel is not NotificationChannel.SMS_PREFERRED
    )
    for recipient in order.recipients:
        base = {
            "id": new_id(),
            "order_id": order.id,
            "creator": order.creator,
            "national_identity_number": recipient.national_identity_number,
            "organization_number": recipient.organization_number,
            "external_identity": recipient.external_identity,
            "created": now,
            "status_changed": now,
            "send_after": now,
            "expiry": now,
            "status_detail": reason,
        }
        as_email = recipient.email_address is not None or (email_first and recipient.mobile_number is None)
        if as_email:
            out.email.append({**base, "email_address": recipient.email_address, "status": EmailStatus.FAILED.value})
        else:
            out.sms.append({**base, "mobile_number": recipient.mobile_number, "status": SmsStatus.FAILED.value})
    return out
