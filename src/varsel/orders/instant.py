"""v2 instant orders: one message to one address, handed to the provider while the caller waits.

The reference calls the provider first and stores afterwards: a database failure after the call loses the record
(and the caller's retry sends again), and concurrent duplicates can both send. varsel turns that around:

1. One transaction stores the idempotency key (the chain row), the order (Instant, already Processed: there is
   nothing to look up) and its one notification, already Sending under this process's claim and lease, so no
   sender takes it meanwhile. A request whose key is taken stores nothing and answers the stored receipt (200): a
   concurrent duplicate never reaches the provider.
2. No transaction is open while the provider is called, through the provider's guard (its concurrency cap, rate
   limit, 429 pause and breaker apply as for every sender).
3. The outcome is written as a sender writes it (the attempt into the notification's history, the order completed
   and its feed entry when the notification is final), then the caller is answered: accepted or refused for good
   (an invalid number, say) is 201, and the shipment tells which.

A transient failure (the provider down, timing out, or the guard refusing: paused or breaker open) answers 503
and parks the notification: New, but due only after its expiry, so no background sender sends it behind the
caller's back (a one-time code the caller gave up on and replaced must not arrive later). The caller's retry with
the same idempotencyId claims the parked notification and tries again; one the caller never retries ends at its
expiry (Failed_TTL, by the expiry sweeper), so it never stays unfinished.

Once stored, the send and the outcome's write run to their end even if the caller goes away (a client that
disconnects does not stop the send). Should the process die between the provider call and the outcome's write,
the notification's lease runs out and a background sender takes it over like any other: it ends in a final status
(at the risk of one duplicate, the same risk every sender's crash carries).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.group_commit import GroupCommit
from varsel.db.tables import NOTIFICATION_TABLES
from varsel.dispatch import repository as dispatch_repository
from varsel.dispatch.repository import NEW, SENDING
from varsel.dispatch.segments import sms_segments
from varsel.dispatch.senders import Sender, finish_despite_cancellation
from varsel.ids import new_id
from varsel.notifications.statuses import OrderStatus
from varsel.observability import Telemetry
from varsel.orders import chain_repository, instant_repository
from varsel.orders.chain_repository import Shipment
from varsel.orders.drafts import (
    ChainDraft,
    InstantDraft,
    InstantEmail,
    OrderDraft,
    RecipientSpec,
)
from varsel.orders.vocabulary import IdempotencyFamily, NotificationChannel, OrderType, SendingTimePolicy
from varsel.webhooks import outbox
from varsel.webhooks.events import NotificationChange, NotificationFacts, facts_of, notification_event

log = logging.getLogger(__name__)

# A retry that finds its key's message being sent by another process is told to come back after this long (seconds).
IN_FLIGHT_RETRY_AFTER = 1.0


class InstantAnswer(StrEnum):
    CREATED = "created"  # 201: stored and handed to the provider now (accepted, or refused for good: see the shipment)
    REPLAYED = "replayed"  # 200: the key was used before; the stored order's receipt
    UNAVAILABLE = "unavailable"  # 503 NOT-00004: the provider could not take it now; the key may be tried again


@dataclass(frozen=True)
class InstantResult:
    answer: InstantAnswer
    chain_id: UUID
    shipment: Shipment
    # With UNAVAILABLE: when the provider is expected to take calls again (seconds), if known.
    retry_after: float | None = None


# A batch of instant orders stored in one transaction holds at most this many.
MAX_BATCH_INSTANT = 128


@dataclass(frozen=True)
class _NewInstant:
    chain: dict[str, Any]
    order: dict[str, Any]
    recipients: list[dict[str, Any]]
    channel: str
    notification: dict[str, Any]


class InstantService:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        email: Sender,
        sms: Sender,
        telemetry: Telemetry,
        *,
        holder: str,
        lease_seconds: float,
        email_expiry: timedelta,
        write_wait_seconds: float = 5.0,
    ) -> None:
        """`email` and `sms` are senders of this process's own, holding claims as `holder` (never the claimer name
        of this process's background senders, whose recovery would give an instant notification back to the queue
        while it is being sent here)."""
        self._db = database
        self._clock = clock
        self._senders = {"email": email, "sms": sms}
        self._telemetry = telemetry
        self._holder = holder
        self._lease = timedelta(seconds=lease_seconds)
        self._email_expiry = email_expiry
        self._write_wait = write_wait_seconds
        # The sends under way in this process, by order: a retry of the same key waits for the answer here.
        self._in_flight: dict[UUID, asyncio.Future[tuple[InstantAnswer, float | None]]] = {}
        # Outcome writes still going on after their caller was answered (kept referenced until they end).
        self._writes: set[asyncio.Future[None]] = set()
        # Instant orders arriving together are stored together (group commit, as v1 and chain intake are).
        self._writer: GroupCommit[_NewInstant, bool] = GroupCommit(self._insert, max_items=MAX_BATCH_INSTANT)

    async def _insert(self, batch: list[_NewInstant]) -> list[bool]:
        """One write for the batch: the instant orders whose keys are free, their orders and notifications (held by
        this process); answers which were stored. A key another holds (or an earlier one in the batch) stores
        nothing. On PostgreSQL one statement, one round trip (no BEGIN, no COMMIT); on SQLite a few calls straight
        on the driver (each SQLAlchemy statement is several thread hops there). The caller waits for this write."""
        rows = (
            [new.chain for new in batch],
            [new.order for new in batch],
            [row for new in batch for row in new.recipients],
            {
                table: [new.notification for new in batch if new.channel == channel]
                for channel, table in NOTIFICATION_TABLES.items()
            },
        )
        # Each notification's webhook event: created Sending (an instant notification is never New).
        changes = [_created(new) for new in batch]
        if self._db.dialect == "postgresql":
            # Built beforehand: the events go into the store's one statement (no round trip more).
            events = [(new.order["id"], notification_event(*made)) for new, made in zip(batch, changes, strict=True)]
            async with self._db.statement() as conn:
                inserted = await instant_repository.store_instant_orders(conn, *rows, events)
        else:
            inserted = await self._db.sqlite_write(
                lambda write: instant_repository.store_instant_orders_sqlite(
                    write, *rows, [change for change, _ in changes]
                )
            )
        return [new.chain["id"] in inserted for new in batch]

    async def order(self, creator: str, draft: InstantDraft) -> InstantResult:
        """Store the order and send it, answering by the outcome. A caller cancelled meanwhile (a client that went
        away) does not stop either: once stored, the order is sent now, not when its lease runs out (a cancellation
        that came while the store was being written left the notification Sending until then)."""
        return await finish_despite_cancellation(self._order(creator, draft))

    async def _order(self, creator: str, draft: InstantDraft) -> InstantResult:
        now = self._clock.now()
        chain_id, order_id, notification_id = new_id(), new_id(), new_id()
        channel = "email" if isinstance(draft.message, InstantEmail) else "sms"
        order_draft = _order_draft(draft, now)
        order_row = chain_repository.chain_order_row(order_id, creator, order_draft, now, chain_id, 0)
        # Nothing to process: the order is Processed from the start, and never due for the order workers.
        order_row.update(status=OrderStatus.PROCESSED.value)
        notification = self._notification_row(draft, order_id, notification_id, creator, now)
        new = _NewInstant(
            chain_repository.chain_row(
                chain_id, creator, IdempotencyFamily.INSTANT, ChainDraft(draft.idempotency_id, order_draft), now
            ),
            order_row,
            chain_repository.chain_recipient_rows(order_id, order_draft),
            channel,
            notification,
        )
        # Registered before the order can be seen: a retry of the key in this process then always finds the send
        # it must wait for, never a notification Sending without one (which it would take for another process's).
        outcome = self._look_after(order_id)
        try:
            stored = await self._writer.write(new)
        except BaseException:
            self._done(order_id, outcome, (InstantAnswer.UNAVAILABLE, IN_FLIGHT_RETRY_AFTER))
            raise
        if not stored:
            self._done(order_id, outcome, (InstantAnswer.UNAVAILABLE, IN_FLIGHT_RETRY_AFTER))  # nobody knew its id
            return await self._replay(creator, draft.idempotency_id)
        self._telemetry.orders_accepted.labels(order_draft.channel.value).inc()
        self._telemetry.transition("order", order_id, None, OrderStatus.PROCESSED.value, creator=creator)
        self._telemetry.transition(channel, notification_id, None, SENDING, order=order_id, attempt=1)
        template = SimpleNamespace(**order_row)
        answer, retry_after = await self._send(outcome, channel, SimpleNamespace(**notification), template)
        return InstantResult(answer, chain_id, Shipment(order_id, draft.senders_reference), retry_after)

    def _notification_row(
        self, draft: InstantDraft, order_id: UUID, notification_id: UUID, creator: str, now: Any
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": notification_id,
            "order_id": order_id,
            "creator": creator,
            "status": SENDING,
            "status_changed": now,
            "created": now,
            "send_after": now,
            "attempts": 1,
            "claimed_by": self._holder,
            "claimed_until": now + self._lease,
        }
        message = draft.message
        if isinstance(message, InstantEmail):
            # The order's template is the message: no per-recipient text (no keywords to fill in for one address).
            row.update(email_address=message.address, subject=None, body=None, expiry=now + self._email_expiry)
        else:
            row.update(
                mobile_number=message.mobile_number,
                body=None,
                segments=sms_segments(message.template.body),
                # The caller's time to live: the notification's expiry, and the gateway's validity period.
                expiry=now + timedelta(seconds=message.time_to_live_seconds),
            )
        return row

    async def _replay(self, creator: str, idempotency_id: str) -> InstantResult:
        """The key is taken. Being sent by an earlier request of this process: answer as that request will, 200 once
        the provider has it (a retry from a client that gave up waiting must not hear 200 and then see the send
        fail), 503 when it fails for now. Parked after a transient failure: claim it and try again (one retry at a
        time gets the claim). Being sent by another process: 503 with a second's Retry-After. Otherwise the stored
        receipt: 200."""
        async with self._db.read() as conn:
            receipt = await chain_repository.find_chain(conn, creator, IdempotencyFamily.INSTANT, idempotency_id)
        if receipt is None:  # the winner's chain is gone again (purged): not expected within one request
            raise RuntimeError("the idempotency key is taken by an instant order that cannot be read")
        order_id = receipt.main.order_id
        under_way = self._in_flight.get(order_id)
        if under_way is not None:
            answer, retry_after = await asyncio.shield(under_way)
            if answer is InstantAnswer.CREATED:
                return InstantResult(InstantAnswer.REPLAYED, receipt.chain_id, receipt.main)
            return InstantResult(answer, receipt.chain_id, receipt.main, retry_after)
        outcome = self._look_after(order_id)
        try:
            now = self._clock.now()
            async with self._db.transaction() as conn:
                claimed = await dispatch_repository.claim_parked_notification(
                    conn, order_id, self._holder, now, now + self._lease
                )
                if claimed is not None and claimed[2].watched:
                    channel, row, template = claimed
                    facts = facts_of(row, template.senders_reference, channel)
                    await outbox.write_notification_changes(
                        conn, [NotificationChange(channel, row.id, NEW, SENDING, now, facts)]
                    )
                elsewhere = claimed is None and await dispatch_repository.being_sent(conn, order_id, now)
        except BaseException:
            self._done(order_id, outcome, (InstantAnswer.UNAVAILABLE, IN_FLIGHT_RETRY_AFTER))
            raise
        if claimed is None:
            if elsewhere:
                self._done(order_id, outcome, (InstantAnswer.UNAVAILABLE, IN_FLIGHT_RETRY_AFTER))
                return InstantResult(InstantAnswer.UNAVAILABLE, receipt.chain_id, receipt.main, IN_FLIGHT_RETRY_AFTER)
            self._done(order_id, outcome, (InstantAnswer.CREATED, None))  # sent or ended: waiters answer 200 too
            return InstantResult(InstantAnswer.REPLAYED, receipt.chain_id, receipt.main)
        channel, row, template = claimed
        self._telemetry.transition(channel, row.id, NEW, SENDING, order=row.order_id, attempt=row.attempts)
        answer, retry_after = await self._send(outcome, channel, row, template)
        return InstantResult(answer, receipt.chain_id, receipt.main, retry_after)

    def _look_after(self, order_id: UUID) -> asyncio.Future[tuple[InstantAnswer, float | None]]:
        """This request sends the order's notification, in this process: retries of its key here wait for this."""
        outcome: asyncio.Future[tuple[InstantAnswer, float | None]] = asyncio.get_running_loop().create_future()
        self._in_flight[order_id] = outcome
        return outcome

    def _done(
        self,
        order_id: UUID,
        outcome: asyncio.Future[tuple[InstantAnswer, float | None]],
        answer: tuple[InstantAnswer, float | None],
    ) -> None:
        outcome.set_result(answer)
        del self._in_flight[order_id]

    async def _send(
        self,
        outcome: asyncio.Future[tuple[InstantAnswer, float | None]],
        channel: str,
        row: Any,
        template: Any,
    ) -> tuple[InstantAnswer, float | None]:
        """Hand the held notification to the provider and answer by the outcome, which is written meanwhile; the
        answer is also what retries of the same key in this process wait for (`outcome`). Runs inside `order`'s
        own task, which the caller's cancellation (a client that went away) does not reach: no shield of its own."""
        answer: tuple[InstantAnswer, float | None] = (InstantAnswer.UNAVAILABLE, IN_FLIGHT_RETRY_AFTER)
        try:
            answer = await self._send_and_write(channel, row, template)
            return answer
        finally:
            # Also when it failed (or the process is stopping): a retry waiting here is told what came of it, or to
            # try again, and never left waiting.
            self._done(row.order_id, outcome, answer)

    async def _send_and_write(self, channel: str, row: Any, template: Any) -> tuple[InstantAnswer, float | None]:
        sender = self._senders[channel]
        # Shielded from the caller (see order): once stored, the send and its outcome's write finish even if the
        # request is cancelled (a client that went away), so the notification is never left Sending for its lease.
        status, write = await sender.send_held(row, template)
        # The answer waits for the outcome's write, but only so long: with the database slow or away, the provider's
        # verdict is known and is the answer; the write goes on (until the lease runs out) after it.
        try:
            done, _ = await asyncio.wait({write}, timeout=self._write_wait)
        except BaseException:
            self._outlive(write)  # cut off (the process stopping): how the write ends is still looked at
            raise
        if write in done:
            write.result()  # a write that failed for good (past the lease) is the request's failure
        else:
            self._outlive(write)
        if status == NEW:
            blocked = sender.blocked_for()
            return InstantAnswer.UNAVAILABLE, blocked if blocked > 0 else None
        return InstantAnswer.CREATED, None

    def _outlive(self, write: asyncio.Future[None]) -> None:
        """Keep an outcome's write referenced past its caller, and log it if it fails (its exception retrieved)."""
        self._writes.add(write)
        write.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.error("instant order: an outcome answered to its caller could not be written: %s", write.exception())


