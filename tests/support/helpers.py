"""Rows for the support and usage tests, written straight to the real database (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from tests.conftest import NOW
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, orders, sms_notifications

SUPPORT_SCOPE = "altinn:notifications.support.admin"
NIN = "01017012345"
ORG_NUMBER = "910000001"


def order(creator: str = "ttd", requested: datetime = NOW, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "creator": creator,
        "notification_channel": "EmailPreferred",
        "requested_send_time": requested,
        "created": requested,
        "status": "Completed",
        "status_changed": requested,
        "process_after": requested,
        "senders_reference": None,
        "resource_id": None,
        "order_type": "Notification",
        "sms_body": "Hello from the template",
    }
    row.update(overrides)
    return row


def _notification(owner: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    changed = overrides.pop("changed", owner["requested_send_time"])
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "order_id": owner["id"],
        "creator": owner["creator"],
        "national_identity_number": None,
        "organization_number": None,
        "status": "Delivered",
        "status_changed": changed,
        "created": owner["requested_send_time"],
        "expiry": owner["requested_send_time"] + timedelta(days=2),
        "send_after": owner["requested_send_time"],
        "provider_reference": None,
    }
    row.update(overrides)
    return row


def email(owner: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return _notification(owner, **{"email_address": "ola@example.com", **overrides})


def sms(owner: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return _notification(owner, **{"mobile_number": "+4799999999", "segments": 1, "body": None, **overrides})


async def seed(
    database: Database,
    order_rows: list[dict[str, Any]],
    email_rows: list[dict[str, Any]] | None = None,
    sms_rows: list[dict[str, Any]] | None = None,
) -> None:
    async with database.transaction() as conn:
        if order_rows:
            await conn.execute(insert(orders), order_rows)
        if email_rows:
            await conn.execute(insert(email_notifications), email_rows)
        if sms_rows:
            await conn.execute(insert(sms_notifications), sms_rows)
