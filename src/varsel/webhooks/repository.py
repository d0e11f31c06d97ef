"""All SQL of status webhooks but the outbox's insert (outbox.py): subscriptions, the kinds each takes, the delivery
worker's claim of an endpoint, each attempt's record, replay and purge.

An endpoint (a subscription) is held by one delivery worker at a time (claimed_by/claimed_until, a lease): that is
what keeps its events in order. The claim locks what it reads in the statement that reads it (PostgreSQL skips
subscriptions other workers lock: FOR UPDATE SKIP LOCKED; SQLite runs it in a write transaction begun IMMEDIATE), and
every later write of the worker is guarded by its claim, so an endpoint taken over after a lease ran out is never
recorded twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import and_, delete, exists, func, insert, literal_column, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import webhook_attempts, webhook_events, webhook_subscription_events, webhook_subscriptions
from varsel.webhooks.outbox import DELIVERED, PENDING

# The pending index's condition as written in it (see tables.py): SQLite uses a partial index only when the query
# spells its condition out with the same constant.
_PENDING = webhook_events.c.state == literal_column(f"'{PENDING}'")


@dataclass(frozen=True)
class Subscription:
    id: UUID
    creator: str
    url: str
    kinds: tuple[str, ...]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    created: datetime
    updated: datetime
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None


@dataclass(frozen=True)
class HeldEndpoint:
    """An endpoint a delivery worker holds: where to post and the secrets to sign with."""

    id: UUID
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None


@dataclass(frozen=True)
class PendingEvent:
    seq: int
    id: UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    next_attempt: datetime


@dataclass(frozen=True)
class EventRow:
    seq: int
    id: UUID
    kind: str
    state: str
    attempts: int
    occurred: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class AttemptRow:
    id: int
    subscription_id: UUID
    attempt: int
    event_seq: int
    event_id: UUID
    kind: str
    at: datetime
    status_code: int | None
    latency_ms: int | None
    error: str | None


@dataclass(frozen=True)
class AttemptOutcome:
    """What one POST came to: delivered (2xx), or failed with the status (if any answer came) and why."""

    delivered: bool
    status_code: int | None
    latency_ms: int | None
    error: str | None


# ---------------------------------------------------------------- subscriptions


async def insert_subscription(
    conn: AsyncConnection,
    subscription_id: UUID,
    creator: str,
    url: str,
    kinds: Sequence[str],
    secret: str,
    now: datetime,
) -> None:
    await conn.execute(
        insert(webhook_subscriptions).values(
            id=subscription_id, creator=creator, url=url, secret=secret, enabled=True, created=now, updated=now
        )
    )
    await _insert_kinds(conn, subscription_id, creator, kinds)


async def _insert_kinds(conn: AsyncConnection, subscription_id: UUID, creator: str, kinds: Sequence[str]) -> None:
    await conn.execute(
        insert(webhook_subscription_events),
        [{"subscription_id": subscription_id, "kind": kind, "creator": creator} for kind in kinds],
    )


def _owned(creator: str | None) -> Any:
    """Rows of this service owner; every row for None (the console's admin)."""
    return webhook_subscriptions.c.creator == creator if creator is not None else true()


async def subscriptions(
    conn: AsyncConnection, creator: str | None, subscription_id: UUID | None = None
) -> list[Subscription]:
    """The owner's subscriptions (every owner's for None), oldest first; one when `subscription_id` is given."""
    s = webhook_subscriptions
    query = select(s).where(_owned(creator)).order_by(s.c.created, s.c.id)
    if subscription_id is not None:
        query = query.where(s.c.id == subscription_id)
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    k = webhook_subscription_events
    kinds: dict[UUID, list[str]] = {}
    found = await conn.execute(
        select(k.c.subscription_id, k.c.kind)
        .where(k.c.subscription_id.in_([row.id for row in rows]))
        .order_by(k.c.subscription_id, k.c.kind)
    )
    for kind_row in found:
        kinds.setdefault(kind_row.subscription_id, []).append(kind_row.kind)
    return [
        Subscription(
            id=row.id,
            creator=row.creator,
            url=row.url,
            kinds=tuple(kinds.get(row.id, ())),
            enabled=row.enabled,
            disabled_at=row.disabled_at,
            disabled_reason=row.disabled_reason,
            failing_since=row.failing_since,
            created=row.created,
            updated=row.updated,
            secret=row.secret,
            previous_secret=row.previous_secret,
            previous_secret_until=row.previous_secret_until,
        )
        for row in rows
    ]


async def owned_ids(conn: AsyncConnection, creator: str | None, subscription_ids: Sequence[UUID]) -> list[UUID]:
    """Those of the ids that are the owner's subscriptions (any owner's for None)."""
    s = webhook_subscriptions
    found = await conn.execute(select(s.c.id).where(and_(s.c.id.in_(list(subscription_ids)), _owned(creator))))
    return [row.id for row in found]


async def count_subscriptions(conn: AsyncConnection, creator: str) -> int:
    s = webhook_subscriptions
    return int((await conn.execute(select(func.count()).where(s.c.creator == creator))).scalar_one())


async def lock_subscription(conn: AsyncConnection, creator: str | None, subscription_id: UUID) -> bool:
    """Lock the owner's subscription for a change in this transaction; False when it has none by that id."""
    s = webhook_subscriptions
    # FOR NO KEY UPDATE: it does not wait for the status changes writing events for the subscription (their outbox
    # read locks it FOR KEY SHARE); a delete (FOR UPDATE) does.
    found = await conn.execute(
        select(s.c.id).where(and_(s.c.id == subscription_id, _owned(creator))).with_for_update(key_share=True)
    )
    return found.first() is not None


async def update_subscription(
    conn: AsyncConnection,
    subscription_id: UUID,
    now: datetime,
    *,
    url: str | None = None,
    kinds: Sequence[str] | None = None,
    enabled: bool | None = None,
) -> None:
    """Change what is given of a locked subscription. Enabling clears the disabled state and the failing time, and
    makes its pending events due now; disabling (the owner's) keeps them pending."""
    s = webhook_subscriptions
    values: dict[str, Any] = {"updated": now}
    if url is not None:
        values["url"] = url
    if enabled is True:
        values.update(enabled=True, disabled_at=None, disabled_reason=None, failing_since=None)
    elif enabled is False:
        current = (await conn.execute(select(s.c.enabled).where(s.c.id == subscription_id))).scalar()
        if current:
            values.update(enabled=False, disabled_at=now, disabled_reason="Disabled by the service owner.")
    await conn.execute(update(s).where(s.c.id == subscription_id).values(**values))
    if enabled is True:
        # Only the events waiting for a later time: the head a failure put off (the events behind it were never
        # attempted, so they are due already). Not every pending event: an endpoint disabled for long may have a
        # great many, and they would all be written (and locked) in this transaction.
        e = webhook_events
        await conn.execute(
            update(e)
            .where(and_(e.c.subscription_id == subscription_id, _PENDING, e.c.next_attempt > now))
            .values(next_attempt=now)
        )
    if kinds is not None:
        k = webhook_subscription_events
        creator = (await conn.execute(select(s.c.creator).where(s.c.id == subscription_id))).scalar_one()
        await conn.execute(delete(k).where(k.c.subscription_id == subscription_id))
        await _insert_kinds(conn, subscription_id, creator, kinds)


async def rotate_secret(
    conn: AsyncConnection, subscription_id: UUID, secret: str, previous_until: datetime, now: datetime
) -> None:
    """The new secret signs from now on; the one it replaces signs beside it until `previous_until`."""
    s = webhook_subscriptions
    await conn.execute(
        update(s)
        .where(s.c.id == subscription_id)
        .values(secret=secret, previous_secret=s.c.secret, previous_secret_until=previous_until, updated=now)
    )


async def delete_subscription(conn: AsyncConnection, creator: str, subscription_id: UUID) -> bool:
    """Delete the owner's subscription with its events and delivery log; False when it has none by that id."""
    s = webhook_subscriptions
    # Children first, explicitly: the foreign keys cascade too, but SQLite does so only with its pragma on.
    owned = select(s.c.id).where(and_(s.c.id == subscription_id, s.c.creator == creator)).scalar_subquery()
    await conn.execute(delete(webhook_attempts).where(webhook_attempts.c.subscription_id == owned))
    await conn.execute(delete(webhook_events).where(webhook_events.c.subscription_id == owned))
    await conn.execute(
        delete(webhook_subscription_events).where(webhook_subscription_events.c.subscription_id == owned)
    )
    result = await conn.execute(delete(s).where(and_(s.c.id == subscription_id, s.c.creator == creator)))
    return bool(result.rowcount == 1)


# ---------------------------------------------------------------- events and the delivery log, as the owner reads them


async def events_page(conn: AsyncConnection, subscription_id: UUID, after_seq: int, limit: int) -> list[EventRow]:
    """The subscription's retained events after `after_seq`, in seq order."""
    e = webhook_events
    rows = await conn.execute(
        select(e.c.seq, e.c.id, e.c.kind, e.c.state, e.c.attempts, e.c.occurred, e.c.delivered_at)
        .where(and_(e.c.subscription_id == subscription_id, e.c.seq > after_seq))
        .order_by(e.c.seq)
        .limit(limit)
    )
    return [EventRow(**row._mapping) for row in rows]


async def attempts_page(
    conn: AsyncConnection, subscription_ids: Sequence[UUID], before_id: int | None, limit: int
) -> list[AttemptRow]:
    """The delivery log of these subscriptions, newest first, before attempt `before_id` when given."""
    a, e = webhook_attempts, webhook_events
    query = (
        select(
            a.c.id,
            a.c.subscription_id,
            a.c.attempt,
            a.c.event_seq,
            e.c.id.label("event_id"),
            e.c.kind,
            a.c.at,
            a.c.status_code,
            a.c.latency_ms,
            a.c.error,
        )
        .join(e, e.c.seq == a.c.event_seq)
        .where(a.c.subscription_id.in_(list(subscription_ids)))
        .order_by(a.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(a.c.id < before_id)
    return [AttemptRow(**row._mapping) for row in await conn.execute(query)]


async def replay(
    conn: AsyncConnection, subscription_id: UUID, now: datetime, *, since: datetime | None, from_seq: int | None
) -> int:
    """Make the subscription's retained events from `since` (the time of the change) or from seq `from_seq` pending
    again, due now, with their ids; answers how many.

    One statement, however many events, under the subscription's lock: in batches, the worker could deliver the
    endpoint's pending events after the range before the range's later batches were pending again, out of order. It
    holds up no status change (they only insert, and the lock is NO KEY UPDATE), only this endpoint's delivery and
    purge, and on SQLite the one writer (some 0.7 s for 200,000 events)."""
    e = webhook_events
    where = [e.c.subscription_id == subscription_id]
    if since is not None:
        where.append(e.c.occurred >= since)
    if from_seq is not None:
        where.append(e.c.seq >= from_seq)
    result = await conn.execute(
        update(e).where(and_(*where)).values(state=PENDING, next_attempt=now, delivered_at=None)
    )
    return int(result.rowcount)


# ---------------------------------------------------------------- the delivery worker


def _head_due_time() -> Any:
    """When the endpoint's first pending event (its head of line) is due: later ones wait behind it, in order."""
    e, s = webhook_events, webhook_subscriptions
    return (
        select(e.c.next_attempt)
        .where(and_(e.c.subscription_id == s.c.id, _PENDING))
        .order_by(e.c.seq)
        .limit(1)
        .scalar_subquery()
    )


def _free(now: datetime) -> Any:
    s = webhook_subscriptions
    return or_(s.c.claimed_until.is_(None), s.c.claimed_until <= now)


async def claim_endpoints(
    conn: AsyncConnection, worker: str, now: datetime, lease_until: datetime, limit: int
) -> list[HeldEndpoint]:
    """Take up to `limit` enabled endpoints whose head event is due and that nobody holds (or whose holder's lease
    ran out), the longest waiting first (so that endpoints always busy do not keep the others waiting)."""
    s = webhook_subscriptions
    head = _head_due_time()
    candidates = (
        select(s.c.id)
        .where(and_(s.c.enabled.is_(True), _free(now), head <= now))
        .order_by(head, s.c.id)
        .limit(limit)
        # FOR NO KEY UPDATE: an endpoint whose owner is writing events (its subscriptions locked FOR KEY SHARE by the
        # outbox's read, in every status change) is not skipped; FOR UPDATE would skip it whenever the owner is busy.
        .with_for_update(skip_locked=True, of=s, key_share=True)
    )
    ids = [row.id for row in await conn.execute(candidates)]
    if not ids:
        return []
    result = await conn.execute(
        update(s)
        .where(and_(s.c.id.in_(ids), s.c.enabled.is_(True), _free(now)))
        .values(claimed_by=worker, claimed_until=lease_until)
        .returning(s.c.id, s.c.url, s.c.secret, s.c.previous_secret, s.c.previous_secret_until)
    )
    return [HeldEndpoint(**row._mapping) for row in result]


async def renew_claim(
    conn: AsyncConnection, subscription_id: UUID, worker: str, now: datetime, lease_until: datetime
) -> HeldEndpoint | None:
    """Extend this worker's hold on the endpoint before an attempt, reading its URL and secrets afresh (the owner may
    have changed them); None when the hold was lost (lease taken over, endpoint disabled or deleted)."""
    s = webhook_subscriptions
    result = await conn.execute(
        update(s)
        .where(and_(s.c.id == subscription_id, s.c.claimed_by == worker, s.c.claimed_until > now, s.c.enabled))
        .values(claimed_until=lease_until)
        .returning(s.c.id, s.c.url, s.c.secret, s.c.previous_secret, s.c.previous_secret_until)
    )
    row = result.first()
    return HeldEndpoint(**row._mapping) if row is not None else None


async def head_event(conn: AsyncConnection, subscription_id: UUID) -> PendingEvent | None:
    """The endpoint's first pending event, due or not."""
    e = webhook_events
    row = (
        await conn.execute(
            select(e.c.seq, e.c.id, e.c.kind, e.c.payload, e.c.attempts, e.c.next_attempt)
            .where(and_(e.c.subscription_id == subscription_id, _PENDING))
            .order_by(e.c.seq)
            .limit(1)
        )
    ).first()
    return PendingEvent(**row._mapping) if row is not None else None


async def record_attempt(
    conn: AsyncConnection,
    subscription_id: UUID,
    event: PendingEvent,
    worker: str,
    at: datetime,
    outcome: AttemptOutcome,
    retry_at: datetime,
    failure_period: timedelta,
) -> bool:
    """Record one attempt of the held endpoint's head event: the delivery log's row, the event's state (delivered,
    or due again at `retry_at`) and the endpoint's (a success clears failing_since; a failure sets it if unset and
    disables the endpoint once it has failed for `failure_period`). False, with nothing written, when the worker no
    longer holds the endpoint."""
    s, e = webhook_subscriptions, webhook_events
    held = and_(s.c.id == subscription_id, s.c.claimed_by == worker)
    if outcome.delivered:
        moved = await conn.execute(update(s).where(held).values(failing_since=None).returning(s.c.id))
        if moved.first() is None:
            return False
        event_values: dict[str, Any] = {"state": DELIVERED, "delivered_at": at}
    else:
        since = func.coalesce(s.c.failing_since, at)
        moved = await conn.execute(
            update(s).where(held).values(failing_since=since).returning(s.c.failing_since, s.c.enabled)
        )
        row = moved.first()
        if row is None:
            return False
        if row.enabled and row.failing_since is not None and at - row.failing_since >= failure_period:
            hours = failure_period.total_seconds() / 3600
            await conn.execute(
                update(s)
                .where(s.c.id == subscription_id)
                .values(
                    enabled=False,
                    disabled_at=at,
                    disabled_reason=(
                        f"Every delivery failed for {hours:g} hours (since {row.failing_since.isoformat()}); the "
                        f"last: {_short(outcome)}"
                    ),
                    updated=at,
                )
            )
        event_values = {"next_attempt": retry_at}
    updated = await conn.execute(
        update(e)
        .where(and_(e.c.seq == event.seq, _PENDING))
        .values(attempts=e.c.attempts + 1, **event_values)
        .returning(e.c.attempts)
    )
    attempt = updated.scalar()
    await conn.execute(
        insert(webhook_attempts).values(
            event_seq=event.seq,
            subscription_id=subscription_id,
            attempt=attempt if attempt is not None else event.attempts + 1,
            at=at,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
        )
    )
    return True


def _short(outcome: AttemptOutcome) -> str:
    if outcome.error:
        return outcome.error[:300]
    return f"HTTP {outcome.status_code}"


async def release_endpoint(conn: AsyncConnection, subscription_id: UUID, worker: str) -> None:
    s = webhook_subscriptions
    await conn.execute(
        update(s)
        .where(and_(s.c.id == subscription_id, s.c.claimed_by == worker))
        .values(claimed_by=None, claimed_until=None)
    )


async def next_due(conn: AsyncConnection, now: datetime) -> datetime | None:
    """When the delivery worker next has an endpoint to claim: the earliest head event of an enabled endpoint, or
    the end of a lease on one with pending events."""
    s, e = webhook_subscriptions, webhook_events
    head = _head_due_time()
    rows = await conn.execute(
        select(head.label("head"), s.c.claimed_until).where(
            and_(s.c.enabled.is_(True), exists().where(and_(e.c.subscription_id == s.c.id, _PENDING)))
        )
    )
    # Per endpoint, the later of its head's due time and the end of a lease on it; the earliest of those.
    moments = [max(row.head, row.claimed_until) if row.claimed_until else row.head for row in rows if row.head]
    return min(moments) if moments else None


# ---------------------------------------------------------------- retention


async def purge_delivered(conn: AsyncConnection, before: datetime, batch: int) -> int:
    """Delete up to `batch` delivered events that happened before `before`, with their attempts; pending ones stay."""
    e = webhook_events
    seqs = [
        row.seq
        for row in await conn.execute(
            select(e.c.seq).where(and_(e.c.state == DELIVERED, e.c.occurred < before)).order_by(e.c.seq).limit(batch)
        )
    ]
    if not seqs:
        return 0
    await conn.execute(delete(webhook_attempts).where(webhook_attempts.c.event_seq.in_(seqs)))
    await conn.execute(delete(e).where(and_(e.c.seq.in_(seqs), e.c.state == DELIVERED)))
    return len(seqs)
