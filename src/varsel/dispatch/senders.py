"""The senders: claim New notifications, let go of the database, hand each to the provider, record the outcome.

One sender per channel. Outcomes of a batch are written in one transaction; transient failures go back to New
with a backoff; a provider that reports delivery at once (the outbox) moves the notification on to Delivered
through the same guarded update that delivery reports use.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Table

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.group_commit import GroupCommit
from varsel.db.tables import NOTIFICATION_TABLES, email_notifications, sms_notifications
from varsel.dispatch import repository
from varsel.dispatch.attachments import AttachmentFetcher
from varsel.dispatch.repository import NEW, SENDING
from varsel.dispatch.retry import RetryPolicy
from varsel.ids import new_id
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.observability import Telemetry
from varsel.orders.vocabulary import EmailContentType
from varsel.providers.base import (
    Accepted,
    Attachment,
    EmailMessage,
    PermanentEmailError,
    PermanentSmsError,
    ProviderUnavailable,
    SmsMessage,
    TransientProviderError,
)
from varsel.providers.guard import ProviderGuard
from varsel.providers.simulator import SIMULATOR, Simulator
from varsel.reports import repository as report_repository
from varsel.reports.service import DeliveryReports
from varsel.settings import AttachmentSettings, DispatchSettings, ReportSettings
from varsel.webhooks import outbox
from varsel.webhooks.events import NotificationChange, NotificationFacts, facts_of

log = logging.getLogger("varsel.dispatch")

# The outcomes of held sends (instant orders) written in one transaction: at most this many.
MAX_HELD_GROUP = 256

# How far past its expiry an instant notification parked for its caller's retry is due: never, for a sender, since
# a claim needs expiry >= now; the expiry sweeper ends it.
PARKED_PAST_EXPIRY = timedelta(seconds=1)

T = TypeVar("T")


@dataclass(frozen=True)
class _Outcome:
    notification_id: UUID
    order_id: UUID
    values: dict[str, Any]
    delivered: bool = False
    # The provider call's history row; None when the provider was not called (deferred to the window, released).
    attempt: dict[str, Any] | None = None
    called: bool = True
    # The call raised an exception neither provider failure nor permanent failure (see `_unexpected`).
    unexpected: bool = False
    # What the outcome's webhook event tells of the notification (varsel.webhooks.events).
    facts: NotificationFacts | None = None


async def finish_despite_cancellation(work: Awaitable[T]) -> T:
    """Run `work` to its end even if the caller is cancelled meanwhile, then pass the cancellation on.

    Recording what a provider already took must not be cut off by a shutdown: a rolled-back outcome leaves the
    notification Sending, and when its lease runs out it would be sent a second time."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError()
    return task.result()


