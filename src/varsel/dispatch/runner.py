"""The worker loops: each kind of work runs until there is none, then sleeps until woken or due."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from varsel.clock import Clock
from varsel.dispatch.processor import OrderProcessor
from varsel.dispatch.senders import ExpirySweeper, Sender
from varsel.dispatch.wakeup import Signal, Wakeups
from varsel.providers.base import EmailProvider, SmsProvider

log = logging.getLogger("varsel.dispatch")

SWEEP_SECONDS = 60.0


class Workers:
    def __init__(
        self,
        processor: OrderProcessor,
        email: Sender,
        sms: Sender,
        sweeper: ExpirySweeper,
        wakeups: Wakeups,
        clock: Clock,
        poll_seconds: float,
        email_provider: EmailProvider,
        sms_provider: SmsProvider,
    ) -> None:
        self.email_provider = email_provider
        self.sms_provider = sms_provider
        self.processor = processor
        self.email = email
        self.sms = sms
        self.sweeper = sweeper
        self._wakeups = wakeups
        self._clock = clock
        self._poll = poll_seconds
        self._tasks: list[asyncio.Task[None]] = []

    async def drain(self) -> int:
        """Run every kind of work until none is due now: for tests with a frozen clock, and for one-shot runs."""
        total = 0
        while True:
            done = await self.processor.run_once()
            done += await self.email.run_once()
            done += await self.sms.run_once()
            done += await self.sweeper.run_once()
            total += done
            if done == 0:
                return total

    def start(self) -> None:
        async def no_due() -> datetime | None:
            return None

        self._tasks = [
            asyncio.create_task(
                self._loop("orders", self.processor.run_once, self._wakeups.orders, self.processor.next_due, self._poll)
            ),
            asyncio.create_task(
                self._loop("email", self.email.run_once, self._wakeups.email, self.email.next_due, self._poll)
            ),
            asyncio.create_task(self._loop("sms", self.sms.run_once, self._wakeups.sms, self.sms.next_due, self._poll)),
            asyncio.create_task(
                self._loop("expiry", self.sweeper.run_once, self._wakeups.sweeper, no_due, SWEEP_SECONDS)
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _loop(
        self,
        name: str,
        run_once: Callable[[], Awaitable[int]],
        signal: Signal,
        next_due: Callable[[], Awaitable[datetime | None]],
        poll: float,
    ) -> None:
        while True:
            try:
                done = await run_once()
                due = None if done else await next_due()
            except Exception:
                # The database may be away for a moment; the work stays in it, so wait and try again.
                log.exception("%s worker: a round failed; trying again shortly", name)
                done, due = 0, None
            if not done:
                await signal.wait(self._clock, poll, due)
