"""The provider guard: concurrency cap, token bucket, Retry-After pause and circuit breaker, on a frozen clock."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from varsel.clock import FrozenClock
from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.vocabulary import EmailContentType
from varsel.providers.base import (
    Accepted,
    EmailMessage,
    EmailProvider,
    EmailRefused,
    PermanentEmailError,
    PermanentSmsError,
    ProviderUnavailable,
    SmsMessage,
    SmsProvider,
    TransientProviderError,
)
from varsel.providers.guard import TRIAL_WAIT_SECONDS, GuardSettings, ProviderGuard

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def email() -> EmailMessage:
    return EmailMessage(
        notification_id=uuid4(),
        from_address="noreply@example.no",
        to_address="ola@example.no",
        subject="Varsel",
        body="Hei",
        content_type=EmailContentType("Plain"),
    )


def sms() -> SmsMessage:
    return SmsMessage(
        notification_id=uuid4(), sender="Altinn", to_number="+4799999999", body="Hei", expiry=NOW + timedelta(days=1)
    )


class FakeProvider:
    """Stands in for an external provider: answers from a script, optionally holding each call until released."""

    name = "fake"

    def __init__(self, clock: FrozenClock) -> None:
        self._clock = clock
        self.script: list[BaseException] = []  # raised in order; an empty script means success
        self.hold: asyncio.Event | None = None
        self.calls: list[Any] = []
        self.call_times: list[datetime] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    def fail_with(self, *errors: BaseException) -> None:
        self.script.extend(errors)

    async def send(self, message: Any) -> Accepted:
        self.calls.append(message)
        self.call_times.append(self._clock.now())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.script:
                raise self.script.pop(0)
            return Accepted(reference=f"ref-{len(self.calls)}")
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True


class FakeSleep:
    """Moves the frozen clock instead of sleeping, and remembers what was asked for."""

    def __init__(self, clock: FrozenClock) -> None:
        self._clock = clock
        self.requested: list[float] = []
        self.gate: asyncio.Event | None = None  # when set, sleepers also wait for it (to interleave callers)

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        if self.gate is not None:
            await self.gate.wait()
        self._clock.advance(timedelta(seconds=seconds))
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def inner(clock: FrozenClock) -> FakeProvider:
    return FakeProvider(clock)


@pytest.fixture
def sleep(clock: FrozenClock) -> FakeSleep:
    return FakeSleep(clock)


def guard(inner: FakeProvider, clock: FrozenClock, sleep: FakeSleep, **settings: Any) -> ProviderGuard[Any]:
    return ProviderGuard(inner, GuardSettings(**settings), clock, sleep=sleep)


def advance(clock: FrozenClock, seconds: float) -> None:
    clock.advance(timedelta(seconds=seconds))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def fails_fast(g: ProviderGuard[Any], inner: FakeProvider) -> float | None:
    """Send, expect a TransientProviderError that never reached the provider; return its retry_after."""
    calls = len(inner.calls)
    with pytest.raises(TransientProviderError) as caught:
        await g.send(email())
    assert len(inner.calls) == calls, "the call reached the provider"
    return caught.value.retry_after


# --- shape and settings ---


def test_wraps_email_and_sms_providers_alike(clock: FrozenClock, inner: FakeProvider) -> None:
    as_email: EmailProvider = ProviderGuard(inner, GuardSettings(), clock)
    as_sms: SmsProvider = ProviderGuard(inner, GuardSettings(), clock)
    assert as_email.name == as_sms.name == "fake"


def test_burst_defaults_to_the_rate_rounded_up() -> None:
    assert GuardSettings(rate_per_second=2.5).bucket_size == 3
    assert GuardSettings(rate_per_second=0.2).bucket_size == 1
    assert GuardSettings(rate_per_second=10, burst=1).bucket_size == 1


def test_settings_reject_a_max_cooldown_below_the_first() -> None:
    with pytest.raises(ValidationError):
        GuardSettings(cooldown_seconds=10, max_cooldown_seconds=5)


async def test_close_closes_the_inner_provider(clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep) -> None:
    await guard(inner, clock, sleep).close()
    assert inner.closed


# --- concurrency ---


async def test_concurrent_calls_never_exceed_the_cap(clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep) -> None:
    g = guard(inner, clock, sleep, max_concurrency=3)
    inner.hold = asyncio.Event()
    sends = [asyncio.ensure_future(g.send(email())) for _ in range(10)]
    await settle()
    assert inner.in_flight == 3
    inner.hold.set()
    results = await asyncio.gather(*sends)
    assert len(results) == 10
    assert len(inner.calls) == 10
    assert inner.max_in_flight == 3


# --- token bucket ---


async def test_token_bucket_spaces_calls_out(clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep) -> None:
    g = guard(inner, clock, sleep, rate_per_second=10, burst=1)
    for _ in range(5):
        await g.send(email())
    assert len(inner.calls) == 5
    assert sum(sleep.requested) == pytest.approx(0.4)
    assert (clock.now() - NOW).total_seconds() == pytest.approx(0.4)
    gaps = [(b - a).total_seconds() for a, b in zip(inner.call_times, inner.call_times[1:], strict=False)]
    assert gaps == pytest.approx([0.1] * 4)


async def test_concurrent_callers_queue_for_tokens(clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep) -> None:
    g = guard(inner, clock, sleep, rate_per_second=10, burst=1)
    sleep.gate = asyncio.Event()  # all of them wait at the same moment
    sends = asyncio.gather(*(g.send(email()) for _ in range(4)))
    await settle()
    assert len(inner.calls) == 1
    # Each waiter is promised the next free token in turn: 0.1 s, 0.2 s, 0.3 s out from now.
    assert sleep.requested == pytest.approx([0.1, 0.2, 0.3])
    sleep.gate.set()
    await sends
    assert len(inner.calls) == 4


async def test_a_full_bucket_lets_a_burst_through_then_refills(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, rate_per_second=5)  # burst defaults to 5
    for _ in range(5):
        await g.send(email())
    assert sleep.requested == []
    await g.send(email())
    assert sleep.requested == [pytest.approx(0.2)]
    advance(clock, 10)  # refills to the bucket size, no further
    for _ in range(5):
        await g.send(email())
    assert len(sleep.requested) == 1
    await g.send(email())
    assert len(sleep.requested) == 2


async def test_a_call_that_would_wait_past_its_limit_for_a_token_is_refused_at_once(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, rate_per_second=1, burst=1)
    await g.send(email())
    with pytest.raises(ProviderUnavailable) as refused:
        await g.send(email(), wait_limit=0.5)
    assert refused.value.retry_after == pytest.approx(1.0)
    assert sleep.requested == []  # refused, not waited out
    # Its token was given back: a caller that may wait gets the next one after one second, not two.
    await g.send(email())
    assert sleep.requested == [pytest.approx(1.0)]
    assert len(inner.calls) == 2


async def test_a_call_that_waits_past_its_limit_for_a_free_slot_is_refused(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, max_concurrency=1)
    inner.hold = asyncio.Event()
    holding = asyncio.ensure_future(g.send(email()))
    await settle()
    with pytest.raises(ProviderUnavailable):
        await g.send(email(), wait_limit=0.05)
    inner.hold.set()
    await holding
    await g.send(email(), wait_limit=0.05)  # the slot is free again, and was not kept by the refused call
    assert len(inner.calls) == 2


async def test_without_a_rate_nothing_waits(clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep) -> None:
    g = guard(inner, clock, sleep)
    for _ in range(100):
        await g.send(email())
    assert sleep.requested == []
    assert len(inner.calls) == 100


# --- Retry-After pause ---


async def test_retry_after_pauses_the_whole_provider(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    g = guard(inner, clock, sleep)
    too_many = TransientProviderError("429", retry_after=30)
    inner.fail_with(too_many)
    with caplog.at_level(logging.INFO, logger="varsel.providers"):
        with pytest.raises(TransientProviderError) as caught:
            await g.send(email())
        assert caught.value is too_many
        assert g.blocked_for() == pytest.approx(30)

        assert await fails_fast(g, inner) == pytest.approx(30)
        advance(clock, 10)
        assert g.blocked_for() == pytest.approx(20)
        assert await fails_fast(g, inner) == pytest.approx(20)
        advance(clock, 20)
        assert g.blocked_for() == 0.0
        assert await g.send(email()) == Accepted(reference="ref-2")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "paused" in caplog.records[0].getMessage()


async def test_a_pause_stops_callers_already_waiting_for_a_token(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, rate_per_second=10, burst=1)
    inner.hold = asyncio.Event()
    inner.fail_with(TransientProviderError("429", retry_after=60))
    sleep.gate = asyncio.Event()
    first = asyncio.ensure_future(g.send(email()))
    second = asyncio.ensure_future(g.send(email()))
    await settle()
    assert len(inner.calls) == 1  # the second caller waits for its token
    inner.hold.set()
    await settle()
    assert first.done()
    sleep.gate.set()
    with pytest.raises(TransientProviderError) as caught:
        await second
    assert caught.value.retry_after == pytest.approx(60 - 0.1)
    assert len(inner.calls) == 1
    with pytest.raises(TransientProviderError):
        await first


async def test_a_longer_pause_outlasts_the_breaker(clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep) -> None:
    g = guard(inner, clock, sleep, failure_threshold=2, cooldown_seconds=5)
    inner.fail_with(TransientProviderError("429", retry_after=1), TransientProviderError("429", retry_after=60))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    advance(clock, 1)
    with pytest.raises(TransientProviderError):
        await g.send(email())
    # Both a pause (60 s) and an open breaker (5 s, the 429s count as failures): the longer one wins.
    assert g.blocked_for() == pytest.approx(60)
    assert await fails_fast(g, inner) == pytest.approx(60)
    advance(clock, 60)
    assert g.blocked_for() == 0.0
    await g.send(email())  # the half-open trial
    assert g.blocked_for() == 0.0


# --- circuit breaker ---


async def test_breaker_opens_fails_fast_and_a_trial_success_closes_it(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=3, cooldown_seconds=5)
    inner.fail_with(*(TransientProviderError("503") for _ in range(3)))
    with caplog.at_level(logging.INFO, logger="varsel.providers"):
        for _ in range(2):
            with pytest.raises(TransientProviderError):
                await g.send(email())
            assert g.blocked_for() == 0.0
        with pytest.raises(TransientProviderError):
            await g.send(email())
        assert len(inner.calls) == 3

        assert g.blocked_for() == pytest.approx(5)
        assert await fails_fast(g, inner) == pytest.approx(5)
        advance(clock, 2)
        assert await fails_fast(g, inner) == pytest.approx(3)
        advance(clock, 3)
        assert g.blocked_for() == 0.0  # half-open: the next call may be the trial

        inner.hold = asyncio.Event()
        trial = asyncio.ensure_future(g.send(email()))
        await settle()
        assert len(inner.calls) == 4
        assert g.blocked_for() == TRIAL_WAIT_SECONDS
        assert await fails_fast(g, inner) == TRIAL_WAIT_SECONDS
        inner.hold.set()
        await trial
        inner.hold = None
        assert g.blocked_for() == 0.0

        # Closed again with the count reset: two more failures do not open it.
        inner.fail_with(TransientProviderError("503"), TransientProviderError("503"))
        for _ in range(2):
            with pytest.raises(TransientProviderError):
                await g.send(email())
        await g.send(email())
        assert g.blocked_for() == 0.0
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in levels] == [logging.WARNING, logging.INFO]
    assert "opened" in levels[0][1]
    assert "closed" in levels[1][1]


async def test_failed_trials_double_the_cooldown_up_to_the_cap(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=1, cooldown_seconds=5, max_cooldown_seconds=12)
    inner.fail_with(*(TransientProviderError("503") for _ in range(4)))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    for expected in (5, 10, 12, 12):
        assert g.blocked_for() == pytest.approx(expected)
        assert await fails_fast(g, inner) == pytest.approx(expected)
        advance(clock, expected)
        if not inner.script:
            break
        with pytest.raises(TransientProviderError):
            await g.send(email())  # the trial, failing
    await g.send(email())  # a trial that succeeds
    assert len(inner.calls) == 5

    # Closed, and the next opening starts from the first cooldown again.
    inner.fail_with(TransientProviderError("503"))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    assert g.blocked_for() == pytest.approx(5)


async def test_permanent_errors_do_not_open_the_breaker_and_reset_the_count(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=3)
    bounced = PermanentEmailError("no such mailbox", EmailStatus.FAILED_RECIPIENT_NOT_IDENTIFIED)
    unknown_number = PermanentSmsError("invalid number", SmsStatus.FAILED_INVALID_RECIPIENT)
    inner.fail_with(
        TransientProviderError("503"),
        TransientProviderError("503"),
        bounced,
        TransientProviderError("503"),
        TransientProviderError("503"),
        unknown_number,
        *(PermanentEmailError("bounced") for _ in range(5)),
    )
    seen: list[BaseException] = []
    for _ in range(11):
        with pytest.raises((TransientProviderError, PermanentEmailError, PermanentSmsError)) as caught:
            await g.send(sms())
        seen.append(caught.value)
        assert g.blocked_for() == 0.0
    assert seen[2] is bounced
    assert seen[5] is unknown_number
    assert len(inner.calls) == 11


async def test_an_os_error_an_adapter_let_through_is_a_provider_failure(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=2, cooldown_seconds=5)
    reset = ConnectionResetError("connection reset")
    inner.fail_with(reset, TimeoutError())
    with pytest.raises(TransientProviderError) as caught:
        await g.send(email())
    assert caught.value.__cause__ is reset
    with pytest.raises(TransientProviderError):
        await g.send(email())
    assert g.blocked_for() == pytest.approx(5)
    await fails_fast(g, inner)


async def test_the_messages_own_failures_never_open_the_breaker(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    # One sender's unsendable messages, many in a row: a permanent refusal, or an exception no adapter expects (a
    # header the adapter will not write). Neither says anything about the provider.
    g = guard(inner, clock, sleep, failure_threshold=3)
    chokes = ValueError("Header values may not contain linefeed or carriage return characters")
    inner.fail_with(*[chokes] * 10, *[PermanentEmailError("refused")] * 10)
    with caplog.at_level(logging.INFO, logger="varsel.providers"):
        for i in range(20):
            with pytest.raises((ValueError, PermanentEmailError)) as caught:
                await g.send(email())
            if i < 10:
                assert caught.value is chokes  # passed on unchanged, for the sender to judge
            assert g.blocked_for() == 0.0
        assert await g.send(email()) == Accepted(reference="ref-21")
    assert len(inner.calls) == 21
    assert caplog.records == []


async def test_an_unexpected_exception_neither_counts_nor_clears_provider_failures(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=2, cooldown_seconds=5)
    inner.fail_with(TransientProviderError("503"), RuntimeError("adapter bug"), TransientProviderError("503"))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    with pytest.raises(RuntimeError):
        await g.send(email())
    assert g.blocked_for() == 0.0
    with pytest.raises(TransientProviderError):
        await g.send(email())
    assert g.blocked_for() == pytest.approx(5)  # the two 503s, consecutive as far as the provider goes


async def test_a_trial_that_fails_for_the_messages_own_reason_lets_the_next_call_be_the_trial(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=1, cooldown_seconds=5)
    inner.fail_with(TransientProviderError("503"))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    advance(clock, 5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="varsel.providers"):
        # The trial picks an unsendable message: no verdict on the provider, so the cooldown does not double and
        # the next call is the trial.
        inner.fail_with(UnicodeEncodeError("ascii", "\u2028", 0, 1, "no"))
        with pytest.raises(UnicodeEncodeError):
            await g.send(email())
        assert g.blocked_for() == 0.0
        assert caplog.records == []
        # A permanent refusal of the message is an answer: the provider is there, the breaker closes.
        inner.fail_with(PermanentEmailError("refused"))
        with pytest.raises(PermanentEmailError):
            await g.send(email())
        assert g.blocked_for() == 0.0
        assert [r.getMessage() for r in caplog.records] == ["fake: circuit closed, the trial call succeeded"]
    # Closed with the count reset: it opens again after one failure, for the first cooldown.
    inner.fail_with(TransientProviderError("503"))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    assert g.blocked_for() == pytest.approx(5)


async def test_a_trial_refused_by_the_adapter_before_any_call_is_no_verdict(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    # An address the adapter will not write never reached the provider: it must not close the breaker (#19 review).
    g = guard(inner, clock, sleep, failure_threshold=1, cooldown_seconds=5)
    inner.fail_with(TransientProviderError("503"))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    advance(clock, 5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="varsel.providers"):
        inner.fail_with(EmailRefused("the to address is not a valid mailbox"))
        with pytest.raises(EmailRefused):
            await g.send(email())
        assert [r.getMessage() for r in caplog.records] == []  # not closed
        # Still half-open: the next call is the trial, and a provider failure there re-opens it, doubled.
        inner.fail_with(TransientProviderError("503"))
        with pytest.raises(TransientProviderError):
            await g.send(email())
    assert g.blocked_for() == pytest.approx(10)


async def test_calls_from_before_the_opening_do_not_close_the_breaker(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=1, cooldown_seconds=5)
    inner.hold = asyncio.Event()
    inner.fail_with(TransientProviderError("503"))
    failing = asyncio.ensure_future(g.send(email()))
    succeeding = asyncio.ensure_future(g.send(email()))
    await settle()
    inner.hold.set()
    with pytest.raises(TransientProviderError):
        await failing
    await succeeding
    # The late success says little about the provider now; only the trial after the cooldown decides.
    assert g.blocked_for() == pytest.approx(5)


async def test_a_cancelled_trial_lets_the_next_caller_try(
    clock: FrozenClock, inner: FakeProvider, sleep: FakeSleep
) -> None:
    g = guard(inner, clock, sleep, failure_threshold=1, cooldown_seconds=5)
    inner.fail_with(TransientProviderError("503"))
    with pytest.raises(TransientProviderError):
        await g.send(email())
    advance(clock, 5)
    inner.hold = asyncio.Event()
    trial = asyncio.ensure_future(g.send(email()))
    await settle()
    assert g.blocked_for() == TRIAL_WAIT_SECONDS
    trial.cancel()
    await settle()
    assert g.blocked_for() == 0.0
    inner.hold = None
    await g.send(email())
    assert g.blocked_for() == 0.0
