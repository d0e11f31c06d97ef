"""Receipt-driven fallback (issue #18): an EmailPreferred or SmsPreferred order whose notification did not reach the
person gets the other channel sent to the same recipient, if the registry has that address, once.

Altinn's Preferred channels fall back only when the preferred address is missing. varsel also falls back when the
chosen channel's notification ends in a failure that says the person was not reached (repository_fallback's
NOT_REACHED) or has no delivery report within a window. It does so for every Preferred order when the operator sets
VARSEL_FALLBACK__ENABLED, and for one order that asks with `fallbackAfterMinutes` (which also sets its window);
otherwise nothing here happens and the pipeline is Altinn's.

How, without network I/O in a transaction and without sending twice:

1. The order worker writes a watching row per recipient (`watches`) with the first notification, in the same
   transaction, its due time the earliest the window can end.
2. A transaction that ends a notification (a delivery report, a send outcome, the expiry sweeper) completes the
   orders it touched through dispatch.repository.complete_orders, which first lets repository_fallback.decide
   judge their watched rows in that transaction: due (not reached), or closed (delivered, or failed otherwise).
   A success report thus cancels the window in the report's own transaction. An order with a fallback watching or
   due is not Completed.
3. The fallback worker (`FallbackWorker`, run by the order worker's process) looks at watched rows whose due time
   passed (no report within the window: due), claims due rows under a lease, looks the recipient up again for the
   other channel outside any transaction (a registry may be remote), and then, in one transaction, moves each row
   from due to sent with the new notifications (New, `fallback_of` naming the first, `fallback_reason` saying why),
   or to no_address (and completes the order).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, sms_notifications
from varsel.dispatch import repository as dispatch_repository
from varsel.dispatch import repository_fallback as repository
from varsel.dispatch.generation import GeneratedNotifications, generate
from varsel.dispatch.retry import RetryPolicy
from varsel.dispatch.wakeup import Wakeups
from varsel.ids import new_id
from varsel.notifications.statuses import OrderStatus
from varsel.observability import Telemetry
from varsel.orders import repository as order_repository
from varsel.orders.drafts import RecipientSpec
from varsel.orders.repository import StoredOrder
from varsel.orders.vocabulary import NotificationChannel
from varsel.recipients.lookup import LookupResult, Outcome, RecipientLookup
from varsel.settings import DispatchSettings, FallbackSettings
from varsel.webhooks import outbox
from varsel.webhooks.events import NotificationChange

log = logging.getLogger("varsel.dispatch")

PREFERRED = (NotificationChannel.EMAIL_PREFERRED, NotificationChannel.SMS_PREFERRED)
# The channel a fallback sends, by the first notification's.
OTHER_CHANNEL = {"email": NotificationChannel.SMS, "sms": NotificationChannel.EMAIL}


def window_of(order: StoredOrder, settings: FallbackSettings) -> int | None:
    """The order's fallback window in minutes, or None when it does not fall back: not a Preferred channel, or
    neither the setting nor the order's fallbackAfterMinutes asks for it."""
    if order.channel not in PREFERRED:
        return None
    if order.fallback_after_minutes is not None:
        return order.fallback_after_minutes
    return settings.window_minutes if settings.enabled else None


def watches(
    order: StoredOrder,
    lookup: LookupResult,
    generated: GeneratedNotifications,
    settings: FallbackSettings,
    now: datetime,
) -> list[dict[str, Any]]:
    """The watching rows for an order's generated notifications: per recipient, its first New notification.

    Walks the recipients as `generate` does (one failed row for a reserved or unreachable recipient, on the
    order's first channel; else one row per address, in order), so that each recipient's rows are known: a
    recipient with no New notification (reserved, not found) is not watched, nothing having been sent to fail."""
    window = window_of(order, settings)
    if window is None:
        return []
    email_first = order.channel is NotificationChannel.EMAIL_PREFERRED
    rows = {"email": iter(generated.email), "sms": iter(generated.sms)}
    found: list[dict[str, Any]] = []
    for position, resolved in enumerate(lookup.recipients):
        if resolved.outcome in (Outcome.RESERVED, Outcome.MISSING_CONTACT):
            next(rows["email" if email_first else "sms"], None)
            continue
        first: tuple[str, dict[str, Any]] | None = None
        for address in resolved.addresses:
            channel = address.medium.value
            row = next(rows[channel], None)
            if row is None:
                return found  # not as generate made them: watch nothing more rather than the wrong rows
            if first is None and row["status"] == dispatch_repository.NEW:
                first = (channel, row)
        if first is None:
            continue
        channel, row = first
        found.append(
            {
                "id": new_id(),
                "order_id": order.id,
                "creator": order.creator,
                "recipient_position": position,
                "channel": channel,
                "notification_id": row["id"],
                "window_minutes": window,
                "state": repository.WATCHING,
                "due_at": max(row["send_after"], now) + timedelta(minutes=window),
                "created": now,
            }
        )
    return found


