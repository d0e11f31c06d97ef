"""The order worker: due orders are claimed, their condition checked, recipients looked up again, and their
notifications generated, all written in one transaction with the order's next status."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, sms_notifications
from varsel.dispatch import repository
from varsel.dispatch.conditions import ConditionChecker, ConditionResult
from varsel.dispatch.generation import generate
from varsel.dispatch.wakeup import Wakeups
from varsel.notifications.statuses import OrderStatus
from varsel.orders import repository as order_repository
from varsel.orders.repository import StoredOrder
from varsel.recipients.lookup import RecipientLookup
from varsel.settings import DispatchSettings

log = logging.getLogger("varsel.dispatch")

# Orders processed at once by one worker: bounded so that a batch of slow condition endpoints cannot pile up.
ORDER_CONCURRENCY = 20


class _ClaimLost(Exception):
    """Another worker took the order over after our lease ran out: our work must not be written."""


class OrderProcessor:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        lookup: RecipientLookup,
        conditions: ConditionChecker,
        settings: DispatchSettings,
        worker: str,
        wakeups: Wakeups,
    ) -> None:
        self._db = database
        self._clock = clock
        self._lookup = lookup
        self._conditions = conditions
        self._settings = settings
        self._worker = worker
        self._wakeups = wakeups

    async def run_once(self) -> int:
        """Claim one batch of due orders and process it; answers how many orders were claimed."""
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        async with self._db.transaction() as conn:
            ids = await repository.claim_due_orders(
                conn, self._worker, now, lease_until, self._settings.order_batch_size
            )
            claimed = await order_repository.load_orders(conn, ids)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(ORDER_CONCURRENCY)

        async def one(order: StoredOrder) -> None:
            async with gate:
                try:
                    await self._process(order)
                except _ClaimLost:
                    log.warning("order %s: claim lost to another worker; its work is theirs now", order.id)
                except Exception:
                    # The order stays Processing under our lease; when the lease runs out a worker takes it again.
                    log.exception("order %s: processing failed; it will be retried when the lease runs out", order.id)

        await asyncio.gather(*(one(order) for order in claimed))
        return len(claimed)

    async def next_due(self) -> datetime | None:
        async with self._db.read() as conn:
            return await repository.next_due_order(conn)

    async def _process(self, order: StoredOrder) -> None:
        if order.condition_endpoint:
            answer = await self._conditions.check(order.condition_endpoint)
            if answer.result is ConditionResult.DO_NOT_SEND:
                await self._finish(order, OrderStatus.SEND_CONDITION_NOT_MET)
                return
            if answer.result is ConditionResult.FAILED:
                if order.processing_attempts < 2:
                    retry_at = self._clock.now() + timedelta(seconds=self._settings.condition_retry_seconds)
                    async with self._db.transaction() as conn:
                        await repository.retry_order_later(conn, order.id, self._worker, retry_at, self._clock.now())
                    log.info("order %s: condition check failed (%s); retrying at %s", order.id, answer.detail, retry_at)
                    return
                if self._settings.condition_failure_policy == "skip":
                    log.info("order %s: condition check failed again (%s); not sending", order.id, answer.detail)
                    await self._finish(order, OrderStatus.SEND_CONDITION_NOT_MET)
                    return
                log.info("order %s: condition check failed again (%s); sending anyway", order.id, answer.detail)
        lookup = await self._lookup.resolve(
            order.recipients,
            order.channel,
            ignore_reservation=bool(order.ignore_reservation),
            resource_id=order.resource_id,
            resource_action=order.resource_action,
        )
        now = self._clock.now()
        generated = generate(order, lookup, now, timedelta(hours=self._settings.expiry_hours))
        status = OrderStatus.PROCESSED if generated.pending else OrderStatus.COMPLETED
        async with self._db.transaction() as conn:
            await repository.insert_notifications(conn, email_notifications, generated.email)
            await repository.insert_notifications(conn, sms_notifications, generated.sms)
            if not await repository.finish_order(conn, order.id, self._worker, status, now):
                raise _ClaimLost()  # rolls the inserted notifications back with it
        log.info(
            "order %s: Processing -> %s (%d email, %d sms notifications)",
            order.id,
            status.value,
            len(generated.email),
            len(generated.sms),
        )
        if generated.email:
            self._wakeups.email.set()
        if generated.sms:
            self._wakeups.sms.set()

    async def _finish(self, order: StoredOrder, status: OrderStatus) -> None:
        async with self._db.transaction() as conn:
            if not await repository.finish_order(conn, order.id, self._worker, status, self._clock.now()):
                raise _ClaimLost()
        log.info("order %s: Processing -> %s", order.id, status.value)
