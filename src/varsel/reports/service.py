"""Delivery reports: matched to their notification and applied once; kept whatever becomes of them.

A report is applied only to a notification awaiting one (Succeeded email, Accepted SMS) and not past its expiry,
through the same guarded update the senders use, so a report twice changes nothing and a final status never moves
back. A report that names no notification we know, or one whose send is not yet recorded (a fast provider can
report before our own write of its answer commits), is pending: retried for a while, then dead, for an operator.

Reports are stored and retried in batches of BATCH, each a short transaction of its own (those naming no
notification cost no query each), and after each batch a request or the retrying worker pauses as long as the
batch took. However many reports come at once (a provider replaying a backlog, or someone posting 10,000 unknown
references) and however many stay pending, each leaves the database's write lock free at least half the time, and
order intake, which on SQLite needs that one lock too, never waits long for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.tables import NOTIFICATION_TABLES
from varsel.dispatch import repository as dispatch_repository
from varsel.ids import new_id
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.observability import Telemetry
from varsel.providers.base import DeliveryReport
from varsel.reports import repository
from varsel.webhooks import outbox
from varsel.webhooks.events import NotificationChange

log = logging.getLogger("varsel.reports")

_AWAITING = {"email": EmailStatus.SUCCEEDED.value, "sms": SmsStatus.ACCEPTED.value}
_NOT_YET_SENT = {dispatch_repository.NEW, dispatch_repository.SENDING}
# Reports stored, or retried, in one transaction: a few milliseconds of the write lock.
BATCH = 100


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


async def _naming_nothing(conn: AsyncConnection, channel: str, named: Sequence[tuple[str, str | None]]) -> list[bool]:
    """For each (reference, provider reference), whether it names no notification, as find_notification would look
    it up: such reports are pending without a query each."""
    ids = {uuid for reference, _ in named if (uuid := _as_uuid(reference)) is not None}
    references = {provider_reference for _, provider_reference in named if provider_reference}
    known_ids, known_references = await repository.known_references(conn, NOTIFICATION_TABLES[channel], ids, references)
    return [
        _as_uuid(reference) not in known_ids and not (provider_reference and provider_reference in known_references)
        for reference, provider_reference in named
    ]


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
        # The event loop's time before which the next round of retries waits (see run_once).
        self._rested_at = 0.0

    async def receive(self, channel: str, provider: str, reports: Sequence[DeliveryReport]) -> list[ReportState]:
        """Store and apply a provider's reports; answers what became of each.

        In batches of BATCH, each in a transaction of its own and after a pause as long as the batch before took.
        A request that fails half way is posted again by the provider: the reports already stored are then kept
        twice, the second time as duplicates, for a report applied twice changes nothing."""
        loop = asyncio.get_running_loop()
        states: list[ReportState] = []
        took = 0.0
        for start in range(0, len(reports), BATCH):
            if start:
                await asyncio.sleep(took)
            began = loop.time()
            states += await self._receive(channel, provider, reports[start : start + BATCH])
            took = loop.time() - began
        return states

    async def _receive(self, channel: str, provider: str, reports: Sequence[DeliveryReport]) -> list[ReportState]:
        if not reports:
            return []
        now = self._clock.now()
        rows: list[dict[str, Any]] = []
        matches: list[_Match] = []
        async with self._db.transaction() as conn:
            unknown = await _naming_nothing(conn, channel, [(r.notification_id, r.provider_reference) for r in reports])
            for report, naming_nothing in zip(reports, unknown, strict=True):
                if naming_nothing:
                    match = _Match(ReportState.PENDING)
                else:
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
            told = [(match, channel, row["status"]) for match, row in zip(matches, rows, strict=True)]
            await self._tell(conn, told, now)
            completed = await self._complete(conn, matches, now)
        self._log(channel, zip(matches, (row["status"] for row in rows), strict=True), completed)
        return [match.state for match in matches]

    async def run_once(self, limit: int = BATCH) -> int:
        """Try one batch of pending reports again; those still unmatched past their retry window become dead.

        The worker calls this again at once while reports are due, so a round first waits as long as the round
        before held its transaction: a backlog of pending reports then leaves the write lock free half the time."""
        loop = asyncio.get_running_loop()
        if (pause := self._rested_at - loop.time()) > 0:
            await asyncio.sleep(pause)
        began = loop.time()
        try:
            return await self._retry_pending(limit)
        finally:
            ended = loop.time()
            self._rested_at = ended + (ended - began)

    async def _retry_pending(self, limit: int) -> int:
        now = self._clock.now()
        tried: list[tuple[_Match, str, str]] = []
        # Reports still naming no notification are updated alike, in one statement each way.
        still_pending: list[UUID] = []
        dead: list[Any] = []
        async with self._db.transaction() as conn:
            due = await repository.claim_pending(conn, now, limit)
            unknown: set[UUID] = set()
            for channel in {report.channel for report in due}:
                of_channel = [report for report in due if report.channel == channel]
                naming_nothing = await _naming_nothing(
                    conn, channel, [(report.reference, report.provider_reference) for report in of_channel]
                )
                unknown.update(report.id for report, nothing in zip(of_channel, naming_nothing, strict=True) if nothing)
            for report in due:
                if report.id in unknown:
                    match = _Match(ReportState.PENDING)
                else:
                    # Judged by when it arrived: a report that came in time but waited for our own record of the
                    # hand-over still counts, though the notification expired meanwhile.
                    match = await self._apply(conn, report.channel, report.reference, report.provider_reference,
                                              report.status, now, arrived=report.received)  # fmt: skip
                if match.state is ReportState.PENDING and report.retry_until is not None and now >= report.retry_until:
                    match = _Match(ReportState.DEAD)
                tried.append((match, report.channel, report.status))
                if match.notification_id is None and match.state is ReportState.PENDING:
                    still_pending.append(report.id)
                elif match.state is ReportState.DEAD:
                    dead.append(report)
                else:
                    still = match.state is ReportState.PENDING
                    await repository.update_report(
                        conn,
                        report.id,
                        {
                            "state": match.state.value,
                            "notification_id": match.notification_id,
                            "attempts": report.attempts + 1,
                            "next_attempt": now + self._retry if still else None,
                            "resolved": None if still else now,
                        },
                    )
            await repository.tried_again(conn, still_pending, {"next_attempt": now + self._retry})
            await repository.tried_again(
                conn,
                [report.id for report in dead],
                {"state": ReportState.DEAD.value, "notification_id": None, "next_attempt": None, "resolved": now},
            )
            await self._tell(conn, tried, now)
            completed = await self._complete(conn, [match for match, _, _ in tried], now)
        if dead:
            log.warning(
                "%d delivery reports matched no notification in time and are dead (`varsel reports dead` lists "
                "them), among them %s",
                len(dead),
                ", ".join(f"{report.channel} from {report.provider} for {report.reference!r}" for report in dead[:3]),
            )
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

    async def page(self, state: ReportState, before: tuple[datetime, UUID] | None = None, limit: int = 50) -> list[Any]:
        """Dead or pending reports, newest first, a page at a time (keyset: pass the last row's received and id)."""
        async with self._db.read() as conn:
            return await repository.reports_page(conn, state.value, before, limit)

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
        table: Table = NOTIFICATION_TABLES[channel]
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

    @staticmethod
    async def _tell(conn: AsyncConnection, matches: Iterable[tuple[_Match, str, str]], now: datetime) -> None:
        """The webhook events of the reports applied (match, channel, reported status: each moved its notification
        to that status), before the orders' (complete_orders writes those with the feed)."""
        await outbox.write_notification_changes(
            conn,
            [
                NotificationChange(channel, match.notification_id, match.previous, status, now)
                for match, channel, status in matches
                if match.state is ReportState.APPLIED and match.notification_id is not None
            ],
        )

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