class Sender:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        table: Table,
        send: Callable[[Any, Any, datetime, float], Any],
        provider: ProviderGuard[Any],
        settings: DispatchSettings,
        worker: str,
        telemetry: Telemetry,
        simulated: Callable[[Any], bool] | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._table = table
        self._channel = "email" if table is email_notifications else "sms"
        self._send = send
        self._provider_name = provider.name
        # Which claimed rows go to a simulated recipient: `send` hands those to the simulator, not the provider, and
        # they are recorded as the simulator's (varsel.providers.simulator).
        self._simulated = simulated or (lambda row: False)
        # As many sends under way as the guard lets through to the provider: more would only wait inside it.
        self._gate = asyncio.Semaphore(provider.max_concurrency)
        self._settings = settings
        self._worker = worker
        self._telemetry = telemetry
        self._blocked_for = provider.blocked_for
        self._retry = RetryPolicy(settings.retry_first_seconds, settings.retry_max_seconds)
        # How long a send may wait for the provider's guard (its concurrency cap, its rate limit) or for room for
        # attachments before the message is given back unsent: waiting must never outlast the claim, or another
        # worker takes the message over and sends it too.
        self._wait_limit = settings.lease_seconds / 4
        # The outcomes of held sends (instant orders) that end together are written together (group commit).
        self._held_writes: GroupCommit[tuple[_Outcome, float], None] = GroupCommit(
            self._record_held, max_items=MAX_HELD_GROUP
        )
        # Notifications of failed rounds that the provider may have taken, with when (monotonic) their lease ends:
        # `recover` leaves them to their lease, so that they are not sent twice.
        self._uncertain: dict[UUID, float] = {}

    @property
    def table(self) -> Table:
        return self._table

    def _provider_of(self, row: Any) -> str:
        """Who takes this notification's message: the provider, or the simulator for a simulated recipient (whose
        notifications then await the simulator's report, whatever the provider's habits, as `leaves_pending` reads
        the provider column)."""
        return SIMULATOR if self._simulated(row) else self._provider_name

    async def run_once(self) -> int:
        if self._blocked_for() > 0:
            # The provider is paused (429) or its breaker is open: claiming now would only fail the batch.
            return 0
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        with self._telemetry.claim_seconds.labels(self._channel).time():
            async with self._db.transaction() as conn:
                claimed = await repository.claim_notifications(
                    conn, self._table, self._worker, now, lease_until, self._settings.notification_batch_size
                )
                templates = await repository.order_templates(conn, [row.order_id for row in claimed])
                # Their webhook events (a take-over, Sending again after a lease ran out, is no change), if any of
                # their owners subscribes (the templates' query says whether).
                if any(template.watched for template in templates.values()):
                    await outbox.write_notification_changes(
                        conn, [self._change(row, templates[row.order_id], SENDING, now) for row in claimed]
                    )
        if not claimed:
            return 0
        for row in claimed:
            self._telemetry.transition(
                self._channel, row.id, row.previous_status, SENDING, order=row.order_id, attempt=row.attempts
            )
        # No transaction is open around the provider calls. Outcomes are written as the calls finish, in groups of
        # whatever finished while the previous group was being written (group commit: a fast provider still gets
        # few, large writes), and a call holds its place among the provider's concurrent calls until its outcome is
        # written. So a crash at any moment leaves at most that many messages taken by the provider but not yet
        # known to the database: only those can be sent a second time, never the whole batch.
        started: set[UUID] = set()
        finished: asyncio.Queue[tuple[_Outcome | None, asyncio.Event]] = asyncio.Queue()

        async def call(row: Any) -> None:
            async with self._gate:
                try:
                    outcome: _Outcome | None = await self._one(row, templates[row.order_id], started)
                except Exception:
                    # Not a provider error (those are outcomes): a bug. The notification stays Sending until its
                    # lease runs out and is tried again then.
                    log.exception("%s %s: sending failed unexpectedly", self._channel, row.id)
                    outcome = None
                written = asyncio.Event()
                finished.put_nowait((outcome, written))
                await written.wait()

        calls = [asyncio.ensure_future(call(row)) for row in claimed]
        give_up_at = time.monotonic() + self._settings.lease_seconds
        remaining = len(claimed)
        recorded: set[UUID] = set()
        try:
            while remaining:
                group = [await finished.get()]
                group += _drain(finished)
                remaining -= len(group)
                try:
                    await self._record_until_written([o for o, _ in group if o is not None], give_up_at)
                    recorded.update(o.notification_id for o, _ in group if o is not None)
                finally:
                    for _, written in group:
                        written.set()
        except asyncio.CancelledError:
            # Shutting down past the grace period: keep what the provider took, give back what it never saw.
            # Calls cut off at the provider stay Sending; their lease brings them back (the one duplicate risk).
            for pending in calls:
                pending.cancel()
            unrecorded = [o for o, _ in _drain(finished) if o is not None]
            released = [
                _Outcome(
                    row.id,
                    row.order_id,
                    {"status": NEW, "send_after": row.send_after, "attempts": row.attempts - 1},
                    facts=self._facts(row, templates[row.order_id]),
                )
                for row in claimed
                if row.id not in started
            ]
            log.warning(
                "%s sender stopping: %d outcomes recorded, %d released unsent, %d cut off at the provider",
                self._channel,
                len(claimed) - remaining + len(unrecorded),
                len(released),
                remaining - len(unrecorded) - len(released),
            )
            await finish_despite_cancellation(self._record(unrecorded + released))
            raise
        except Exception:
            for pending in calls:
                pending.cancel()
            self._uncertain.update((i, give_up_at) for i in started - recorded)
            raise
        return len(claimed)

    def blocked_for(self) -> float:
        """Seconds until the provider's guard lets calls through again (paused or breaker open); 0 when it does."""
        return self._blocked_for()

    async def send_held(self, row: Any, template: Any) -> tuple[str, asyncio.Future[None]]:
        """Send one notification this sender already holds (an instant order's, claimed when it was stored), and
        write its outcome as `run_once` writes a batch's. Answers the status the outcome sets and the write, under
        way: its caller may answer before the write ends, when the database is slow to take it.

        A transient failure, or the guard refusing the call, parks the notification for its caller instead of
        queueing a retry (see varsel.orders.instant): New, but due only after its expiry, so no background sender
        takes it; the failed try stays in its history."""
        give_up_at = time.monotonic() + self._settings.lease_seconds
        outcome = await self._one(row, template, set())
        if outcome.values["status"] == NEW:
            outcome = self._parked(row, outcome)
        write = self._held_writes.submit((outcome, give_up_at))
        status: str = outcome.values["status"]
        return status, write

    async def _record_held(self, group: list[tuple[_Outcome, float]]) -> list[None]:
        await self._record_until_written([outcome for outcome, _ in group], min(until for _, until in group))
        return [None] * len(group)

    def _parked(self, row: Any, outcome: _Outcome) -> _Outcome:
        detail = outcome.values.get("status_detail") or "the provider did not take the message"
        values = {
            **outcome.values,
            "send_after": row.expiry + PARKED_PAST_EXPIRY,
            "status_detail": (
                f"not sent: {detail}; waiting for the caller to try again with the same idempotencyId until "
                f"{row.expiry.isoformat()}"
            )[:2000],
        }
        attempt = outcome.attempt
        if attempt is None:
            # Refused by the guard, the provider never saw it; the caller was answered 503 for it, so it is
            # written down all the same.
            attempt = self._attempt(row, self._clock.now(), "refused", NEW, None, str(detail)[:2000])
            # Counted as the try it is in the history: the caller's retry is the next one.
            values["attempts"] = row.attempts
        return replace(outcome, values=values, attempt=attempt)

    async def recover(self) -> None:
        """After a failed round (the database away): what this worker holds as Sending but sends no more goes back
        to New now, not when its lease runs out (minutes); but for what the provider may have taken."""
        now = time.monotonic()
        self._uncertain = {i: until for i, until in self._uncertain.items() if until > now}
        changed = self._clock.now()
        async with self._db.transaction() as conn:
            released = await repository.release_notifications_held_by(
                conn, self._table, self._worker, list(self._uncertain)
            )
            await outbox.write_notification_changes(
                conn, [NotificationChange(self._channel, i, SENDING, NEW, changed) for i in released]
            )
        self._telemetry.transitions_of(self._channel, released, SENDING, NEW, note="released after a failed round")

    async def _record_until_written(self, outcomes: list[_Outcome], give_up_at: float) -> None:
        """Write outcomes, trying again while the database is away: the provider has taken these messages, and an
        outcome never written means the message is sent again when its lease runs out. Past the lease, another
        worker may have taken the notifications over, so the write gives up (and would be refused anyway)."""
        delay = 0.2
        while True:
            try:
                await finish_despite_cancellation(self._record(outcomes))
                return
            except Exception as error:
                if time.monotonic() + delay > give_up_at:
                    log.error(
                        "%s sender: could not record %d outcomes before their lease ran out (%s); they will be "
                        "sent again",
                        self._channel,
                        len(outcomes),
                        error,
                    )
                    raise
                log.warning(
                    "%s sender: recording %d outcomes failed (%s); trying again in %.1f s",
                    self._channel,
                    len(outcomes),
                    error,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def next_due(self) -> datetime | None:
        now = self._clock.now()
        blocked = self._blocked_for()
        async with self._db.read() as conn:
            due = await repository.next_sendable(conn, self._table, now)
        if blocked > 0 and due is not None:
            return max(due, now + timedelta(seconds=blocked))
        return due

    async def _one(self, row: Any, template: Any, started: set[UUID]) -> _Outcome:
        now = self._clock.now()
        started.add(row.id)
        began = time.perf_counter()
        outcome = replace(await self._call(row, template, now), facts=self._facts(row, template))
        status = outcome.values["status"]
        if not outcome.called:
            return outcome  # deferred to the SMS window
        if status in (EmailStatus.SUCCEEDED.value, SmsStatus.ACCEPTED.value):
            kind = "accepted"
        elif status == NEW:
            kind = "error" if outcome.unexpected else "retry"
        else:
            kind = "failed"
        self._telemetry.provider_seconds.labels(self._channel, self._provider_of(row), kind).observe(
            time.perf_counter() - began
        )
        attempt = self._attempt(
            row, now, kind, status, outcome.values.get("provider_reference"), outcome.values.get("status_detail")
        )
        return replace(outcome, attempt=attempt)

    def _facts(self, row: Any, template: Any) -> NotificationFacts:
        """What a webhook event of this notification tells of it (the template is its order's row)."""
        return facts_of(row, getattr(template, "senders_reference", None), self._channel)

    def _change(self, row: Any, template: Any, status: str, now: datetime) -> NotificationChange:
        """The change of a notification row (with its previous_status) to `status`."""
        return NotificationChange(self._channel, row.id, row.previous_status, status, now, self._facts(row, template))

    def _outcome_change(self, outcome: _Outcome, now: datetime) -> NotificationChange:
        """The change an outcome makes: from Sending to its status (at the time it set, else when it is recorded)."""
        status: str = outcome.values["status"]
        at = outcome.values.get("status_changed") or now
        return NotificationChange(self._channel, outcome.notification_id, SENDING, status, at, outcome.facts)

    def _attempt(
        self, row: Any, started: datetime, outcome: str, status: str, reference: str | None, detail: str | None
    ) -> dict[str, Any]:
        """The notification_attempts row of one try: what the history (`varsel notifications history`) shows."""
        return {
            "id": new_id(),
            "channel": self._channel,
            "notification_id": row.id,
            "attempt": row.attempts,
            "started": started,
            "finished": self._clock.now(),
            "provider": self._provider_of(row),
            "outcome": outcome,
            "status": status,
            "provider_reference": reference,
            "detail": detail,
        }

    async def _call(self, row: Any, template: Any, now: datetime) -> _Outcome:
        try:
            result = await self._send(row, template, now, self._wait_limit)
        except _Defer as defer:
            return _Outcome(
                row.id,
                row.order_id,
                {"status": NEW, "send_after": defer.until, "attempts": row.attempts - 1},
                called=False,
            )
        except ProviderUnavailable as error:
            # Refused by the guard without reaching the provider: no attempt, and back when the guard reopens.
            return _Outcome(
                row.id,
                row.order_id,
                {
                    "status": NEW,
                    "send_after": now + timedelta(seconds=error.retry_after or self._settings.retry_first_seconds),
                    "attempts": row.attempts - 1,
                    "status_detail": str(error)[:2000],
                },
                called=False,
            )
        except TransientProviderError as error:
            delay = self._retry.delay(row.attempts, error.retry_after)
            return _Outcome(
                row.id, row.order_id, {"status": NEW, "send_after": now + delay, "status_detail": str(error)[:2000]}
            )
        except (PermanentEmailError, PermanentSmsError) as error:
            return _Outcome(
                row.id,
                row.order_id,
                {"status": error.status.value, "status_changed": now, "status_detail": str(error)[:2000]},
            )
        except Exception as error:
            return await self._unexpected(row, now, error)
        accepted_status = EmailStatus.SUCCEEDED.value if self._channel == "email" else SmsStatus.ACCEPTED.value
        assert isinstance(result, Accepted)
        return _Outcome(
            row.id,
            row.order_id,
            {
                "status": accepted_status,
                "status_changed": now,
                "provider": self._provider_of(row),
                "provider_reference": result.reference,
                "status_detail": None,
            },
            delivered=result.delivered,
        )

    async def _unexpected(self, row: Any, now: datetime, error: Exception) -> _Outcome:
        """An exception that is neither a provider failure nor a permanent one: an adapter bug, or a message the
        adapter cannot handle. The guard turns every failure of the provider into TransientProviderError, so this
        one is the message's own: retried with backoff in case it was a passing fault, but only so many times in
        all (`unexpected_error_attempts`), then the notification fails with the exception as its reason. Retried
        until expiry, an unsendable message would be tried (and its traceback logged) every few minutes for days."""
        async with self._db.read() as conn:
            earlier = await repository.unexpected_errors(conn, self._channel, row.id)
        tries, allowed = earlier + 1, self._settings.unexpected_error_attempts
        detail = f"unexpected error (try {tries} of {allowed}): {error!r}"[:2000]
        final = tries >= allowed
        log.exception(
            "%s %s: sending raised unexpectedly (try %d of %d)%s",
            self._channel,
            row.id,
            tries,
            allowed,
            "; the notification fails" if final else "",
        )
        if final:
            failed = EmailStatus.FAILED.value if self._channel == "email" else SmsStatus.FAILED.value
            return _Outcome(row.id, row.order_id, {"status": failed, "status_changed": now, "status_detail": detail})
        delay = self._retry.delay(tries)
        values = {"status": NEW, "send_after": now + delay, "status_detail": detail}
        return _Outcome(row.id, row.order_id, values, unexpected=True)

    async def _record(self, outcomes: list[_Outcome]) -> None:
        if not outcomes:
            return
        now = self._clock.now()
        delivered = EmailStatus.DELIVERED.value if self._channel == "email" else SmsStatus.DELIVERED.value
        began = time.perf_counter()
        completed: list[UUID] = []
        if self._pending_only(outcomes):
            # Nothing to complete, no report to apply: the outcomes and their attempts in one statement on
            # PostgreSQL (one round trip), in a few direct calls on SQLite (an instant order's answer waits for this).
            pending = [(o.notification_id, o.values) for o in outcomes]
            attempts = [o.attempt for o in outcomes if o.attempt is not None]
            if self._db.dialect == "postgresql":
                # The statement writes the webhook events too, built by the database for the subscribers it finds.
                async with self._db.statement() as conn:
                    held = await repository.record_pending_outcomes(
                        conn, self._table, self._worker, pending, attempts, now
                    )
            else:
                changes = [self._outcome_change(o, now) for o in outcomes]
                held = await self._db.sqlite_write(
                    functools.partial(
                        repository.record_pending_outcomes_sqlite,
                        table=self._table,
                        worker=self._worker,
                        outcomes=pending,
                        attempts=attempts,
                        changes=changes,
                    )
                )
            recorded = [outcome for outcome in outcomes if outcome.notification_id in held]
            self._lost(outcome for outcome in outcomes if outcome.notification_id not in held)
        else:
            recorded, completed = await self._record_in_transaction(outcomes, now, delivered)
        # Observed once committed: a failed try, written again by _record_until_written, is not a group.
        self._telemetry.outcome_write_seconds.labels(self._channel).observe(time.perf_counter() - began)
        self._telemetry.outcome_group_size.labels(self._channel).observe(len(outcomes))
        self._observe_recorded(recorded, completed, delivered)

    def _pending_only(self, outcomes: list[_Outcome]) -> bool:
        """Whether the outcomes take the short way: none delivered at once, none ending its notification (so no
        order to complete), all setting the same columns, each with its webhook event's facts at hand."""
        shapes = {repository.outcome_shape(o.values) for o in outcomes}
        return len(shapes) == 1 and all(
            not o.delivered
            and o.facts is not None
            and repository.leaves_pending(self._table, o.values["status"], o.values.get("provider"))
            for o in outcomes
        )

    def _lost(self, outcomes: Iterable[_Outcome]) -> None:
        for outcome in outcomes:
            log.warning("%s %s: outcome not recorded, the claim was lost", self._channel, outcome.notification_id)

    async def _record_in_transaction(
        self, outcomes: list[_Outcome], now: datetime, delivered: str
    ) -> tuple[list[_Outcome], list[UUID]]:
        touched: set[UUID] = set()
        recorded: list[_Outcome] = []
        changes: list[NotificationChange] = []
        async with self._db.transaction() as conn:
            held = await repository.record_outcomes(
                conn, self._table, self._worker, [(o.notification_id, o.values) for o in outcomes]
            )
            self._lost(outcome for outcome in outcomes if outcome.notification_id not in held)
            for outcome in outcomes:
                if outcome.notification_id not in held:
                    continue
                recorded.append(outcome)
                changes.append(self._outcome_change(outcome, now))
                if outcome.delivered and (
                    await repository.apply_delivery_report(conn, self._table, outcome.notification_id, delivered, now)
                    is not None
                ):
                    changes.append(replace(changes[-1], previous=changes[-1].status, status=delivered, occurred=now))
                final_status = delivered if outcome.delivered else outcome.values["status"]
                if not repository.leaves_pending(self._table, final_status, outcome.values.get("provider")):
                    # Only a notification that reached a final status can complete its order: one still
                    # awaiting its delivery report (most SMS) cannot, and its order is not looked at.
                    touched.add(outcome.order_id)
            # The webhook events of the changes, before the orders' (complete_orders writes those with the feed), if
            # any of their owners subscribes (the held rows' read said whether).
            if held.watched:
                await outbox.write_notification_changes(conn, changes)
            completed = await repository.complete_orders(conn, sorted(touched), now)
            await report_repository.insert_attempts(conn, [o.attempt for o in recorded if o.attempt is not None])
        return recorded, completed

    def _observe_recorded(self, recorded: list[_Outcome], completed: list[UUID], delivered: str) -> None:
        for outcome in recorded:
            status = outcome.values["status"]
            self._telemetry.transition(
                self._channel,
                outcome.notification_id,
                SENDING,
                status,
                order=outcome.order_id,
                retry_at=outcome.values.get("send_after") if status == NEW else None,
                detail=outcome.values.get("status_detail"),
            )
            if outcome.delivered:
                self._telemetry.transition(
                    self._channel, outcome.notification_id, status, delivered, order=outcome.order_id
                )
        self._telemetry.transitions_of("order", completed, OrderStatus.PROCESSED.value, OrderStatus.COMPLETED.value)


def _drain(queue: asyncio.Queue[T]) -> list[T]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


class _Defer(Exception):
    def __init__(self, until: datetime) -> None:
        super().__init__(f"deferred until {until.isoformat()}")
        self.until = until


def email_sender(
    database: Database,
    clock: Clock,
    provider: ProviderGuard[EmailMessage],
    settings: DispatchSettings,
    worker: str,
    telemetry: Telemetry,
    attachments: AttachmentFetcher | None = None,
    reports: DeliveryReports | None = None,
) -> Sender:
    fetcher = attachments or AttachmentFetcher(AttachmentSettings())
    simulator = _simulator(database, clock, telemetry, reports)

    def message(row: Any, template: Any, attachments: tuple[Attachment, ...] = ()) -> EmailMessage:
        return EmailMessage(
            notification_id=row.id,
            from_address=template.email_from_address,
            to_address=row.email_address,
            subject=row.subject if row.subject is not None else template.email_subject,
            body=row.body if row.body is not None else template.email_body,
            content_type=EmailContentType(template.email_content_type),
            attachments=attachments,
        )

    async def hand_over(row: Any, email: EmailMessage, wait_limit: float) -> Accepted:
        if simulator.simulates_email(row.email_address):
            return await simulator.send_email(email, row.attempts)
        return await provider.send(email, wait_limit)

    async def send(row: Any, template: Any, now: datetime, wait_limit: float) -> Accepted:
        if not template.attachments:
            return await hand_over(row, message(row, template), wait_limit)
        # Held in memory from the fetch until the provider has it: only so many such emails at once (the fetcher's
        # room), whatever the sender's concurrency. One that finds no room within its wait is given back unsent.
        room = fetcher.room()
        try:
            async with asyncio.timeout(wait_limit):
                await room.acquire()
        except TimeoutError:
            raise _Defer(now) from None
        try:
            # Fetched now, outside any transaction and before the provider's guard: a store's failure is raised as
            # the email's own (varsel.dispatch.attachments), never the provider's.
            attachments = await fetcher.fetch(template.attachments)
            return await hand_over(row, message(row, template, attachments), wait_limit)
        finally:
            room.release()

    return Sender(
        database,
        clock,
        email_notifications,
        send,
        provider,
        settings,
        worker,
        telemetry,
        simulated=lambda row: simulator.simulates_email(row.email_address),
    )


def sms_sender(
    database: Database,
    clock: Clock,
    provider: ProviderGuard[SmsMessage],
    settings: DispatchSettings,
    worker: str,
    telemetry: Telemetry,
    reports: DeliveryReports | None = None,
) -> Sender:
    simulator = _simulator(database, clock, telemetry, reports)

    async def send(row: Any, template: Any, now: datetime, wait_limit: float) -> Accepted:
        if template.sms_sending_time_policy == "Daytime":
            opening = settings.sms_daytime.next_send(now)
            if opening > now:
                # Retries or a slow queue carried it past 17:00: it waits for the next morning, not sent at night.
                raise _Defer(opening)
        message = SmsMessage(
            notification_id=row.id,
            sender=template.sms_sender,
            to_number=row.mobile_number,
            body=row.body if row.body is not None else template.sms_body,
            expiry=row.expiry,
        )
        if simulator.simulates_sms(row.mobile_number):
            return await simulator.send_sms(message, row.attempts)
        return await provider.send(message, wait_limit)

    return Sender(
        database,
        clock,
        sms_notifications,
        send,
        provider,
        settings,
        worker,
        telemetry,
        simulated=lambda row: simulator.simulates_sms(row.mobile_number),
    )


def _simulator(database: Database, clock: Clock, telemetry: Telemetry, reports: DeliveryReports | None) -> Simulator:
    """The simulator of a sender, which hands its reports to `reports` (the application's delivery-report service),
    or, for a sender built alone (tests, tools), to one with the default report settings: a simulated recipient must
    never reach a provider, so every sender has one."""
    if reports is None:
        defaults = ReportSettings()
        reports = DeliveryReports(
            database, clock, telemetry, defaults.retry_seconds, timedelta(minutes=defaults.retry_window_minutes)
        )
    return Simulator(reports.receive, clock)


class ExpirySweeper:
    """Ends what can no longer succeed: Failed_TTL for notifications past expiry, then completes their orders."""

    REPORT_GRACE = timedelta(minutes=5)

    def __init__(self, database: Database, clock: Clock, telemetry: Telemetry) -> None:
        self._db = database
        self._clock = clock
        self._telemetry = telemetry

    async def run_once(self) -> int:
        now = self._clock.now()
        expired: dict[str, list[tuple[str, Any]]] = {}
        async with self._db.transaction() as conn:
            for channel, table in NOTIFICATION_TABLES.items():
                expired[channel] = await repository.expire_notifications(conn, table, now, self.REPORT_GRACE)
            await outbox.write_notification_changes(
                conn,
                [
                    NotificationChange(channel, row.id, previous, repository.FAILED_TTL, now)
                    for channel, rows in expired.items()
                    for previous, row in rows
                ],
            )
            orders = sorted({row.order_id for rows in expired.values() for _, row in rows})
            completed = await repository.complete_orders(conn, orders, now)
        for channel, rows in expired.items():
            for previous, row in rows:
                self._telemetry.transition(channel, row.id, previous, repository.FAILED_TTL, order=row.order_id)
        self._telemetry.transitions_of("order", completed, OrderStatus.PROCESSED.value, OrderStatus.COMPLETED.value)
        return sum(len(rows) for rows in expired.values())
