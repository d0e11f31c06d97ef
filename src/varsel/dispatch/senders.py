"""The senders: claim New notifications, let go of the database, hand each to the provider, record the outcome.

One sender per channel. Outcomes of a batch are written in one transaction; transient failures go back to New
with a backoff; a provider that reports delivery at once (the outbox) moves the notification on to Delivered
through the same guarded update that delivery reports use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Table

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, sms_notifications
from varsel.dispatch import repository
from varsel.dispatch.wakeup import Wakeups
from varsel.dispatch.window import next_daytime_send
from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.models import EmailContentType
from varsel.providers.base import (
    Accepted,
    EmailMessage,
    EmailProvider,
    PermanentEmailError,
    PermanentSmsError,
    SmsMessage,
    SmsProvider,
    TransientProviderError,
)
from varsel.settings import DispatchSettings

log = logging.getLogger("varsel.dispatch")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient provider failures."""

    first_seconds: float
    max_seconds: float

    def delay(self, attempts: int, retry_after: float | None = None) -> timedelta:
        backoff = min(self.max_seconds, self.first_seconds * 2 ** max(0, attempts - 1))
        return timedelta(seconds=max(backoff, retry_after or 0.0))


@dataclass(frozen=True)
class _Outcome:
    notification_id: UUID
    order_id: UUID
    values: dict[str, Any]
    delivered: bool = False


class Sender:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        table: Table,
        send: Callable[[Any, Any, datetime], Any],
        provider_name: str,
        concurrency: int,
        settings: DispatchSettings,
        worker: str,
    ) -> None:
        self._db = database
        self._clock = clock
        self._table = table
        self._send = send
        self._provider_name = provider_name
        self._gate = asyncio.Semaphore(concurrency)
        self._settings = settings
        self._worker = worker
        self._retry = RetryPolicy(settings.retry_first_seconds, settings.retry_max_seconds)

    @property
    def table(self) -> Table:
        return self._table

    async def run_once(self) -> int:
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        async with self._db.transaction() as conn:
            claimed = await repository.claim_notifications(
                conn, self._table, self._worker, now, lease_until, self._settings.notification_batch_size
            )
            templates = await repository.order_templates(conn, [row.order_id for row in claimed])
        if not claimed:
            return 0
        # No transaction is open from here until the outcomes are written.
        outcomes = await asyncio.gather(*(self._one(row, templates[row.order_id]) for row in claimed))
        await self._record(outcomes)
        return len(claimed)

    async def next_due(self) -> datetime | None:
        async with self._db.read() as conn:
            return await repository.next_sendable(conn, self._table)

    async def _one(self, row: Any, template: Any) -> _Outcome:
        async with self._gate:
            now = self._clock.now()
            try:
                result = await self._send(row, template, now)
            except _Defer as defer:
                return _Outcome(row.id, row.order_id, {"status": "New", "send_after": defer.until})
            except TransientProviderError as error:
                delay = self._retry.delay(row.attempts, error.retry_after)
                log.info("%s %s: transient failure (%s); retry in %s", self._table.name, row.id, error, delay)
                return _Outcome(
                    row.id, row.order_id, {"status": "New", "send_after": now + delay, "status_detail": str(error)}
                )
            except (PermanentEmailError, PermanentSmsError) as error:
                return _Outcome(
                    row.id,
                    row.order_id,
                    {"status": error.status.value, "status_changed": now, "status_detail": str(error)},
                )
            except Exception as error:
                # An adapter bug must not lose the notification: treat it as transient, and say so loudly.
                log.exception("%s %s: provider call raised unexpectedly", self._table.name, row.id)
                delay = self._retry.delay(row.attempts)
                return _Outcome(
                    row.id, row.order_id, {"status": "New", "send_after": now + delay, "status_detail": repr(error)}
                )
            accepted_status = (
                EmailStatus.SUCCEEDED.value if self._table is email_notifications else SmsStatus.ACCEPTED.value
            )
            assert isinstance(result, Accepted)
            return _Outcome(
                row.id,
                row.order_id,
                {
                    "status": accepted_status,
                    "status_changed": now,
                    "provider": self._provider_name,
                    "provider_reference": result.reference,
                    "status_detail": None,
                },
                delivered=result.delivered,
            )

    async def _record(self, outcomes: list[_Outcome]) -> None:
        now = self._clock.now()
        delivered = EmailStatus.DELIVERED.value if self._table is email_notifications else SmsStatus.DELIVERED.value
        touched: set[UUID] = set()
        async with self._db.transaction() as conn:
            for outcome in outcomes:
                if not await repository.record_outcome(
                    conn, self._table, outcome.notification_id, self._worker, outcome.values
                ):
                    log.warning(
                        "%s %s: outcome not recorded, the claim was lost", self._table.name, outcome.notification_id
                    )
                    continue
                if outcome.delivered:
                    await repository.apply_delivery_report(conn, self._table, outcome.notification_id, delivered, now)
                if outcome.values["status"] != "New":
                    touched.add(outcome.order_id)
            completed = await repository.complete_orders(conn, sorted(touched), now)
        for order_id in completed:
            log.info("order %s: Processed -> Completed", order_id)


class _Defer(Exception):
    def __init__(self, until: datetime) -> None:
        super().__init__(f"deferred until {until.isoformat()}")
        self.until = until


def email_sender(
    database: Database, clock: Clock, provider: EmailProvider, settings: DispatchSettings, worker: str
) -> Sender:
    async def send(row: Any, template: Any, now: datetime) -> Accepted:
        message = EmailMessage(
            notification_id=row.id,
            from_address=template.email_from_address,
            to_address=row.email_address,
            subject=row.subject if row.subject is not None else template.email_subject,
            body=row.body if row.body is not None else template.email_body,
            content_type=EmailContentType(template.email_content_type),
        )
        return await provider.send(message)

    return Sender(
        database, clock, email_notifications, send, provider.name, settings.email_concurrency, settings, worker
    )


def sms_sender(
    database: Database, clock: Clock, provider: SmsProvider, settings: DispatchSettings, worker: str
) -> Sender:
    async def send(row: Any, template: Any, now: datetime) -> Accepted:
        if template.sms_sending_time_policy == "Daytime":
            opening = next_daytime_send(now)
            if opening > now:
                # Retries or a slow queue carried it past 17:00: it waits for the next morning, not sent at night.
                raise _Defer(opening)
        message = SmsMessage(
            notification_id=row.id,
            sender=template.sms_sender,
            to_number=row.mobile_number,
            body=row.body if row.body is not None else template.sms_body,
            expiry=row.expiry,
        )
        return await provider.send(message)

    return Sender(database, clock, sms_notifications, send, provider.name, settings.sms_concurrency, settings, worker)


class ExpirySweeper:
    """Ends what can no longer succeed: Failed_TTL for notifications past expiry, then completes their orders."""

    REPORT_GRACE = timedelta(minutes=5)

    def __init__(self, database: Database, clock: Clock, wakeups: Wakeups) -> None:
        self._db = database
        self._clock = clock
        self._wakeups = wakeups

    async def run_once(self) -> int:
        now = self._clock.now()
        expired: list[UUID] = []
        async with self._db.transaction() as conn:
            for table in (email_notifications, sms_notifications):
                expired += await repository.expire_notifications(conn, table, now, self.REPORT_GRACE)
            completed = await repository.complete_orders(conn, expired, now)
        if expired:
            log.info("expired notifications of %d orders; %d orders completed", len(set(expired)), len(completed))
        return len(expired)
