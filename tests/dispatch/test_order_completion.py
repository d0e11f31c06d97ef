"""When an order is completed: the senders ask the database only about orders whose notification reached a final
status (`leaves_pending`), so that rule must agree with the database's own (`complete_orders`) for every status and
provider."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from tests.conftest import NOW
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, orders, sms_notifications
from varsel.dispatch import repository
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus

PROVIDERS = (None, "smtp", "acs", "linkmobility", "outbox")


def _order(status: str = OrderStatus.PROCESSED.value, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "creator": "ttd",
        "notification_channel": "Email",
        "requested_send_time": NOW,
        "created": NOW,
        "status": status,
        "status_changed": NOW,
        "process_after": NOW,
    }
    row.update(overrides)
    return row


def _notification(order_id: uuid.UUID, status: str, provider: str | None) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "order_id": order_id,
        "creator": "ttd",
        "status": status,
        "status_changed": NOW,
        "created": NOW,
        "expiry": NOW + timedelta(days=2),
        "send_after": NOW,
        "attempts": 1,
        "provider": provider,
    }


async def test_leaves_pending_agrees_with_what_completes_an_order(database: Database) -> None:
    expected: dict[uuid.UUID, tuple[str, str, str | None]] = {}
    order_rows: list[dict[str, Any]] = []
    rows: dict[str, list[dict[str, Any]]] = {email_notifications.name: [], sms_notifications.name: []}
    for table, statuses in ((email_notifications, list(EmailStatus)), (sms_notifications, list(SmsStatus))):
        for status in statuses:
            for provider in PROVIDERS:
                order = _order()
                order_rows.append(order)
                rows[table.name].append(_notification(order["id"], status.value, provider))
                expected[order["id"]] = (table.name, status.value, provider)
    async with database.transaction() as conn:
        await conn.execute(insert(orders), order_rows)
        for table in (email_notifications, sms_notifications):
            await conn.execute(insert(table), rows[table.name])
        completed = set(await repository.complete_orders(conn, list(expected), NOW))

    tables = {email_notifications.name: email_notifications, sms_notifications.name: sms_notifications}
    disagreements = [
        (name, status, provider)
        for order_id, (name, status, provider) in expected.items()
        if repository.leaves_pending(tables[name], status, provider) == (order_id in completed)
    ]
    assert disagreements == []
    # Both outcomes occur, so the comparison above tests something.
    assert completed
    assert len(completed) < len(expected)
