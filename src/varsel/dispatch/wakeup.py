"""Waking idle workers when work is committed, instead of making them poll for it.

In one process the API and the workers share `Signal`s. Across processes on PostgreSQL, whoever commits work
sends a NOTIFY in the same transaction (dispatch.repository.announce_work) and every worker process's
`PostgresListener` turns it into the same signals. Polling stays as the fallback for anything missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from varsel.clock import Clock
from varsel.dispatch.repository import CHANNEL_EMAIL, CHANNEL_ORDERS, CHANNEL_SMS
from varsel.webhooks.wakeup import CHANNEL_WEBHOOKS

log = logging.getLogger("varsel.dispatch")


class Signal:
    """A wake-up for one kind of work in this process."""

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
        self.reports = Signal()
        self.usage = Signal()
        self.status_days = Signal()
        # Webhook events committed in this process (varsel.webhooks.wakeup), an endpoint enabled again, a replay.
        self.webhooks = Signal()

    def all(self) -> None:
        signals = (self.orders, self.email, self.sms, self.sweeper, self.reports, self.usage, self.status_days)
        for signal in (*signals, self.webhooks):
            signal.set()


class PostgresListener:
    """LISTENs on the work channels on a connection of its own and sets this process's signals.

    A lost connection is made again after a pause; on every (re)connect all workers are woken once, because
    notifications sent while nobody listened are gone."""

    RECONNECT_SECONDS = 1.0

    def __init__(self, database_url: str, wakeups: Wakeups) -> None:
        # asyncpg speaks plain postgresql:// URLs; SQLAlchemy's carry the driver name.
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._signals = {
            CHANNEL_ORDERS: wakeups.orders,
            CHANNEL_EMAIL: wakeups.email,
            CHANNEL_SMS: wakeups.sms,
            # Webhook events committed by another process (varsel.webhooks.wakeup).
            CHANNEL_WEBHOOKS: wakeups.webhooks,
        }
        self._wakeups = wakeups
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("work notifications: connection lost or refused (%s); reconnecting", error)
            self.connected.clear()
            await asyncio.sleep(self.RECONNECT_SECONDS)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            for channel in self._signals:
                await conn.add_listener(channel, self._notified)
            self.connected.set()
            self._wakeups.all()
            # asyncpg notices a dead server only when it reads; a cheap query now and then makes it read.
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), 15)
                if not lost.is_set():
                    await conn.fetchval("SELECT 1", timeout=10)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _notified(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        signal = self._signals.get(channel)
        if signal is not None:
            signal.set()
