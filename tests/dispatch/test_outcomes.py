"""Recording send outcomes (`record_outcomes`): only for notifications this worker still holds as Sending, each with
the columns its outcome sets and the others kept, and with the claim cleared. A notification another worker took
over after the lease ran out, or one no longer Sending, is not touched: its outcome is that worker's to write."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from tests.conftest import NOW
from tests.dispatch.test_order_completion import _notification, _order
from varsel.db.engine import Database
from varsel.db.tables import orders, sms_notifications
from varsel.dispatch import repository

LATER = NOW + timedelta(minutes=1)
RETRY_AT = NOW + timedelta(minutes=5)


def _sending(order_id: uuid.UUID, claimed_by: str | None, status: str = "Sending") -> dict[str, Any]:
    row = _notification(order_id, status, "earlier-provider")
    row.update(claimed_by=claimed_by, claimed_until=NOW + timedelta(minutes=2), status_detail="before")
    return row


async def test_outcomes_are_written_only_for_what_this_worker_holds(database: Database) -> None:
    order = _order()
    accepted, retried, failed, taken_over, no_longer_sending = (
        _sending(order["id"], "w"),
        _sending(order["id"], "w"),
        _sending(order["id"], "w"),
        _sending(order["id"], "other-worker"),
        _sending(order["id"], None, status="New"),
    )
    rows = [accepted, retried, failed, taken_over, no_longer_sending]
    async with database.transaction() as conn:
        await conn.execute(insert(orders), [order])
        await conn.execute(insert(sms_notifications), rows)

    accepted_values = {
        "status": "Accepted",
        "status_changed": LATER,
        "provider": "linkmobility",
        "provider_reference": "ref-1",
        "status_detail": None,
    }
    # A transient failure sets no status_changed and no provider: those keep their values.
    retry_values = {"status": "New", "send_after": RETRY_AT, "status_detail": "busy"}
    failed_values = {"status": "Failed_InvalidRecipient", "status_changed": LATER, "status_detail": "bad number"}
    async with database.transaction() as conn:
        held = await repository.record_outcomes(
            conn,
            sms_notifications,
            "w",
            [
                (accepted["id"], accepted_values),
                (retried["id"], retry_values),
                (failed["id"], failed_values),
                (taken_over["id"], accepted_values),
                (no_longer_sending["id"], accepted_values),
            ],
        )
    assert held == {accepted["id"], retried["id"], failed["id"]}

    async with database.read() as conn:
        stored = {row.id: row for row in await conn.execute(select(sms_notifications))}
    for row, values in ((accepted, accepted_values), (retried, retry_values), (failed, failed_values)):
        now = stored[row["id"]]
        assert {name: getattr(now, name) for name in values} == values
        assert (now.claimed_by, now.claimed_until) == (None, None)
    kept = stored[retried["id"]]
    assert (kept.status_changed, kept.provider, kept.attempts) == (NOW, "earlier-provider", 1)
    assert stored[accepted["id"]].send_after == NOW
    for untouched in (taken_over, no_longer_sending):
        now = stored[untouched["id"]]
        assert (now.status, now.claimed_by, now.status_detail) == (
            untouched["status"],
            untouched["claimed_by"],
            "before",
        )
