"""The order worker: due orders are claimed, their condition checked, recipients looked up again, and their
notifications generated, all written in one transaction with the order's next status."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from varsel.clock import Clock
from varsel.db.engine import Database, database_unavailable
from varsel.db.group_commit import GroupCommit
from varsel.db.tables import email_notifications, sms_notifications
from varsel.dispatch import repository, repository_fallback
from varsel.dispatch.conditions import ConditionChecker, ConditionResult
from varsel.dispatch.fallback import FallbackWorker, watches
from varsel.dispatch.generation import GeneratedNotifications, generate, undeliverable
from varsel.dispatch.retry import RetryPolicy
from varsel.dispatch.wakeup import Wakeups
from varsel.notifications.statuses import OrderStatus
from varsel.observability import Telemetry
from varsel.orders import repository as order_repository
from varsel.orders.repository import StoredOrder
from varsel.recipients.lookup import RecipientLookup
from varsel.settings import DispatchSettings, FallbackSettings
from varsel.shipments.repository import write_feed_entries
from varsel.webhooks import outbox
from varsel.webhooks.events import NotificationChange, facts_of

log = logging.getLogger("varsel.dispatch")

# Orders processed at once by one worker: bounded so that a batch of slow condition endpoints cannot pile up.
ORDER_CONCURRENCY = 20


# Processed orders written in one transaction at most: their notifications are inserted together, so this bounds
# the rows of one transaction too (with MAX_GROUP_NOTIFICATIONS).
MAX_GROUP_ORDERS = 100
MAX_GROUP_NOTIFICATIONS = 5000


class _ClaimLost(Exception):
    """Another worker took the order over after our lease ran out: our work must not be written."""


@dataclass(frozen=True)
class _Processed:
    order: StoredOrder
    generated: GeneratedNotifications
    status: OrderStatus
    now: datetime
    # Receipt-driven fallback's watching rows for the generated notifications (varsel.dispatch.fallback).
    fallback_watches: tuple[dict[str, Any], ...] = ()


def _created(processed: list[_Processed]) -> list[NotificationChange]:
    """The changes of generated notifications: none before, their first status when they were made."""
    return [
        NotificationChange(
            channel,
            row["id"],
            None,
            row["status"],
            row["status_changed"],
            facts_of(row, done.order.senders_reference, channel),
        )
        for done in processed
        for channel, rows in (("email", done.generated.email), ("sms", done.generated.sms))
        for row in rows
    ]


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
        telemetry: Telemetry,
        fallback: FallbackSettings | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._lookup = lookup
        self._fallback_settings = fallback or FallbackSettings()
        # Due fallbacks are sent by the order worker (each round first), which has the look-up they need.
        self.fallback = FallbackWorker(
            database, clock, lookup, settings, self._fallback_settings, worker, wakeups, telemetry
        )
        self._conditions = conditions
        self._settings = settings
        self._worker = worker
        self._wakeups = wakeups
        self._telemetry = telemetry
        # A failed round (a registry down, or a bug this order trips) is retried with backoff, not in a hot loop.
        self._retry = RetryPolicy(settings.retry_first_seconds, settings.retry_max_seconds)
        # The fallbacks' rounds that failed in a row, and when the next is tried (see run_once).
        self._fallback_failures = 0
        self._fallback_resumes: datetime | None = None
        # The orders of a round finish at nearly the same time: their results are committed together (one
        # transaction for the group rather than one per order), each order still answered on its own.
        self._finished: GroupCommit[_Processed, None] = GroupCommit(
            self._write_group,
            max_items=MAX_GROUP_ORDERS,
            weight=lambda done: len(done.generated.email) + len(done.generated.sms),
            max_weight=MAX_GROUP_NOTIFICATIONS,
            on_group=self._log_processed,
        )

    async def run_once(self) -> int:
        """Send the due fallbacks, then claim one batch of due orders and process it; answers how many fallbacks
        moved and orders were claimed. A failed fallback round does not hold the orders up (an error that recurs
        would otherwise stop all order processing): it is logged, the orders' round runs all the same, and the
        fallbacks' is tried again with backoff (not at once: their due rows would make every round due now)."""
        moved = 0
        now = self._clock.now()
        if self._fallback_resumes is None or now >= self._fallback_resumes:
            try:
                moved = await self.fallback.run_once()
                self._fallback_failures, self._fallback_resumes = 0, None
            except Exception:
                self._fallback_failures += 1
                self._fallback_resumes = now + self._retry.delay(self._fallback_failures)
                log.exception("the fallback round failed; tried again at %s", self._fallback_resumes.isoformat())
        return moved + await self._run_orders()

    async def _run_orders(self) -> int:
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        with self._telemetry.claim_seconds.labels("orders").time():
            async with self._db.transaction() as conn:
                rows = await repository.claim_due_orders(
                    conn, self._worker, now, lease_until, self._settings.order_batch_size
                )
                claimed = await order_repository.load_orders(conn, [row.id for row in rows])
        if not claimed:
            return 0
        # Started in the claim's order, which takes turns between service owners: another owner's order is not
        # queued at the gate behind one owner's slow ones (a condition endpoint that hangs, say).
        turn = {row.id: position for position, row in enumerate(rows)}
        claimed.sort(key=lambda order: turn[order.id])
        for row in rows:
            taken_over = row.previous_status == OrderStatus.PROCESSING.value
            self._telemetry.transition(
                "order",
                row.id,
                row.previous_status,
                OrderStatus.PROCESSING.value,
                attempt=row.processing_attempts,
                note="lease ran out; taken over" if taken_over else None,
            )
        gate = asyncio.Semaphore(ORDER_CONCURRENCY)
        outage: list[Exception] = []

        async def one(order: StoredOrder) -> None:
            async with gate:
                try:
                    await self._process(order)
                except _ClaimLost:
                    log.warning("order %s: claim lost to another worker; its work is theirs now", order.id)
                except Exception as error:
                    if await self._database_away(error):
                        # Not the order's fault, and no failure could be written now anyway: the round fails, and
                        # once the database answers again `recover` gives the order back, its try not counted.
                        outage.append(error)
                        return
                    log.exception("order %s: processing failed (attempt %d)", order.id, order.processing_attempts)
                    await self._failed(order, error)

        await asyncio.gather(*(one(order) for order in claimed))
        if outage:
            raise outage[0]
        return len(claimed)

    async def _database_away(self, error: Exception) -> bool:
        if not database_unavailable(error):
            return False
        if isinstance(error, DBAPIError):
            return True
        # A bare OSError may be the database's connection or a registry's: only the database is an outage here;
        # a registry that is down is the order's failure, retried with backoff until it expires.
        try:
            await self._db.ping()
        except Exception:
            return True
        return False

    async def recover(self) -> None:
        """After a failed round: the orders this worker still holds are processed by nobody; give them back now
        rather than when their lease runs out (minutes) so that work resumes as soon as the database is back."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            released = await repository.release_orders_held_by(conn, self._worker, now)
        self._telemetry.transitions_of(
            "order",
            released,
            OrderStatus.PROCESSING.value,
            OrderStatus.REGISTERED.value,
            note="released after a failed round",
        )

    async def next_due(self) -> datetime | None:
        async with self._db.read() as conn:
            due = await repository.next_due_order(conn)
        fallback = await self.fallback.next_due()
        if fallback is not None and self._fallback_resumes is not None:
            fallback = max(fallback, self._fallback_resumes)
        return min(due, fallback) if due is not None and fallback is not None else due or fallback

    async def _process(self, order: StoredOrder) -> None:
        if order.condition_endpoint:
            answer = await self._conditions.check(order.condition_endpoint)
            if answer.result is ConditionResult.DO_NOT_SEND:
                await self._finish(order, OrderStatus.SEND_CONDITION_NOT_MET)
                return
            if answer.result is ConditionResult.FAILED:
                if order.processing_attempts < 2:
                    retry_at = self._clock.now() + timedelta(seconds=self._settings.condition_retry_seconds)
                    await self._retry_later(order, retry_at, f"condition check failed: {answer.detail}")
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
            use_stale_contact_information=order.use_stale_contact_information,
        )
        now = self._clock.now()
        generated = generate(
            order,
            lookup,
            now,
            timedelta(hours=self._settings.expiry_hours),
            sms_window=None if order.sms_sending_time_policy == "Anytime" else self._settings.sms_daytime,
        )
        fallback_watches = tuple(watches(order, lookup, generated, self._fallback_settings, now))
        await self._write(order, generated, now, fallback_watches)

    async def _write(
        self,
        order: StoredOrder,
        generated: GeneratedNotifications,
        now: datetime,
        fallback_watches: tuple[dict[str, Any], ...] = (),
    ) -> None:
        status = OrderStatus.PROCESSED if generated.pending else OrderStatus.COMPLETED
        # Raises _ClaimLost when another worker took the order over: nothing of it was written. The transitions
        # are logged by the group's writer (_log_processed), which knows what committed even if this round is
        # cancelled meanwhile.
        await self._finished.write(_Processed(order, generated, status, now, fallback_watches))

    async def _write_group(self, group: list[_Processed]) -> list[Exception | None]:
        """One transaction for a group of processed orders: each moves to its status if this worker still holds
        it, and only those get their notifications; an order whose claim was lost gets nothing written."""
        now = max(done.now for done in group)
        async with self._db.transaction() as conn:
            finished = await repository.finish_orders(
                conn, self._worker, [(done.order.id, done.status) for done in group], now
            )
            kept = [done for done in group if done.order.id in finished]
            email: list[dict[str, Any]] = [row for done in kept for row in done.generated.email]
            sms: list[dict[str, Any]] = [row for done in kept for row in done.generated.sms]
            await repository.insert_notifications(conn, email_notifications, email)
            await repository.insert_notifications(conn, sms_notifications, sms)
            # The webhook events of the notifications' first status (New, or a failure found now: reserved, no
            # address, the order given up on), before the orders' (written with their feed entries, last).
            await outbox.write_notification_changes(conn, _created(kept))
            await repository_fallback.insert_watches(conn, [w for done in kept for w in done.fallback_watches])
            await repository.announce_work(conn, email=bool(email), sms=bool(sms))
            # Last: the orders completed at once (every recipient reserved or not found) get their feed entries.
            await write_feed_entries(
                conn, [done.order.id for done in kept if done.status is OrderStatus.COMPLETED], now
            )
        if email:
            self._wakeups.email.set()
        if sms:
            self._wakeups.sms.set()
        return [None if done.order.id in finished else _ClaimLost() for done in group]

    def _log_processed(self, written: list[_Processed]) -> None:
        """The transitions of processed orders, once committed: logged by the group's writer (GroupCommit's
        `on_group`), so that a round cancelled at shutdown while its group commits leaves no written order without
        its lines. Orders whose claim was lost are not among them: nothing of theirs was written."""
        for done in written:
            order, generated = done.order, done.generated
            for channel, rows in (("email", generated.email), ("sms", generated.sms)):
                for row in rows:
                    self._telemetry.transition(channel, row["id"], None, row["status"], order=order.id)
            self._telemetry.transition(
                "order",
                order.id,
                OrderStatus.PROCESSING.value,
                done.status.value,
                email=len(generated.email),
                sms=len(generated.sms),
            )

    async def _finish(self, order: StoredOrder, status: OrderStatus) -> None:
        async with self._db.transaction() as conn:
            if not await repository.finish_order(conn, order.id, self._worker, status, self._clock.now()):
                raise _ClaimLost()
            await write_feed_entries(conn, [order.id], self._clock.now())
        self._telemetry.transition("order", order.id, OrderStatus.PROCESSING.value, status.value)

    async def _retry_later(self, order: StoredOrder, at: datetime, reason: str) -> None:
        async with self._db.transaction() as conn:
            moved = await repository.retry_order_later(conn, order.id, self._worker, at, self._clock.now())
        if moved:
            self._telemetry.transition(
                "order", order.id, OrderStatus.PROCESSING.value, OrderStatus.REGISTERED.value, retry_at=at, why=reason
            )

    async def _failed(self, order: StoredOrder, error: Exception) -> None:
        """Processing raised. Try again with backoff; once the order's notifications would have expired anyway,
        end it with a Failed notification per recipient rather than retrying it for ever."""
        now = self._clock.now()
        reason = f"the order could not be processed: {error!r}"[:1000]
        give_up_at = max(order.requested_send_time, order.created) + timedelta(hours=self._settings.expiry_hours)
        try:
            if now >= give_up_at:
                await self._write(order, undeliverable(order, now, reason), now)
            else:
                await self._retry_later(order, now + self._retry.delay(order.processing_attempts), reason)
        except _ClaimLost:
            log.warning("order %s: claim lost to another worker; its work is theirs now", order.id)
        except Exception:
            # The database itself is away: the order stays Processing, and is taken again when the lease runs out.
            log.exception("order %s: could not record the failure; the lease will bring it back", order.id)
