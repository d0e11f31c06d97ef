"""Delivery report rows as varsel stores them, for the console's report tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from tests.conftest import NOW
from varsel.db.engine import Database
from varsel.db.tables import delivery_reports
from varsel.reports import repository


def report_row(state: str = "dead", received: datetime = NOW, **overrides: Any) -> dict[str, Any]:
    pending = state == "pending"
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "channel": "sms",
        "provider": "linkmobility",
        "reference": f"ref-{uuid.uuid4().hex[:12]}",
        "provider_reference": f"lm-{uuid.uuid4().hex[:8]}",
        "notification_id": None,
        "status": "Delivered",
        "detail": None,
        "occurred": received,
        "received": received,
        "state": state,
        "attempts": 3,
        "next_attempt": received + timedelta(seconds=5) if pending else None,
        "retry_until": received + timedelta(minutes=10) if pending else None,
        "resolved": None if pending else received + timedelta(minutes=10),
    }
    row.update(overrides)
    return row


async def store_reports(database: Database, *rows: dict[str, Any]) -> None:
    async with database.transaction() as conn:
        await repository.insert_reports(conn, list(rows))


async def state_of(database: Database, report_id: uuid.UUID) -> str:
    async with database.read() as conn:
        state = (
            await conn.execute(select(delivery_reports.c.state).where(delivery_reports.c.id == report_id))
        ).scalar()
    return str(state)