class FallbackWorker:
    """Sends the other channel for due fallbacks (see the module's docstring, step 3)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        lookup: RecipientLookup,
        settings: DispatchSettings,
        fallback: FallbackSettings,
        worker: str,
        wakeups: Wakeups,
        telemetry: Telemetry,
    ) -> None:
        self._db = database
        self._clock = clock
        self._lookup = lookup
        self._settings = settings
        self._batch = fallback.batch_size
        self._worker = worker
        self._wakeups = wakeups
        self._telemetry = telemetry
        self._retry = RetryPolicy(settings.retry_first_seconds, settings.retry_max_seconds)
        # Look-ups that failed, per fallback, for the backoff (a worker restart starts it again: harmless).
        self._failures: dict[UUID, int] = {}

    async def run_once(self) -> int:
        """Look at watched rows due now and send the due fallbacks of one batch; answers how many rows moved."""
        now = self._clock.now()
        # Read first: most rounds have nothing due, and need not take the write lock (SQLite's one) to find out.
        due = await self.next_due()
        if due is None or due > now:
            return 0
        lease_until = now + timedelta(seconds=self._settings.lease_seconds)
        async with self._db.transaction() as conn:
            looked_at = await repository.look_at_due_watches(conn, now, self._batch)
            claimed = await repository.claim_due(conn, self._worker, now, lease_until, self._batch)
            # The claimed rows' recipients and orders: one query each, whatever their number.
            recipients = await repository.recipients_at(conn, [(c.order_id, c.recipient_position) for c in claimed])
            loaded = await order_repository.load_orders(
                conn, sorted({c.order_id for c in claimed}), with_recipients=False
            )
            orders: dict[UUID, StoredOrder] = {order.id: order for order in loaded}
            # A row closed here may be all its order was waiting for. Last: completing an order takes the status
            # feed's lock until commit, and nothing else is to be read while it is held.
            closed = [v.order_id for v in looked_at if v.state == repository.CLOSED]
            completed = await dispatch_repository.complete_orders(conn, closed, now)
        for verdict in looked_at:
            if verdict.state == repository.DUE:
                log.info("fallback %s of order %s is due: %s", verdict.fallback_id, verdict.order_id, verdict.reason)
        self._telemetry.transitions_of("order", completed, OrderStatus.PROCESSED.value, OrderStatus.COMPLETED.value)
        # Every row looked at moved (to due or closed, or its due time past now): a full batch may have more.
        moved = len(looked_at)
        if not claimed:
            return moved
        sent: dict[UUID, GeneratedNotifications] = {}
        no_address: list[Any] = []
        # Looked up together: one registry call per kind of look-up (the other channel and the order's look-up
        # settings), never one per recipient.
        groups: dict[tuple[Any, ...], list[tuple[Any, StoredOrder, RecipientSpec]]] = {}
        for due in claimed:
            order, spec = orders.get(due.order_id), recipients.get((due.order_id, due.recipient_position))
            if order is None or spec is None:
                no_address.append(due)
                continue
            kind = (
                OTHER_CHANNEL[due.channel],
                bool(order.ignore_reservation),
                order.resource_id,
                order.resource_action,
                order.use_stale_contact_information,
            )
            groups.setdefault(kind, []).append((due, order, spec))
        for (other, ignore_reservation, resource_id, resource_action, stale), members in groups.items():
            try:
                lookup = await self._lookup.resolve(
                    [spec for _, _, spec in members],
                    other,
                    ignore_reservation=ignore_reservation,
                    resource_id=resource_id,
                    resource_action=resource_action,
                    use_stale_contact_information=stale,
                )
            except Exception:
                log.exception("%d fallbacks: the look-up failed", len(members))
                give_up_before = self._clock.now() - 2 * timedelta(hours=self._settings.expiry_hours)
                for due, _, _ in members:
                    if due.created <= give_up_before:
                        # A registry away for longer than a notification lives: given up rather than hold the
                        # order open for ever (its first notification has long ended).
                        log.warning("fallback %s of order %s: given up, the registry is away", due.id, due.order_id)
                        no_address.append(due)
                    else:
                        await self._retry_later(due.id)
                continue
            if len(lookup.recipients) != len(members):
                # Not one answer per recipient: which is whose cannot be told. Tried again later, as a failed
                # look-up, rather than failing the round (and every round after it).
                log.error("%d fallbacks: the look-up answered %d recipients", len(members), len(lookup.recipients))
                for due, _, _ in members:
                    await self._retry_later(due.id)
                continue
            now = self._clock.now()
            for (due, order, spec), resolved in zip(members, lookup.recipients, strict=True):
                self._failures.pop(due.id, None)
                if resolved.outcome not in (Outcome.FOUND, Outcome.ADDRESSED) or not resolved.addresses:
                    no_address.append(due)
                    continue
                try:
                    generated = generate(
                        replace(order, channel=other, recipients=(spec,)),
                        LookupResult((resolved,)),
                        now,
                        timedelta(hours=self._settings.expiry_hours),
                        sms_window=None if order.sms_sending_time_policy == "Anytime" else self._settings.sms_daytime,
                    )
                except Exception:
                    # This one fallback's failure (a bug its data trips): the others go on.
                    log.exception("fallback %s of order %s: its notification could not be made", due.id, due.order_id)
                    await self._retry_later(due.id)
                    continue
                for row in (*generated.email, *generated.sms):
                    row.update(fallback_of=due.notification_id, fallback_reason=due.reason)
                sent[due.id] = generated
        await self._write(claimed, sent, no_address)
        return moved + len(claimed)

    async def _write(self, claimed: list[Any], sent: dict[UUID, GeneratedNotifications], no_address: list[Any]) -> None:
        now = self._clock.now()
        async with self._db.transaction() as conn:
            moved = await repository.finish(conn, list(sent), self._worker, repository.SENT, now)
            email = [row for fallback_id in moved for row in sent[fallback_id].email]
            sms = [row for fallback_id in moved for row in sent[fallback_id].sms]
            await dispatch_repository.insert_notifications(conn, email_notifications, email)
            await dispatch_repository.insert_notifications(conn, sms_notifications, sms)
            # Their webhook events (created New, each telling the notification it follows: fallbackFor).
            await outbox.write_notification_changes(
                conn,
                [
                    NotificationChange(channel, row["id"], None, row["status"], row["status_changed"])
                    for channel, rows in (("email", email), ("sms", sms))
                    for row in rows
                ],
            )
            ended = await repository.finish(conn, [d.id for d in no_address], self._worker, repository.NO_ADDRESS, now)
            # Nothing more for those recipients: their order may be complete now.
            completed = await dispatch_repository.complete_orders(
                conn, sorted({d.order_id for d in no_address if d.id in ended}), now
            )
            await dispatch_repository.announce_work(conn, email=bool(email), sms=bool(sms))
        if email:
            self._wakeups.email.set()
        if sms:
            self._wakeups.sms.set()
        by_id = {due.id: due for due in claimed}
        for channel, rows in (("email", email), ("sms", sms)):
            for row in rows:
                self._telemetry.transition(
                    channel, row["id"], None, row["status"], order=row["order_id"], fallback_of=row["fallback_of"],
                    why=row["fallback_reason"],
                )  # fmt: skip
        for fallback_id in ended:
            order_id = by_id[fallback_id].order_id
            log.info("fallback %s of order %s: no address on the other channel", fallback_id, order_id)
        self._telemetry.transitions_of("order", completed, OrderStatus.PROCESSED.value, OrderStatus.COMPLETED.value)

    async def _retry_later(self, fallback_id: UUID) -> None:
        failures = self._failures[fallback_id] = self._failures.get(fallback_id, 0) + 1
        at = self._clock.now() + self._retry.delay(failures)
        async with self._db.transaction() as conn:
            await repository.retry_later(conn, fallback_id, self._worker, at)

    async def next_due(self) -> datetime | None:
        async with self._db.read() as conn:
            return await repository.next_due(conn, self._clock.now())
