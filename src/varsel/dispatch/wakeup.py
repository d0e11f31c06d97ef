"""Waking idle workers when work is committed, instead of making them poll for it."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from varsel.clock import Clock


class Signal:
    """A wake-up for one kind of work in this process. (Across processes, PostgreSQL's NOTIFY will feed it.)"""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, clock: Clock, poll_seconds: float, next_due: datetime | None) -> None:
        """Sleep until woken, until the next known due time, or at most `poll_seconds`."""
        timeout = poll_seconds
        if next_due is not None:
            timeout = max(0.0, min(timeout, (next_due - clock.now()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


class Wakeups:
    def __init__(self) -> None:
        self.orders = Signal()
        self.email = Signal()
        self.sms = Signal()
        self.sweeper = Signal()
