"""A simulated delivery report is not lost when the process stops between the hand-over and the report, on SQLite
and PostgreSQL: the simulator writes it (pending) before it answers the sender, and the notification whose hand-over
was never recorded is handed over again when its lease runs out, as any other.

The worker that "stops" is played by claiming the notification under a worker name nobody runs and handing its
message to the simulator, as that worker's sender would, then never recording the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import delivery_reports, email_notifications
from varsel.dispatch import repository
from varsel.orders.vocabulary import EmailContentType
from varsel.providers.base import EmailMessage
from varsel.providers.simulator import Simulator

Auth = Callable[..., dict[str, str]]
LEASE = timedelta(seconds=120)  # VARSEL_DISPATCH__LEASE_SECONDS's default


async def _reports(varsel: Varsel) -> list[Any]:
    async with varsel.database.read() as conn:
        return list(await conn.execute(select(delivery_reports).order_by(delivery_reports.c.received)))


async def _notification(varsel: Varsel) -> Any:
    async with varsel.database.read() as conn:
        return (await conn.execute(select(email_notifications))).one()


async def test_a_report_written_before_a_crash_is_applied_once_the_notification_is_handed_over_again(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    body = {"subject": "S", "body": "B", "recipients": [{"emailAddress": "bounced@simulator.invalid"}]}
    response = await client.post("/notifications/api/v1/orders/email", json=body, headers=auth())
    assert response.status_code == 202, response.text
    assert await varsel.workers.processor.run_once() == 1

    # A worker claims the notification, its sender hands the message to the simulator, and the process stops.
    now = clock.now()
    async with varsel.database.transaction() as conn:
        [row] = await repository.claim_notifications(conn, email_notifications, "gone", now, now + LEASE, 10)
    message = EmailMessage(row.id, "noreply@varsel.example", row.email_address, "S", "B", EmailContentType.PLAIN)
    await Simulator(varsel.reports.receive, clock).send_email(message, row.attempts)

    [report] = await _reports(varsel)
    assert (report.provider, report.status, report.state) == ("simulator", "Failed_Bounced", "pending")
    assert report.notification_id == row.id

    # The workers of the process that takes over: the report waits while the hand-over is unrecorded.
    clock.advance(timedelta(seconds=5))
    await varsel.workers.drain()
    assert (await _notification(varsel)).status == "Sending"
    assert [r.state for r in await _reports(varsel)] == ["pending"]

    # The lease runs out: handed over again (a second report), recorded, and the first report applies.
    clock.advance(LEASE)
    await varsel.workers.drain()
    clock.advance(timedelta(seconds=5))
    await varsel.workers.drain()
    notification = await _notification(varsel)
    assert (notification.status, notification.provider, notification.attempts) == ("Failed_Bounced", "simulator", 2)
    assert [(r.status, r.state) for r in await _reports(varsel)] == [
        ("Failed_Bounced", "applied"),
        ("Failed_Bounced", "duplicate"),
    ]
