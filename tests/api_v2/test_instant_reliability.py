"""Instant orders, done more safely than the reference (#16 item 2), on SQLite and PostgreSQL, through the real LINK
Mobility adapter and a loopback gateway that counts what reaches it.

The order is stored (claimed, under a lease) before the provider is called, through the provider's guard; the
outcome is written before the caller is answered. A transient failure answers 503 and parks the notification for
the caller's retry with the same key, which sends it once; a permanent refusal answers 201 and the shipment shows
it; concurrent duplicates send once; a client that goes away does not stop the send; a crash between the call and
the outcome's write leaves a notification that still ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select

from tests.providers.linkmobility_peer import LinkMobilityPeer
from varsel.app import Varsel, build
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import notification_attempts, order_chains, orders, sms_notifications, status_feed
from varsel.orders.drafts import EmailTemplateSpec, InstantDraft, InstantEmail, InstantSms, SmsTemplateSpec
from varsel.orders.instant import InstantAnswer, InstantResult
from varsel.orders.vocabulary import EmailContentType
from varsel.providers.base import Accepted, SmsMessage
from varsel.providers.guard import GuardSettings
from varsel.providers.outbox import OutboxSmsProvider
from varsel.settings import Settings
from varsel.shipments.repository import manifest

NUMBER = "+4799999999"
TTL = 300


def sms(key: str, number: str = NUMBER, ttl: int = TTL, body: str = "Your code is 123456") -> InstantDraft:
    return InstantDraft(key, InstantSms(number, SmsTemplateSpec("Varsel", body), ttl), senders_reference=f"ref-{key}")


@asynccontextmanager
async def instant_pipeline(
    settings: Settings, database: Database, clock: FrozenClock, **guard: Any
) -> AsyncIterator[tuple[Varsel, LinkMobilityPeer]]:
    async with LinkMobilityPeer() as peer:
        link = peer.settings(timeout_seconds=5)
        chosen = settings.model_copy(
            update={
                "sms": settings.sms.model_copy(
                    update={"provider": "linkmobility", "linkmobility": link, "guard": GuardSettings(**guard)}
                )
            }
        )
        varsel = build(chosen, clock=clock, database=database)
        try:
            yield varsel, peer
        finally:
            await varsel.workers.email_provider.close()
            await varsel.workers.sms_provider.close()
            await varsel.http.aclose()


async def notification_of(database: Database, order_id: UUID) -> Any:
    async with database.read() as conn:
        return (await conn.execute(select(sms_notifications).where(sms_notifications.c.order_id == order_id))).one()


async def attempts_of(database: Database, notification_id: UUID) -> list[Any]:
    async with database.read() as conn:
        rows = await conn.execute(
            select(notification_attempts)
            .where(notification_attempts.c.notification_id == notification_id)
            .order_by(notification_attempts.c.attempt)
        )
        return list(rows)


async def order_status(database: Database, order_id: UUID) -> str:
    async with database.read() as conn:
        status: str = (await conn.execute(select(orders.c.status).where(orders.c.id == order_id))).scalar_one()
        return status


async def test_an_instant_sms_is_stored_sent_and_recorded_before_the_answer(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        result = await varsel.instant.order("ttd", sms("otp-1"))
        assert result.answer is InstantAnswer.CREATED
        [message] = peer.messages
        row = await notification_of(database, result.shipment.order_id)
        assert message.ref_id == str(row.id)
        assert row.status == "Accepted"
        assert row.claimed_by is None
        # The caller's time to live is the gateway's validity period and the notification's expiry.
        assert row.expiry == clock.now() + timedelta(seconds=TTL)
        assert message.body["relativeValidityTime"] == TTL * 1000
        [attempt] = await attempts_of(database, row.id)
        assert (attempt.outcome, attempt.status) == ("accepted", "Accepted")
        async with database.read() as conn:
            shipment = await manifest(conn, result.shipment.order_id, "ttd")
        assert shipment is not None
        assert (shipment.order_type, shipment.status) == ("Instant", "Processed")
        assert shipment.senders_reference == "ref-otp-1"


async def test_the_same_key_again_answers_the_first_receipt_without_sending(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        first = await varsel.instant.order("ttd", sms("otp-2"))
        email = InstantDraft("otp-2", InstantEmail("kari@example.com", EmailTemplateSpec(
            "noreply@varsel.local", "Code", "123456", EmailContentType.PLAIN)))  # fmt: skip
        again = await varsel.instant.order("ttd", sms("otp-2", body="another body"))
        # The family is shared by the SMS and email routes: an SMS key replays the SMS receipt on email too.
        as_email = await varsel.instant.order("ttd", email)
        assert again == as_email == InstantResult(InstantAnswer.REPLAYED, first.chain_id, first.shipment)
        assert len(peer.messages) == 1
        # Another service owner's key is its own.
        other = await varsel.instant.order("digdir", sms("otp-2"))
        assert other.answer is InstantAnswer.CREATED
        assert other.chain_id != first.chain_id
        assert len(peer.messages) == 2


async def test_a_transient_failure_answers_unavailable_and_the_retry_sends_once(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.fail_next(1, status=503)
        failed = await varsel.instant.order("ttd", sms("otp-3"))
        assert failed.answer is InstantAnswer.UNAVAILABLE
        assert peer.messages == []
        assert len(peer.requests) == 1
        row = await notification_of(database, failed.shipment.order_id)
        # Parked for the caller: New, but due only after its expiry, so no background sender takes it.
        assert row.status == "New"
        assert row.send_after > row.expiry
        assert row.claimed_by is None
        assert "waiting for the caller" in row.status_detail
        clock.advance(timedelta(seconds=TTL - 10))
        assert await varsel.workers.sms.run_once() == 0
        assert peer.messages == []

        retried = await varsel.instant.order("ttd", sms("otp-3"))
        assert retried == InstantResult(InstantAnswer.CREATED, failed.chain_id, failed.shipment)
        assert len(peer.messages) == 1
        assert (await varsel.instant.order("ttd", sms("otp-3"))).answer is InstantAnswer.REPLAYED
        assert len(peer.messages) == 1
        row = await notification_of(database, failed.shipment.order_id)
        assert (row.status, row.attempts) == ("Accepted", 2)
        history = await attempts_of(database, row.id)
        assert [(a.attempt, a.outcome) for a in history] == [(1, "retry"), (2, "accepted")]
        async with database.read() as conn:
            assert len((await conn.execute(select(order_chains))).all()) == 1


async def test_a_parked_notification_the_caller_never_retries_ends_at_its_expiry(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.fail_next(1, status=503)
        failed = await varsel.instant.order("ttd", sms("otp-4", ttl=60))
        assert failed.answer is InstantAnswer.UNAVAILABLE
        clock.advance(timedelta(seconds=61))
        assert await varsel.workers.sms.run_once() == 0
        assert await varsel.workers.sweeper.run_once() == 1
        row = await notification_of(database, failed.shipment.order_id)
        assert row.status == "Failed_TTL"
        assert await order_status(database, failed.shipment.order_id) == "Completed"
        async with database.read() as conn:
            [entry] = (await conn.execute(select(status_feed.c.entry))).scalars()
        assert entry["type"] == "Instant"
        # Too late to retry: the key answers the receipt, and nothing is sent.
        assert (await varsel.instant.order("ttd", sms("otp-4"))).answer is InstantAnswer.REPLAYED
        assert peer.messages == []


async def test_a_permanent_refusal_is_created_and_the_shipment_shows_the_failure(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.reject_destination("+4711111111")
        result = await varsel.instant.order("ttd", sms("otp-5", number="+4711111111"))
        assert result.answer is InstantAnswer.CREATED
        row = await notification_of(database, result.shipment.order_id)
        assert row.status == "Failed_InvalidRecipient"
        assert await order_status(database, result.shipment.order_id) == "Completed"
        async with database.read() as conn:
            shipment = await manifest(conn, result.shipment.order_id, "ttd")
            [entry] = (await conn.execute(select(status_feed.c.entry))).scalars()
        assert shipment is not None
        assert [r.status for r in shipment.recipients] == ["Failed_InvalidRecipient"]
        assert entry["recipients"][0]["status"] == "Failed_InvalidRecipient"


async def test_twenty_concurrent_duplicates_send_one_message(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.delay = 0.05  # the first one is still at the gateway while the others arrive
        results = await asyncio.gather(*(varsel.instant.order("ttd", sms("otp-6")) for _ in range(20)))
        assert sorted(r.answer for r in results).count(InstantAnswer.CREATED) == 1
        assert {r.answer for r in results} == {InstantAnswer.CREATED, InstantAnswer.REPLAYED}
        assert len({(r.chain_id, r.shipment) for r in results}) == 1
        assert len(peer.messages) == 1


async def test_concurrent_retries_of_a_parked_notification_send_it_once(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.fail_next(1, status=503)
        assert (await varsel.instant.order("ttd", sms("otp-7"))).answer is InstantAnswer.UNAVAILABLE
        peer.delay = 0.05
        results = await asyncio.gather(*(varsel.instant.order("ttd", sms("otp-7")) for _ in range(10)))
        assert [r.answer for r in results].count(InstantAnswer.CREATED) == 1
        assert len(peer.messages) == 1


async def test_a_paused_provider_is_not_called_and_the_caller_learns_when_to_come_back(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.rate_limit(60, times=1)
        first = await varsel.instant.order("ttd", sms("otp-8"))
        assert first.answer is InstantAnswer.UNAVAILABLE
        assert first.retry_after is not None
        assert 59 <= first.retry_after <= 60
        reached = len(peer.requests)
        # The guard holds every call while the gateway's pause lasts: this one never reaches it.
        second = await varsel.instant.order("ttd", sms("otp-9"))
        assert second.answer is InstantAnswer.UNAVAILABLE
        assert len(peer.requests) == reached
        row = await notification_of(database, second.shipment.order_id)
        [attempt] = await attempts_of(database, row.id)
        assert attempt.outcome == "refused"
        assert row.status == "New"
        clock.advance(timedelta(seconds=61))
        assert (await varsel.instant.order("ttd", sms("otp-9"))).answer is InstantAnswer.CREATED
        assert len(peer.messages) == 1


async def test_an_open_breaker_answers_unavailable_without_calling(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock, failure_threshold=2, cooldown_seconds=30) as (varsel, peer):
        peer.fail_next(2, status=503)
        for key in ("a", "b"):
            assert (await varsel.instant.order("ttd", sms(key))).answer is InstantAnswer.UNAVAILABLE
        reached = len(peer.requests)
        third = await varsel.instant.order("ttd", sms("c"))
        assert third.answer is InstantAnswer.UNAVAILABLE
        assert third.retry_after is not None
        assert len(peer.requests) == reached
        clock.advance(timedelta(seconds=31))
        assert (await varsel.instant.order("ttd", sms("c"))).answer is InstantAnswer.CREATED
        assert len(peer.messages) == 1


async def test_instant_sms_ignore_the_daytime_window(settings: Settings, database: Database) -> None:
    night = FrozenClock(datetime(2026, 3, 2, 23, 30, tzinfo=UTC))  # 00:30 in Oslo
    async with instant_pipeline(settings, database, night) as (varsel, peer):
        assert (await varsel.instant.order("ttd", sms("night"))).answer is InstantAnswer.CREATED
        assert len(peer.messages) == 1


async def _sent_once_and_recorded_despite_cancellation(
    task: asyncio.Future[Any], database: Database, peer: Any
) -> None:
    """The cancelled caller hears so, the message reached the peer once, and its outcome is recorded (Accepted, no
    longer held)."""
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(peer.messages) == 1
    async with database.read() as conn:
        [row] = (await conn.execute(select(sms_notifications))).all()
    assert row.status == "Accepted"
    assert row.claimed_by is None


async def test_a_caller_that_goes_away_does_not_stop_the_send_or_its_record(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.delay = 1.0
        task = asyncio.ensure_future(varsel.instant.order("ttd", sms("gone")))
        # Cancelled (as a request whose client went away can be) once the order is stored: the call is under way.
        while not task.done():
            async with database.read() as conn:
                if (await conn.execute(select(sms_notifications.c.id))).first() is not None:
                    break
        task.cancel()
        await _sent_once_and_recorded_despite_cancellation(task, database, peer)


async def test_a_caller_that_goes_away_while_the_store_is_written_does_not_stop_the_send(
    settings: Settings, database: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation that comes once the order is stored but before its caller has heard so (the write committed,
    its answer on the way back) must not leave the order unsent until its lease runs out: the send goes on."""
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        stored = asyncio.Event()
        go_on = asyncio.Event()
        writer = varsel.instant._writer
        write = writer.write

        async def write_then_wait(item: Any) -> Any:
            answer = await write(item)
            stored.set()
            await go_on.wait()  # the window: committed, not yet back with the caller
            return answer

        monkeypatch.setattr(writer, "write", write_then_wait)
        task = asyncio.ensure_future(varsel.instant.order("ttd", sms("gone-early")))
        await asyncio.wait_for(stored.wait(), 10)
        task.cancel()
        await asyncio.sleep(0)
        go_on.set()
        await _sent_once_and_recorded_despite_cancellation(task, database, peer)


