"""Rate limits and provider health: a wrapper that protects a provider and the service from each other.

The guard sits between a sender and a provider adapter and has the adapter's own shape, so the sender does not
know it is there. It caps calls under way, spaces calls out with a token bucket, honours a provider's 429
Retry-After for every caller at once, and stops calling a provider that keeps failing (a circuit breaker) until a
single trial call shows it answers again. Calls it will not make fail fast with TransientProviderError, which the
sender already turns into a retry with backoff; `blocked_for()` lets the sender stop claiming work meanwhile.
Only failures of the provider move the breaker; a message that fails for a reason of its own says nothing about
the provider, and must not stop everyone else's messages.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel, Field, model_validator

from varsel.clock import Clock
from varsel.providers.base import (
    Accepted,
    EmailRefused,
    PermanentEmailError,
    PermanentSmsError,
    ProviderUnavailable,
    TransientProviderError,
)

log = logging.getLogger("varsel.providers")

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)

# While the half-open trial call is under way nobody knows when the provider may be used again. Asking again
# soon is cheap; claiming work now would only fail it fast.
TRIAL_WAIT_SECONDS = 1.0


class GuardSettings(BaseModel):
    max_concurrency: int = Field(default=50, ge=1)
    rate_per_second: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    failure_threshold: int = Field(default=5, ge=1)
    cooldown_seconds: float = Field(default=5.0, gt=0)
    max_cooldown_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _cooldowns_in_order(self) -> GuardSettings:
        if self.max_cooldown_seconds < self.cooldown_seconds:
            raise ValueError("max_cooldown_seconds must not be less than cooldown_seconds")
        return self

    @property
    def bucket_size(self) -> int:
        if self.burst is not None:
            return self.burst
        if self.rate_per_second is None:
            return 1
        return max(1, math.ceil(self.rate_per_second))


@dataclass(frozen=True)
class GuardHealth:
    """What a guard knows of its provider now: the breaker ("closed", "open", or "half-open": a trial call may go
    through), until when it is open, until when the provider asked to be left alone (429), and how many calls in a
    row failed. Kept in the memory of the process whose guard it is: each process has its own."""

    breaker: str
    open_until: datetime | None
    paused_until: datetime | None
    consecutive_failures: int


class GuardedProvider(Protocol[M_contra]):
    """What the guard needs of the provider it wraps: EmailProvider and SmsProvider both fit."""

    @property
    def name(self) -> str: ...

    async def send(self, message: M_contra) -> Accepted: ...

    async def close(self) -> None: ...


class ProviderGuard(Generic[M]):
    def __init__(
        self,
        provider: GuardedProvider[M],
        settings: GuardSettings,
        clock: Clock,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._provider = provider
        # A plain attribute, not a property: the provider protocols declare `name` as a (settable) attribute.
        self.name: str = provider.name
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(settings.max_concurrency)

        self._rate = settings.rate_per_second
        self._bucket_size = float(settings.bucket_size)
        # May go below zero: a negative balance is tokens already promised to callers that are waiting for them,
        # which keeps waiters in arrival order and needs no polling.
        self._tokens = self._bucket_size
        self._refilled = clock.now()

        self._paused_until: datetime | None = None

        self._failures = 0
        self._open_until: datetime | None = None  # set while the breaker is open or half-open
        self._cooldown = settings.cooldown_seconds
        self._trial_running = False

    @property
    def max_concurrency(self) -> int:
        return self._settings.max_concurrency

    async def send(self, message: M, wait_limit: float | None = None) -> Accepted:
        """Call the provider once the concurrency cap and the rate limit let this call through. With `wait_limit`,
        a call that would wait longer than that (seconds) for either is refused (ProviderUnavailable) instead: a
        caller holding its message under a lease must not still be queueing here when the lease runs out and
        another worker takes the message over."""
        self._refuse_if_blocked(self._clock.now())
        await self._take_slot(wait_limit)
        try:
            await self._take_token(wait_limit)
            try:
                trial = self._admit(self._clock.now())
            except ProviderUnavailable:
                # Paused or opened while this call waited: the token was never used on the provider.
                self._return_token()
                raise
            try:
                result = await self._provider.send(message)
            except TransientProviderError as error:
                self._on_failure(trial, error.retry_after)
                raise
            except EmailRefused:
                # Refused by the adapter before any call: the provider was not asked, so this says nothing of it,
                # and a half-open trial that ends so must not close the breaker; the next call is the trial.
                self._no_verdict(trial)
                raise
            except (PermanentEmailError, PermanentSmsError):
                # The message's own failure (its recipient, its content): the provider answered, so it is not unwell.
                self._on_success(trial)
                raise
            except asyncio.CancelledError:
                # Cut off by our side says nothing about the provider; let the next caller make the trial.
                self._no_verdict(trial)
                raise
            except OSError as error:
                # A connection refused or reset, a timeout, a full disk under the outbox, that an adapter let
                # through unmapped: the provider's failure like any TransientProviderError.
                self._on_failure(trial, None)
                raise TransientProviderError(f"{self.name}: {error!r}") from error
            except Exception:
                # Neither: an adapter bug, or a message the adapter cannot handle (a header it will not write).
                # The adapters turn every failure of the provider (refused connections, timeouts, 5xx, 429) into
                # TransientProviderError, so what is left is tied to this message. Counted against the provider,
                # one sender's unsendable messages would open the breaker and hold every other sender's mail, and
                # keep it open by failing each half-open trial. So it moves nothing: not the failure count, and a
                # trial that ends so leaves the next call to be the trial. Passed on unchanged: the sender retries
                # the notification a bounded number of times, then fails it with the exception as its reason.
                self._no_verdict(trial)
                raise
            self._on_success(trial)
            return result
        finally:
            self._slots.release()

    async def close(self) -> None:
        await self._provider.close()

    def health(self) -> GuardHealth:
        """The breaker's state and any pause, for the console's overview."""
        now = self._clock.now()
        if self._open_until is None:
            breaker, open_until = "closed", None
        elif now < self._open_until:
            breaker, open_until = "open", self._open_until
        else:
            breaker, open_until = "half-open", None
        paused = self._paused_until if self._pause_remaining(now) > 0 else None
        return GuardHealth(breaker, open_until, paused, self._failures)

    def blocked_for(self) -> float:
        now = self._clock.now()
        blocked = self._pause_remaining(now)
        if self._open_until is not None:
            if now < self._open_until:
                blocked = max(blocked, _seconds(self._open_until - now))
            elif self._trial_running:
                blocked = max(blocked, TRIAL_WAIT_SECONDS)
        return blocked

    def _pause_remaining(self, now: datetime) -> float:
        if self._paused_until is None or now >= self._paused_until:
            return 0.0
        return _seconds(self._paused_until - now)

    def _refuse_if_blocked(self, now: datetime) -> None:
        """Fail fast when paused or when the breaker is open, or half-open with the trial already taken."""
        paused = self._pause_remaining(now)
        if paused > 0:
            assert self._paused_until is not None
            raise ProviderUnavailable(
                f"{self.name}: provider paused until {self._paused_until.isoformat()}", retry_after=paused
            )
        if self._open_until is None:
            return
        if now < self._open_until:
            raise ProviderUnavailable(
                f"{self.name}: circuit open until {self._open_until.isoformat()}",
                retry_after=_seconds(self._open_until - now),
            )
        if self._trial_running:
            raise ProviderUnavailable(
                f"{self.name}: circuit half-open, trial call under way", retry_after=TRIAL_WAIT_SECONDS
            )

    def _admit(self, now: datetime) -> bool:
        """Let a call through to the provider; True when it is the half-open trial."""
        self._refuse_if_blocked(now)
        if self._open_until is None:
            return False
        self._trial_running = True
        return True

    def _on_success(self, trial: bool) -> None:
        if trial:
            self._trial_running = False
            self._open_until = None
            self._failures = 0
            self._cooldown = self._settings.cooldown_seconds
            log.info("%s: circuit closed, the trial call succeeded", self.name)
        elif self._open_until is None:
            self._failures = 0
        # Otherwise a call from before the breaker opened: only the trial decides when it closes.

    def _no_verdict(self, trial: bool) -> None:
        """The call says nothing about the provider's health: a trial call ending so lets the next caller try."""
        if trial:
            self._trial_running = False

    def _on_failure(self, trial: bool, retry_after: float | None) -> None:
        now = self._clock.now()
        if retry_after is not None and retry_after > 0:
            self._pause(now, retry_after)
        if trial:
            self._trial_running = False
            self._cooldown = min(self._cooldown * 2, self._settings.max_cooldown_seconds)
            self._open_until = now + timedelta(seconds=self._cooldown)
            log.warning("%s: circuit re-opened for %.1f s, the trial call failed", self.name, self._cooldown)
        elif self._open_until is None:
            self._failures += 1
            if self._failures >= self._settings.failure_threshold:
                self._cooldown = self._settings.cooldown_seconds
                self._open_until = now + timedelta(seconds=self._cooldown)
                log.warning(
                    "%s: circuit opened for %.1f s after %d consecutive failures",
                    self.name,
                    self._cooldown,
                    self._failures,
                )
        # Otherwise a call from before the breaker opened: its failure is already accounted for.

    def _pause(self, now: datetime, retry_after: float) -> None:
        until = now + timedelta(seconds=retry_after)
        if self._paused_until is not None and until <= self._paused_until:
            return
        if self._pause_remaining(now) == 0:
            log.warning("%s: provider asked us to wait, paused for %.1f s", self.name, retry_after)
        self._paused_until = until

    async def _take_slot(self, wait_limit: float | None) -> None:
        if wait_limit is None:
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(wait_limit):
                await self._slots.acquire()
        except TimeoutError:
            raise ProviderUnavailable(
                f"{self.name}: all {self.max_concurrency} calls under way for {wait_limit:g} s", retry_after=1.0
            ) from None

    async def _take_token(self, wait_limit: float | None = None) -> None:
        if self._rate is None:
            return
        self._refill()
        self._tokens -= 1
        if self._tokens >= 0:
            return
        wait = -self._tokens / self._rate
        if wait_limit is not None and wait > wait_limit:
            # Known now, not waited out: the rate limit would hold this call longer than its caller may wait.
            self._return_token()
            raise ProviderUnavailable(f"{self.name}: rate limit reached for {wait:.1f} s", retry_after=wait)
        try:
            await self._sleep(wait)
        except asyncio.CancelledError:
            self._return_token()
            raise

    def _return_token(self) -> None:
        if self._rate is not None:
            self._tokens = min(self._tokens + 1, self._bucket_size)

    def _refill(self) -> None:
        assert self._rate is not None
        now = self._clock.now()
        # max(0, …): a wall clock stepped backwards must not take tokens away.
        elapsed = max(0.0, _seconds(now - self._refilled))
        self._refilled = now
        self._tokens = min(self._bucket_size, self._tokens + elapsed * self._rate)


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()
