"""The worker loops: each kind of work runs until there is none, then sleeps until woken or due."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine
from datetime import datetime
from typing import Any

from varsel.clock import Clock
from varsel.db.engine import database_unavailable
from varsel.dispatch.processor import OrderProcessor
from varsel.dispatch.senders import ExpirySweeper, Sender
from varsel.dispatch.wakeup import PostgresListener, Signal, Wakeups
from varsel.providers.base import EmailProvider, SmsProvider
from varsel.reports.service import DeliveryReports
from varsel.shipments.service import FeedRetention
from varsel.support.service import UsageService
from varsel.support.status_days import StatusDays
from varsel.webhooks.delivery import WebhookDelivery, WebhookRetention

log = logging.getLogger("varsel.dispatch")

SWEEP_SECONDS = 60.0
# After a failed round (the database away), the pause before the next: long enough not to flood the log.
FAILED_ROUND_PAUSE_SECONDS = 1.0


class Workers:
    def __init__(
        self,
        processor: OrderProcessor,
        email: Sender,
        sms: Sender,
        sweeper: ExpirySweeper,
        reports: DeliveryReports,
        wakeups: Wakeups,
        clock: Clock,
        poll_seconds: float,
        email_provider: EmailProvider,
        sms_provider: SmsProvider,
        listener: PostgresListener | None = None,
        feed_retention: FeedRetention | None = None,
        usage: UsageService | None = None,
        status_days: StatusDays | None = None,
        webhooks: WebhookDelivery | None = None,
        webhook_retention: WebhookRetention | None = None,
    ) -> None:
        self.email_provider = email_provider
        self.sms_provider = sms_provider
        self.processor = processor
        self.email = email
        self.sms = sms
        self.sweeper = sweeper
        self.reports = reports
        self._wakeups = wakeups
        self._clock = clock
        self._poll = poll_seconds
        self._listener = listener
        self.feed_retention = feed_retention
        self.usage = usage
        self.status_days = status_days
        self.webhooks = webhooks
        self.webhook_retention = webhook_retention
        self._loops: list[asyncio.Task[None]] = []
        self._listening: asyncio.Task[None] | None = None
        self._stopping = False

    async def drain(self) -> int:
        """Run every kind of work until none is due now: for tests with a frozen clock, and for one-shot runs."""
        total = 0
        while True:
            done = await self.processor.run_once()
            done += await self.email.run_once()
            done += await self.sms.run_once()
            done += await self._sweep()
            done += await self.reports.run_once()
            total += done
            if done == 0:
                return total

    def start(self, kinds: Collection[str] = ("orders", "email", "sms", "expiry", "reports", "webhooks")) -> None:
        async def no_due() -> datetime | None:
            return None

        self._stopping = False
        w = self._wakeups
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "orders": lambda: self._loop(
                "orders", self.processor.run_once, w.orders, self.processor.next_due, recover=self.processor.recover
            ),
            "email": lambda: self._loop(
                "email", self.email.run_once, w.email, self.email.next_due, recover=self.email.recover
            ),
            "sms": lambda: self._loop("sms", self.sms.run_once, w.sms, self.sms.next_due, recover=self.sms.recover),
            "expiry": lambda: self._loop("expiry", self._sweep, w.sweeper, no_due, SWEEP_SECONDS),
            "reports": lambda: self._loop("reports", self.reports.run_once, w.reports, self.reports.next_due),
            "webhooks": self._webhooks_loop,
        }
        unknown = set(kinds) - set(loops)
        if unknown:
            raise ValueError(f"unknown kinds of work: {sorted(unknown)}")
        self._loops = [asyncio.create_task(make()) for kind, make in loops.items() if kind in kinds]
        if self.usage is not None and "expiry" in kinds:
            # The usage rollup's refresh, by the housekeeping worker (as feed retention): every half of freshness,
            # so the monthly summary reads fresh days. A round with more to do runs again at once.
            usage = self.usage
            poll = usage.refresh_every.total_seconds()
            self._loops.append(asyncio.create_task(self._loop("usage", usage.refresh, w.usage, no_due, poll)))
        if self.status_days is not None and "expiry" in kinds:
            # The console Overview's status rollup, the same way: fresh before a page would count a day itself.
            status_days = self.status_days
            poll = status_days.refresh_every.total_seconds()
            self._loops.append(
                asyncio.create_task(self._loop("status days", status_days.refresh, w.status_days, no_due, poll))
            )
        if self._listener is not None:
            self._listening = asyncio.create_task(self._listener.run())

    async def _webhooks_loop(self) -> None:
        # Each round starts deliveries to the endpoints claimed and returns; a delivery ending wakes the loop.
        if self.webhooks is not None:
            webhooks = self.webhooks
            await self._loop("webhooks", webhooks.run_once, self._wakeups.webhooks, webhooks.next_due)

    async def _sweep(self) -> int:
        """The expiry worker's round: notifications past expiry, then one batch of old status feed entries (each
        its own short transaction; while a batch was full, the loop runs again at once)."""
        done = await self.sweeper.run_once()
        if self.feed_retention is not None:
            done += await self.feed_retention.run_once()
        if self.webhook_retention is not None:
            done += await self.webhook_retention.run_once()
        return done

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Stop claiming; let rounds under way finish for up to `grace_seconds`; then cut off what is left.

        A sender cut off records what the provider already took and releases what it never handed over (see
        Sender.run_once); an order cut off stays Processing until its lease runs out, and nothing of it was
        written, so another worker redoes it whole."""
        if not self._loops:
            return
        self._stopping = True
        self._wakeups.all()
        if grace_seconds > 0:
            await asyncio.wait(self._loops, timeout=grace_seconds)
        tasks = [*self._loops, *([self._listening] if self._listening else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.webhooks is not None:
            # Deliveries under way are tasks of their own: what is cut off is posted again once its hold runs out.
            await self.webhooks.stop(grace_seconds)
        self._loops, self._listening = [], None

    async def _loop(
        self,
        name: str,
        run_once: Callable[[], Awaitable[int]],
        signal: Signal,
        next_due: Callable[[], Awaitable[datetime | None]],
        poll: float | None = None,
        recover: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        failed = False
        while not self._stopping:
            try:
                if failed and recover is not None:
                    # What the failed round held is given back before anything new is claimed.
                    await recover()
                failed = False
                done = await run_once()
                due = None if done else await next_due()
            except Exception as error:
                # The database may be away for a moment; the work stays in it, so wait and try again.
                failed = True
                if database_unavailable(error):
                    log.warning("%s worker: the database is unavailable (%s); trying again shortly", name, error)
                else:
                    log.exception("%s worker: a round failed; trying again shortly", name)
                await asyncio.sleep(FAILED_ROUND_PAUSE_SECONDS)
                continue
            if not done and not self._stopping:
                await signal.wait(self._clock, poll if poll is not None else self._poll, due)