class ProcessDeath(BaseException):
    """Stands in for the process dying: nothing in varsel catches a BaseException that is not cancellation."""


class DiesAfterTheCall:
    """The outbox SMS provider, but the first call kills the process once the message is handed over."""

    name = "outbox"

    def __init__(self, inner: OutboxSmsProvider) -> None:
        self.inner = inner
        self.calls = 0

    async def send(self, message: SmsMessage) -> Accepted:
        self.calls += 1
        accepted = await self.inner.send(message)
        if self.calls == 1:
            raise ProcessDeath()
        return accepted

    async def close(self) -> None:
        await self.inner.close()


async def test_a_crash_between_the_call_and_the_outcome_still_ends_the_notification(
    tmp_path: Path, database: Database, clock: FrozenClock
) -> None:
    settings = Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": []})
    provider = DiesAfterTheCall(OutboxSmsProvider(settings.data_dir / "outbox"))
    varsel = build(settings, clock=clock, database=database, sms_provider=provider)
    try:
        with pytest.raises(ProcessDeath):
            await varsel.instant.order("ttd", sms("crash"))
        async with database.read() as conn:
            [row] = (await conn.execute(select(sms_notifications))).all()
        assert row.status == "Sending"  # under the dead process's lease
        # While the lease lasts no sender takes it (it may be at the provider); then one does, and it ends.
        assert await varsel.workers.sms.run_once() == 0
        clock.advance(timedelta(seconds=settings.dispatch.lease_seconds + 1))
        assert await varsel.workers.sms.run_once() == 1
        async with database.read() as conn:
            [row] = (await conn.execute(select(sms_notifications))).all()
        assert row.status == "Delivered"
        assert await order_status(database, row.order_id) == "Completed"
        assert provider.calls == 2
    finally:
        await varsel.http.aclose()


