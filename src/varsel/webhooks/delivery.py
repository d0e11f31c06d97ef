"""The delivery worker: posts each endpoint's pending events, signed, in order, one at a time.

A round claims endpoints (enabled, head event due, nobody holding them) up to the global cap of endpoints delivered
at once, and delivers each in a task of its own: the endpoint's pending events in seq order, each POST made outside
any transaction, then its attempt and the event's state recorded in one transaction. The first failure stops the
endpoint's turn: its head event is due again by the backoff schedule (RETRY_DELAYS), and the events behind it wait,
so a receiver always gets an endpoint's events in order. The hold (a lease) is renewed before every attempt; a
worker that dies mid-delivery leaves its hold to run out, and whoever takes the endpoint over posts the same event
again, with the same webhook-id (at-least-once: receivers de-duplicate on it).

Every POST goes to an address checked right then (varsel.outbound: public addresses only, unless the host is
allow-listed by name), redirects are not followed (a 3xx is a failure), and the whole attempt, DNS included, has a
timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.observability import Telemetry
from varsel.outbound import RefusedAddress
from varsel.webhooks import repository
from varsel.webhooks.addresses import WebhookHosts
from varsel.webhooks.repository import AttemptOutcome, HeldEndpoint, PendingEvent
from varsel.webhooks.signing import signed_headers

log = logging.getLogger("varsel.webhooks")

# After a failed attempt the head event is due again after these delays (the n-th failure waits the n-th; every one
# after the last waits RETRY_EVERY). Meanwhile the endpoint's later events wait behind it.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
)
RETRY_EVERY = timedelta(hours=3)
# What is read of a receiver's answer: its status decides; the body is read (so the connection can be kept) up to this.
MAX_ANSWER_BYTES = 16 * 1024
PURGE_BATCH = 500


def retry_delay(failures: int) -> timedelta:
    """How long the head event waits after its `failures`-th failed attempt (1 for the first)."""
    return RETRY_DELAYS[failures - 1] if 1 <= failures <= len(RETRY_DELAYS) else RETRY_EVERY


def body_of(payload: dict[str, Any]) -> str:
    """The HTTP body as sent and signed: the payload as compact JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)


