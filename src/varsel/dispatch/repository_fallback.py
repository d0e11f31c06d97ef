"""SQL of receipt-driven fallback (varsel.dispatch.fallback): the rows that watch first notifications, the decision
made in the transaction of the status change that ends one, and the worker's claims.

A row (notification_fallbacks) is written with the first notification, in the order worker's transaction. It is
`watching` until that notification ends or its window passes; then `due` (the other channel is to be sent),
`closed` (reached, or ended in a failure that says nothing of the person) or, after the worker's look-up, `sent` or
`no_address`. Every move is guarded by the state it expects, so of two transactions racing for one row (two reports,
a report and the sweeper, two workers) one moves it and the other writes nothing; and there is one row per recipient
and order (a unique constraint): a recipient falls back once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import and_, exists, func, insert, literal_column, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import NOTIFICATION_TABLES, notification_fallbacks, order_recipients
from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.drafts import RecipientSpec

WATCHING = "watching"
DUE = "due"
SENT = "sent"
CLOSED = "closed"
NO_ADDRESS = "no_address"

# The reason of a fallback for want of a delivery report within the window (the others are the failed status).
NO_DELIVERY_REPORT = "NoDeliveryReport"

# The failures that say the person was not reached: the address bounced, is suppressed, invalid, barred or has no
# route, or the message expired undelivered (the gateway's or varsel's TTL). Not among them: failures of the message
# rather than the address (spam, quarantine, rejected, deleted, attachments) and an unspecified Failed.
NOT_REACHED: dict[str, frozenset[str]] = {
    "email": frozenset(
        {
            EmailStatus.FAILED_BOUNCED.value,
            EmailStatus.FAILED_SUPPRESSED_RECIPIENT.value,
            EmailStatus.FAILED_INVALID_EMAIL_FORMAT.value,
            EmailStatus.FAILED_TTL.value,
        }
    ),
    "sms": frozenset(
        {
            SmsStatus.FAILED_INVALID_RECIPIENT.value,
            SmsStatus.FAILED_BARRED_RECEIVER.value,
            SmsStatus.FAILED_UNDELIVERED.value,
            SmsStatus.FAILED_EXPIRED.value,
            SmsStatus.FAILED_TTL.value,
        }
    ),
}

_t = notification_fallbacks
# The partial index's condition, as literals: SQLite uses a partial index only for a WHERE containing it as written.
_UNFINISHED = _t.c.state.in_([literal_column(f"'{WATCHING}'"), literal_column(f"'{DUE}'")])


@dataclass(frozen=True)
class Verdict:
    """What became of a watched row: due (with its reason), closed, or still watching until `due_at`."""

    fallback_id: UUID
    order_id: UUID
    state: str
    reason: str | None = None
    due_at: datetime | None = None


def unfinished_fallback(order_id: Any) -> Any:
    """SQL: the order has a fallback still watching or due, so it is not Completed yet (see complete_orders)."""
    return exists().where(and_(_t.c.order_id == order_id, _UNFINISHED))


async def insert_watches(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(_t), list(rows))


async def _first_notifications(conn: AsyncConnection, watched: Sequence[Any]) -> dict[UUID, Any]:
    """The first notifications of these rows, by id: status, provider, status_changed, send_after."""
    found: dict[UUID, Any] = {}
    for channel, table in NOTIFICATION_TABLES.items():
        ids = sorted({row.notification_id for row in watched if row.channel == channel})
        if not ids:
            continue
        result = await conn.execute(
            select(table.c.id, table.c.status, table.c.provider, table.c.status_changed, table.c.send_after).where(
                table.c.id.in_(ids)
            )
        )
        found.update({row.id: row for row in result})
    return found


def _verdict(row: Any, first: Any, now: datetime, *, window_over: bool) -> Verdict | None:
    """What a watched row becomes given its first notification now; None: it stays as it is.

    `window_over`: whether the worker looks at it because its due time passed (only then does a notification
    still awaiting its report count as unreported, and a pending one get a later look)."""
    # Imported here: dispatch.repository calls this module from complete_orders (the rule of what is pending is
    # its own, and must be the same here).
    from varsel.dispatch.repository import NEW, SENDING, leaves_pending

    table = NOTIFICATION_TABLES[row.channel]
    if first is None:
        # The notification is gone (it cannot be, short of a hand-made delete): nothing to watch any more.
        return Verdict(row.id, row.order_id, CLOSED)
    if leaves_pending(table, first.status, first.provider):
        if not window_over:
            return None
        window = timedelta(minutes=row.window_minutes)
        if first.status in (NEW, SENDING):
            # Not handed over yet (a retry, the SMS daytime window): the window starts when it is.
            return Verdict(row.id, row.order_id, WATCHING, due_at=max(first.send_after, now) + window)
        ends = first.status_changed + window
        if ends > now:
            return Verdict(row.id, row.order_id, WATCHING, due_at=ends)
        return Verdict(row.id, row.order_id, DUE, reason=NO_DELIVERY_REPORT, due_at=now)
    if first.status in NOT_REACHED[row.channel]:
        return Verdict(row.id, row.order_id, DUE, reason=first.status, due_at=now)
    return Verdict(row.id, row.order_id, CLOSED)


async def _apply(conn: AsyncConnection, verdicts: Sequence[Verdict], now: datetime) -> list[Verdict]:
    """Write the verdicts, each only if its row is still watching; answers those written."""
    applied: list[Verdict] = []
    for verdict in verdicts:
        values: dict[str, Any] = {"state": verdict.state}
        if verdict.due_at is not None:
            values["due_at"] = verdict.due_at
        if verdict.reason is not None:
            values["reason"] = verdict.reason
        if verdict.state == CLOSED:
            values["resolved"] = now
        result = await conn.execute(
            update(_t).where(and_(_t.c.id == verdict.fallback_id, _t.c.state == WATCHING)).values(**values)
        )
        if result.rowcount == 1:
            applied.append(verdict)
    return applied


async def decide(conn: AsyncConnection, order_ids: Sequence[UUID], now: datetime) -> list[Verdict]:
    """In the transaction that ended notifications of these orders (a report, a send outcome, the expiry), before
    the orders are completed: each watched first notification that ended makes its row due (not reached) or closed
    (reached, or failed otherwise). One query when these orders have nothing watched."""
    if not order_ids:
        return []
    watched = (
        await conn.execute(
            select(_t.c.id, _t.c.order_id, _t.c.channel, _t.c.notification_id, _t.c.window_minutes).where(
                and_(_t.c.order_id.in_(sorted(set(order_ids))), _t.c.state == WATCHING)
            )
        )
    ).all()
    if not watched:
        return []
    first = await _first_notifications(conn, watched)
    verdicts = [v for row in watched if (v := _verdict(row, first.get(row.notification_id), now, window_over=False))]
    return await _apply(conn, verdicts, now)


async def look_at_due_watches(conn: AsyncConnection, now: datetime, limit: int) -> list[Verdict]:
    """The worker's look at watched rows whose due time passed: due when the window passed without a report (or
    the notification ended unreached and nobody decided it), a later due time while it waits, closed when it
    ended otherwise. Answers what was written."""
    watched = (
        await conn.execute(
            select(_t.c.id, _t.c.order_id, _t.c.channel, _t.c.notification_id, _t.c.window_minutes)
            .where(and_(_UNFINISHED, _t.c.state == WATCHING, _t.c.due_at <= now))
            .order_by(_t.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not watched:
        return []
    first = await _first_notifications(conn, watched)
    verdicts = [v for row in watched if (v := _verdict(row, first.get(row.notification_id), now, window_over=True))]
    return await _apply(conn, verdicts, now)


async def claim_due(conn: AsyncConnection, worker: str, now: datetime, lease_until: datetime, limit: int) -> list[Any]:
    """Take up to `limit` due fallbacks (and ones whose worker's lease ran out) for this worker."""
    due = (
        select(_t.c.id)
        .where(
            and_(
                _UNFINISHED,
                _t.c.state == DUE,
                _t.c.due_at <= now,
                or_(_t.c.claimed_until.is_(None), _t.c.claimed_until < now),
            )
        )
        .order_by(_t.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = [row.id for row in await conn.execute(due)]
    if not ids:
        return []
    result = await conn.execute(
        update(_t)
        .where(and_(_t.c.id.in_(ids), _t.c.state == DUE))
        .values(claimed_by=worker, claimed_until=lease_until)
        .returning(
            _t.c.id,
            _t.c.order_id,
            _t.c.creator,
            _t.c.recipient_position,
            _t.c.channel,
            _t.c.notification_id,
            _t.c.reason,
            _t.c.created,
        )
    )
    return list(result)


async def recipients_at(conn: AsyncConnection, places: Sequence[tuple[UUID, int]]) -> dict[tuple[UUID, int], Any]:
    """The order recipients at these (order, position) places, as RecipientSpec: only those, not the whole order;
    one query for all of them (a primary key probe each)."""
    found: dict[tuple[UUID, int], Any] = {}
    if not places:
        return found
    result = await conn.execute(
        select(order_recipients).where(
            tuple_(order_recipients.c.order_id, order_recipients.c.position).in_(sorted(set(places)))
        )
    )
    for row in result:
        found[(row.order_id, row.position)] = RecipientSpec(
            row.email_address,
            row.mobile_number,
            row.national_identity_number,
            row.organization_number,
            row.external_identity,
        )
    return found


async def finish(
    conn: AsyncConnection, fallback_ids: Sequence[UUID], worker: str, state: str, now: datetime
) -> set[UUID]:
    """Move due fallbacks this worker holds to `state` (sent or no_address); answers those moved. The others were
    taken over after the lease ran out: nothing must be written for them."""
    if not fallback_ids:
        return set()
    result = await conn.execute(
        update(_t)
        .where(and_(_t.c.id.in_(list(fallback_ids)), _t.c.state == DUE, _t.c.claimed_by == worker))
        .values(state=state, resolved=now, claimed_by=None, claimed_until=None)
        .returning(_t.c.id)
    )
    return {row.id for row in result}


async def retry_later(conn: AsyncConnection, fallback_id: UUID, worker: str, at: datetime) -> None:
    """Give a due fallback back, to be tried at `at` (its look-up failed: a registry away)."""
    await conn.execute(
        update(_t)
        .where(and_(_t.c.id == fallback_id, _t.c.state == DUE, _t.c.claimed_by == worker))
        .values(due_at=at, claimed_by=None, claimed_until=None)
    )


async def next_due(conn: AsyncConnection, now: datetime) -> datetime | None:
    """When the worker next has something to do: a watched row's due time, a due row's, or the end of the lease
    another worker holds a due row under.

    Most of the time the earliest due time is in the future: one probe of the partial index's first entry answers
    it, however many rows are watched. Only when something is due now are the leases looked at."""
    earliest: datetime | None = (await conn.execute(select(func.min(_t.c.due_at)).where(_UNFINISHED))).scalar()
    if earliest is None or earliest > now:
        return earliest
    free = or_(_t.c.state == WATCHING, _t.c.claimed_until.is_(None), _t.c.claimed_until < now)
    unclaimed: datetime | None = (
        await conn.execute(select(func.min(_t.c.due_at)).where(and_(_UNFINISHED, free)))
    ).scalar()
    leased: datetime | None = (
        await conn.execute(select(func.min(_t.c.claimed_until)).where(and_(_UNFINISHED, _t.c.claimed_until >= now)))
    ).scalar()
    known = [moment for moment in (unclaimed, leased) if moment is not None]
    return min(known) if known else None