async def test_the_background_senders_recovery_leaves_an_instant_send_alone(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    """In `varsel serve` the API and the senders share a process: a sender giving back what it holds after a failed
    round must not take back a notification the API is sending, or it would be sent again."""
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.delay = 0.5
        task = asyncio.ensure_future(varsel.instant.order("ttd", sms("shared")))
        while not task.done():
            async with database.read() as conn:
                if (await conn.execute(select(sms_notifications.c.id))).first() is not None:
                    break
        await varsel.workers.sms.recover()
        assert (await task).answer is InstantAnswer.CREATED
        assert await varsel.workers.sms.run_once() == 0
        assert len(peer.messages) == 1
        async with database.read() as conn:
            [row] = (await conn.execute(select(sms_notifications))).all()
        assert row.status == "Accepted"


async def _stored(database: Database, count: int = 1) -> None:
    """Until `count` instant notifications are stored (the last one's provider call is then under way)."""
    while True:
        async with database.read() as conn:
            if len((await conn.execute(select(sms_notifications.c.id))).all()) >= count:
                return


async def test_a_retry_while_the_first_try_is_under_way_is_answered_as_that_try_ends(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    """A client that gave up waiting and retried must not hear 200 for a message that then fails for now: it hears
    what the first try came to, and its next retry sends."""
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        peer.delay = 0.5
        peer.fail_next(1, status=503)
        first = asyncio.ensure_future(varsel.instant.order("ttd", sms("slow")))
        await _stored(database)
        retry = await varsel.instant.order("ttd", sms("slow"))
        assert retry.answer is InstantAnswer.UNAVAILABLE
        assert (await first).answer is InstantAnswer.UNAVAILABLE
        assert peer.messages == []
        peer.delay = 0
        assert (await varsel.instant.order("ttd", sms("slow"))).answer is InstantAnswer.CREATED
        assert len(peer.messages) == 1

        peer.delay = 0.5
        second = asyncio.ensure_future(varsel.instant.order("ttd", sms("slow-but-fine")))
        await _stored(database, count=2)  # so that the retry below is the one that finds it under way
        again = await varsel.instant.order("ttd", sms("slow-but-fine"))
        assert (await second).answer is InstantAnswer.CREATED
        assert again.answer is InstantAnswer.REPLAYED
        assert len(peer.messages) == 2


async def test_a_retry_at_another_process_while_the_first_try_is_under_way_is_told_to_come_back(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        other = build(settings, clock=clock, database=database)  # another API process on the same database
        try:
            peer.delay = 0.5
            first = asyncio.ensure_future(varsel.instant.order("ttd", sms("two-places")))
            await _stored(database)
            retry = await other.instant.order("ttd", sms("two-places"))
            assert (retry.answer, retry.retry_after) == (InstantAnswer.UNAVAILABLE, 1.0)
            assert (await first).answer is InstantAnswer.CREATED
            assert (await other.instant.order("ttd", sms("two-places"))).answer is InstantAnswer.REPLAYED
            assert len(peer.messages) == 1
        finally:
            await other.http.aclose()


async def test_an_instant_send_never_queues_at_the_guard_past_a_quarter_of_its_lease(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    """Queued behind the provider's concurrency cap longer than its lease, an instant message would be taken over
    by a worker and sent twice: it is given back (503, parked for the caller) after a quarter of the lease."""
    short = settings.model_copy(update={"dispatch": settings.dispatch.model_copy(update={"lease_seconds": 2})})
    async with instant_pipeline(short, database, clock, max_concurrency=1) as (varsel, peer):
        peer.delay = 1.5
        first = asyncio.ensure_future(varsel.instant.order("ttd", sms("holds-the-slot")))
        await _stored(database)
        queued = await varsel.instant.order("ttd", sms("queued"))
        assert queued.answer is InstantAnswer.UNAVAILABLE
        assert (await first).answer is InstantAnswer.CREATED
        assert len(peer.requests) == 1  # the queued one never reached the gateway
        peer.delay = 0
        assert (await varsel.instant.order("ttd", sms("queued"))).answer is InstantAnswer.CREATED
        assert len(peer.messages) == 2


async def test_a_slow_outcome_write_does_not_hold_the_answer_and_still_ends_written(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    """The database slow or away when the outcome is written: the caller hears the provider's verdict after a
    bounded wait, and the write goes on until it lands."""
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        varsel.instant._write_wait = 0.2
        peer.delay = 0.3
        task = asyncio.ensure_future(varsel.instant.order("ttd", sms("db-slow")))
        await _stored(database)
        async with database.transaction() as conn:
            # Holds the notification's row (PostgreSQL) or the database's write lock (SQLite) past the answer.
            [row] = (await conn.execute(select(sms_notifications).with_for_update())).all()
            # Waited for without cancelling it (the send is shielded from cancellation and would wait for this lock).
            done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the answer waited for the outcome's write"
        assert (await task).answer is InstantAnswer.CREATED
        await asyncio.gather(*list(varsel.instant._writes))
        assert len(peer.messages) == 1
        assert (await notification_of(database, row.order_id)).status == "Accepted"