def _created(new: _NewInstant) -> tuple[NotificationChange, NotificationFacts]:
    """The change of an instant notification as it is stored (none before, Sending), with its facts."""
    facts = facts_of(new.notification, new.order["senders_reference"], new.channel)
    change = NotificationChange(
        new.channel, new.notification["id"], None, SENDING, new.notification["status_changed"], facts
    )
    return change, facts


def _order_draft(draft: InstantDraft, now: Any) -> OrderDraft:
    message = draft.message
    if isinstance(message, InstantEmail):
        return OrderDraft(
            channel=NotificationChannel.EMAIL,
            requested_send_time=now,
            recipients=(RecipientSpec(email_address=message.address),),
            senders_reference=draft.senders_reference,
            email_template=message.template,
            order_type=OrderType.INSTANT,
            sms_sending_time_policy=SendingTimePolicy.ANYTIME,
        )
    return OrderDraft(
        channel=NotificationChannel.SMS,
        requested_send_time=now,
        recipients=(RecipientSpec(mobile_number=message.mobile_number),),
        senders_reference=draft.senders_reference,
        sms_template=message.template,
        order_type=OrderType.INSTANT,
        # Instant messages ignore the SMS daytime window: the caller is waiting for this one now.
        sms_sending_time_policy=SendingTimePolicy.ANYTIME,
    )
