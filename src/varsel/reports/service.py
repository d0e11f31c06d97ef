"""Delivery reports: matched to their notification and applied once; kept whatever becomes of them.

A report is applied only to a notification awaiting one (Succeeded email, Accepted SMS) and not past its expiry,
through the same guarded update the senders use, so a report twice changes nothing and a final status never moves
back. A report that names no notification we know, or one whose send is not yet recorded (a fast provider can
report before our own write of its answer commits), is pending: retried for a while, then dead, for an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, sms_notifications
from varsel.dispatch import repository as dispatch_repository
from varsel.ids import new_id
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.observability import Telemetry
from varsel.providers.base import DeliveryReport
from varsel.reports import repository

log = logging.getLogger("varsel.reports")

_AWAITING = {"email": EmailStatus.SUCCEEDED.value, "sms": SmsStatus.ACCEPTED.value}
_TABLES = {"email": email_notifications, "sms": sms_notifications}
_NOT_YET_SENT = {dispatch_repository.NEW, dispatch_repository.SENDING}


class ReportState(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    LATE = "late"
    SUPERSEDED = "superseded"
    PENDING = "pending"
    DEAD = "dead"


@dataclass(frozen=True)
class _Match:
    state: ReportState
    notification_id: UUID | None = None
    order_id: UUID | None = None
    previous: str | None = None


def _as_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


class DeliveryReports:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        telemetry: Telemetry,
        retry_seconds: float,
        retry_window: timedelta,
    ) -> None:
        self._db = database
        self._clock = clock
        self._telemetry = telemetry
        self._retry = timedelta(seconds=retry_seconds)
        self._window = retry_window

    async def receive(self, channel: str, provider: str, reports: Sequence[DeliveryReport]) -> list[ReportState]:
        """Store and apply a provider's reports, all in one transaction; answers what became of each."""
        if not reports:
            return []
        now = self._clock.now()
        rows: list[dict[str, Any]] = []
        matches: list[_Match] = []
        async with self._db.transaction() as conn:
            for report in reports:
                match = await self._apply(conn, channel, report.notification_id, report.provider_reference,
                                          report.status.value, now)  # fmt: skip
                matches.append(match)
                pending = match.state is ReportState.PENDING
                rows.append(
                    {
                        "id": new_id(),
                        "channel": channel,
                        "provider": provider,
                        "reference": report.notification_id[:200],
                        "provider_reference": (report.provider_reference or None) and report.provider_reference[:200],
                        "notification_id": match.notification_id,
                        "status": report.status.value,
                        "detail": report.detail,
                        "occurred": report.occurred,
                        "received": now,
                        "state": match.state.value,
                        "attempts": 1,
                        "next_attempt": now + self._retry if pending else None,
                        "retry_until": now + self._window if pending else None,
                        "resolved": None if pending else now,
                    }
                )
            await repository.insert_reports(conn, rows)
            completed = await self._complete(conn, matches, now)
        self._log(channel, zip(matches, (row["status"] for row in rows), strict=True), completed)
        return [match.state for match in matches]

    async def run_once(self, limit: int = 500) -> int:
        """Try pending reports again; those still unmatched past their retry window become dead."""
        now = self._clock.now()
        tried: list[tuple[_Match, str, str]] = []
        async with self._db.transaction() as conn:
            due = await repository.claim_pending(conn, now, limit)
            for report in due:
                # Judged by when it arrived: a report that came in time but waited for our own record of the
                # hand-over still counts, though the notification expired meanwhile.
                match = await self._apply(conn, report.channel, report.reference, report.provider_reference,
                                          report.status, now, arrived=report.received)  # fmt: skip
                if match.state is ReportState.PENDING and report.retry_until is not None and now >= report.retry_until:
                    match = _Match(ReportState.DEAD)
                    log.warning(
                        "%s delivery report from %s for %r matched no notification in time: dead",
                        report.channel,
                        report.provider,
                        report.reference,
                    )
                still_pending = match.state is ReportState.PENDING
                await repository.update_report(
                    conn,
                    report.id,
                    {
                        "state": match.state.value,
                        "notification_id": match.notification_id,
                        "attempts": report.attempts + 1,
                        "next_attempt": now + self._retry if still_pending else None,
                        "resolved": None if still_pending else now,
                    },
                )
                tried.append((match, report.channel, report.status))
            completed = await self._complete(conn, [match for match, _, _ in tried], now)
        for match, channel, status in tried:
            self._log(channel, [(match, status)], [])
        self._telemetry.transitions_of("order", completed, OrderStatus.PROCESSED.value, OrderStatus.COMPLETED.value)
        return len(due)

    async def next_due(self) -> datetime | None:
        async with self._db.read() as conn:
            return await repository.next_pending(conn)

    async def dead(self, limit: int = 1000) -> list[Any]:
        async with self._db.read() as conn:
            return await repository.reports_in_state(conn, ReportState.DEAD.value, limit)

    async def retry(self, ids: Sequence[UUID] | None) -> int:
        """Dead reports (all, or these) are tried again now, and for another retry window."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            return await repository.revive_dead(conn, ids, now, now + self._window)

    async def _apply(
        self,
        conn: AsyncConnection,
        channel: str,
        reference: str,
        provider_reference: str | None,
        status: str,
        now: datetime,
        arrived: datetime | None = None,
    ) -> _Match:
        arrived = arrived or now
        table: Table = _TABLES[channel]
        found = await repository.find_notification(conn, table, _as_uuid(reference), provider_reference)
        if found is None:
            return _Match(ReportState.PENDING)
        match = _Match(ReportState.PENDING, found.id, found.order_id, found.status)
        if found.status in _NOT_YET_SENT:
            return match  # our own record of the hand-over has not landed yet
        if found.status == status:
            return _Match(ReportState.DUPLICATE, found.id, found.order_id, found.status)
        if found.status != _AWAITING[channel]:
            state = ReportState.LATE if found.status == dispatch_repository.FAILED_TTL else ReportState.SUPERSEDED
            return _Match(state, found.id, found.order_id, found.status)
        if found.expiry < arrived:
            return _Match(ReportState.LATE, found.id, found.order_id, found.status)
        if await dispatch_repository.apply_delivery_report(conn, table, found.id, status, now, arrived) is None:
            # Moved by someone else since we looked (the same report posted twice at once, another report, the
            # sweeper): this one changes nothing. Which of those it was decides what it is called.
            again = await repository.find_notification(conn, table, found.id, None)
            state = ReportState.DUPLICATE if again is not None and again.status == status else ReportState.SUPERSEDED
            return _Match(state, found.id, found.order_id, found.status)
        return _Match(ReportState.APPLIED, found.id, found.order_id, found.status)

    async def _complete(self, conn: AsyncConnection, matches: Sequence[_Match], now: datetime) -> list[UUID]:
        orders = sorted({m.order_id for m in matches if m.state is ReportState.APPLIED and m.order_id is not None})
        return await dispatch_repository.complete_orders(conn, orders, now)

    def _log(self, channel: str, matches: Any, completed: Sequence[UUID]) -> None:
        for match, status in matches:
            if match.state is ReportState.APPLIED and match.notification_id is not None:
                self._telemetry.transition(
                    channel, match.notification_id, match.previous, status, order=match.order_id, via="report"
                )
            self._telemetry.reports.labels(channel, match.state.value).inc()
        self._telemetry.transitions_of("order", completed, OrderStatus.PROCESSED.value, OrderStatus.COMPLETED.value)