class WebhookDelivery:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        hosts: WebhookHosts,
        http: httpx.AsyncClient,
        worker: str,
        *,
        timeout_seconds: float,
        lease_seconds: float,
        failure_period: timedelta,
        max_concurrent_endpoints: int,
        on_free: Callable[[], None] = lambda: None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._hosts = hosts
        self._http = http
        self.worker = worker
        self._timeout = timeout_seconds
        # The lease must outlast an attempt, or another worker would take the endpoint over while it is posted to.
        self._lease = timedelta(seconds=max(lease_seconds, timeout_seconds * 2))
        self._failure_period = failure_period
        self._cap = max_concurrent_endpoints
        self._on_free = on_free
        self._telemetry = telemetry
        self._busy: dict[UUID, asyncio.Task[None]] = {}
        # Attempts made by this process (tests and the benchmark read it).
        self.attempts = 0

    async def run_once(self) -> int:
        """Claim what endpoints there is room for and start delivering to each; answers how many were claimed.
        The deliveries go on after this returns (each frees its place and wakes the loop when it ends)."""
        room = self._cap - len(self._busy)
        if room <= 0:
            return 0
        now = self._clock.now()
        async with self._db.transaction() as conn:
            held = await repository.claim_endpoints(conn, self.worker, now, now + self._lease, room)
        for endpoint in held:
            task = asyncio.create_task(self._deliver(endpoint), name=f"webhooks {endpoint.id}")
            self._busy[endpoint.id] = task
        return len(held)

    async def deliver_due(self) -> int:
        """Deliver until nothing is due now, waiting for every delivery: for tests with a frozen clock, and the
        benchmark. Answers how many attempts were made."""
        before = self.attempts
        while True:
            claimed = await self.run_once()
            busy = list(self._busy.values())
            if busy:
                await asyncio.gather(*busy, return_exceptions=True)
            if not claimed and not busy:
                return self.attempts - before

    async def next_due(self) -> datetime | None:
        if len(self._busy) >= self._cap:
            # No room to claim anything: a due endpoint would have the loop go round at once, again and again, until
            # a place frees. A delivery that ends wakes the loop (on_free), so there is nothing to wait for but that.
            return None
        async with self._db.read() as conn:
            return await repository.next_due(conn, self._clock.now())

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Let deliveries under way finish for up to `grace_seconds`, then cut them off: what a cut-off delivery
        posted is posted again, with the same webhook-id, once its hold runs out."""
        busy = list(self._busy.values())
        if not busy:
            return
        if grace_seconds > 0:
            await asyncio.wait(busy, timeout=grace_seconds)
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)

    async def _deliver(self, endpoint: HeldEndpoint) -> None:
        try:
            await self._deliver_in_order(endpoint.id)
        except asyncio.CancelledError:
            raise  # a worker stopped mid-delivery: its hold runs out, and the event is posted again
        except Exception:
            # The database away, say: the hold runs out and the endpoint is taken up again.
            log.exception("webhooks: delivering to endpoint %s failed", endpoint.id)
        finally:
            # The endpoint was released in the last transaction, so the loop may have claimed it again since, and its
            # place is then the new delivery's.
            if self._busy.get(endpoint.id) is asyncio.current_task():
                del self._busy[endpoint.id]
            self._on_free()

    async def _deliver_in_order(self, subscription_id: UUID) -> None:
        # One transaction per attempt: the attempt's record, then (in the same one) the hold renewed and the next
        # event read, or the endpoint released when nothing more is due.
        now = self._clock.now()
        async with self._db.transaction() as conn:
            held, event = await self._next(conn, subscription_id, now)
        while held is not None and event is not None:
            attempted = event
            started = time.monotonic()
            outcome = await self._post(held, attempted, now)
            self._count(outcome, time.monotonic() - started)
            after = self._clock.now()
            async with self._db.transaction() as conn:
                recorded = await repository.record_attempt(
                    conn,
                    subscription_id,
                    attempted,
                    self.worker,
                    now,
                    outcome,
                    now + retry_delay(attempted.attempts + 1),
                    self._failure_period,
                )
                if not recorded:
                    held = None  # taken over, disabled or deleted meanwhile: nothing more of it is ours
                elif outcome.delivered:
                    held, event = await self._next(conn, subscription_id, after)
                else:
                    # The events behind a failed one wait for it: the endpoint's turn ends here.
                    await repository.release_endpoint(conn, subscription_id, self.worker)
                    held = None
            self.attempts += 1
            if not outcome.delivered:
                log.info("webhooks: event %s to endpoint %s failed: %s", attempted.id, subscription_id, outcome.error)
            now = after

    def _count(self, outcome: AttemptOutcome, seconds: float) -> None:
        if self._telemetry is not None:
            label = "delivered" if outcome.delivered else "failed"
            self._telemetry.webhook_attempts.labels(label).inc()
            self._telemetry.webhook_attempt_seconds.labels(label).observe(seconds)

    async def _next(
        self, conn: AsyncConnection, subscription_id: UUID, now: datetime
    ) -> tuple[HeldEndpoint | None, PendingEvent | None]:
        """The hold renewed and the endpoint's head event when it is due; the endpoint released when none is due.
        (None, None) when the hold was lost."""
        held = await repository.renew_claim(conn, subscription_id, self.worker, now, now + self._lease)
        if held is None:
            return None, None
        event = await repository.head_event(conn, subscription_id)
        if event is None or event.next_attempt > now:
            await repository.release_endpoint(conn, subscription_id, self.worker)
            return None, None
        return held, event

    async def _post(self, endpoint: HeldEndpoint, event: PendingEvent, at: datetime) -> AttemptOutcome:
        body = body_of(event.payload)
        signing = [endpoint.secret]
        if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > at:
            signing.append(endpoint.previous_secret)
        headers = signed_headers(str(event.id), at, body, signing)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = "varsel-webhooks"
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            async with asyncio.timeout(self._timeout):
                # Checked at every attempt: the name may point elsewhere since the subscription was made, and the
                # allow-list may have changed (plain http to a host no longer listed is refused).
                target = await self._hosts.target(endpoint.url)
                request = self._http.build_request(
                    "POST",
                    target.url,
                    headers={**target.headers, **headers},
                    content=body.encode(),
                    extensions=target.extensions,
                )
                response = await self._http.send(request, follow_redirects=False, stream=True)
                try:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER_BYTES:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return AttemptOutcome(False, None, took(), f"No answer within {self._timeout:g} s.")
        except RefusedAddress as error:
            return AttemptOutcome(False, None, None, f"Refused address: {error}")
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return AttemptOutcome(False, None, took(), f"Request failed: {error!r}"[:500])
        status = response.status_code
        if 200 <= status < 300:
            return AttemptOutcome(True, status, took(), None)
        if 300 <= status < 400:
            return AttemptOutcome(False, status, took(), f"HTTP {status}: redirects are not followed.")
        return AttemptOutcome(False, status, took(), f"HTTP {status}.")


class WebhookRetention:
    """Deletes delivered events (and their attempts) older than the retention period, a batch per round (run by the
    housekeeping worker, beside the status feed's retention). Pending events are kept however old."""

    def __init__(self, database: Database, clock: Clock, retention: timedelta, batch: int = PURGE_BATCH) -> None:
        self._db = database
        self._clock = clock
        self._retention = retention
        self._batch = batch

    async def run_once(self) -> int:
        async with self._db.transaction() as conn:
            deleted = await repository.purge_delivered(conn, self._clock.now() - self._retention, self._batch)
        if deleted:
            log.info("webhooks: %d delivered events older than %s deleted", deleted, self._retention)
        return deleted
