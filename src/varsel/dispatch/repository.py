"""SQL of the pipeline: claiming work under a lease, guarded status moves, completion and expiry.

A claim takes turns between service owners (`_claim_in_turns`) and locks what it reads in the statement that
reads it: PostgreSQL skips rows other workers hold (FOR UPDATE SKIP LOCKED); SQLite runs it in a write transaction
begun IMMEDIATE, which admits one writer at a time. Every later move is guarded by the status it expects and by
the claim, so work taken over after a lease ran out is never recorded twice.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Column,
    Select,
    String,
    Table,
    Uuid,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    not_,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.engine import StatementConnection
from varsel.db.one_statement import execute, parameters, shape, source
from varsel.db.sqlite_direct import DirectWrite, columns_of, quoted
from varsel.db.tables import NOTIFICATION_TABLES, email_notifications, notification_attempts, orders, sms_notifications
from varsel.db.types import UtcDateTime
from varsel.dispatch import repository_fallback
from varsel.notifications.statuses import EMAIL_PENDING, SMS_PENDING, EmailStatus, OrderStatus, SmsStatus
from varsel.shipments.repository import ENDED_ORDER_COLUMNS, write_feed_entries_of
from varsel.webhooks import outbox
from varsel.webhooks.events import NOTIFICATION_STATUS_CHANGED, NotificationChange

_PENDING: dict[str, list[str]] = {
    email_notifications.name: [s.value for s in EMAIL_PENDING],
    sms_notifications.name: [s.value for s in SMS_PENDING],
}
# Handed to the provider and waiting for a delivery report.
_AWAITING_REPORT: dict[str, str] = {
    email_notifications.name: EmailStatus.SUCCEEDED.value,
    sms_notifications.name: SmsStatus.ACCEPTED.value,
}
# Providers that never send delivery reports (an SMTP relay): their accepted notifications are final as they are,
# neither awaited by their order nor failed with Failed_TTL for want of a report. Matched on the provider column,
# so notifications sent before an operator switched providers keep the rule of the provider that took them.
PROVIDERS_WITHOUT_REPORTS = ("smtp",)
NEW = "New"
SENDING = "Sending"
FAILED_TTL = "Failed_TTL"


def _expects_report(table: Table) -> Any:
    return or_(table.c.provider.is_(None), table.c.provider.not_in(PROVIDERS_WITHOUT_REPORTS))


def _still_pending(table: Table) -> Any:
    """New, Sending, or handed over and awaiting a report that will come."""
    return or_(
        table.c.status.in_([s for s in _PENDING[table.name] if s != _AWAITING_REPORT[table.name]]),
        and_(table.c.status == _AWAITING_REPORT[table.name], _expects_report(table)),
    )


def leaves_pending(table: Table, status: str, provider: str | None) -> bool:
    """Whether a notification left in `status` by `provider` is still pending, as `_still_pending` has it: its
    order cannot be completed yet, so there is no need to ask the database."""
    if status in (NEW, SENDING):
        return True
    return status == _AWAITING_REPORT[table.name] and provider not in PROVIDERS_WITHOUT_REPORTS


# ---------------------------------------------------------------- orders


async def claim_due_orders(
    conn: AsyncConnection, worker: str, now: datetime, lease_until: datetime, limit: int
) -> list[Any]:
    """Take up to `limit` due orders: Registered ones, and Processing ones whose worker's lease ran out, taking
    turns between service owners (see `_claim_in_turns`).

    Answers (id, previous status, processing_attempts, creator) per order, in turns: the previous status tells a
    first claim from a take-over after a lease ran out."""
    values = {
        "status": OrderStatus.PROCESSING.value,
        "status_changed": now,
        "claimed_by": worker,
        "claimed_until": lease_until,
        "processing_attempts": orders.c.processing_attempts + 1,
    }
    returning = [orders.c.id, orders.c.processing_attempts, orders.c.creator, orders.c.process_after]
    return await _claim_in_turns(conn, _ORDER_QUEUE, now, values, returning, limit)


# The claim index's own condition, spelt out: SQLite uses a partial index only when the query's WHERE contains its
# condition as written, and cannot see that `status = 'Registered' OR (status = 'Processing' AND …)` implies it.
# Without it every claim and every next-due look-up scanned all orders ever made (3 ms per 100,000 on SQLite).
# The values are literals, not bound parameters, for the same reason: SQLite matches the index's condition only
# against constants.
def _status_in(table: Table, *statuses: str) -> Any:
    return table.c.status.in_([literal_column(f"'{status}'") for status in statuses])


_ORDER_UNFINISHED = _status_in(orders, OrderStatus.REGISTERED.value, OrderStatus.PROCESSING.value)


def _unsent(table: Table) -> Any:
    """As _ORDER_UNFINISHED, for a notification table's sendable index."""
    return _status_in(table, NEW, SENDING)


def _among(conn: AsyncConnection, column: Any, ids: Sequence[UUID]) -> Any:
    """`column IN ids`, written so that PostgreSQL does not compare every row with every id.

    Given `id IN (…)` over a table of a few thousand orders, its planner chose a sequential scan testing each row
    against the whole list: 5-16 ms per statement for 25-40 ids in the dispatch benchmark. Joined with the ids
    unnested from one array parameter, it looks each id up in the index, or on a small table hashes the ids and
    passes over the rows once (about 1 ms); and the statement has one shape whatever the number of ids, so one
    prepared statement serves every group. It is a join: `ids` must be distinct, or a row would be matched once
    per copy (harmless in an UPDATE, not in a SELECT). Not for every list: finishing orders (`finish_orders`) reads them
    through the small index of unfinished orders with a plain IN, which measured faster than the join."""
    if conn.dialect.name != "postgresql":
        return column.in_(list(ids))
    wanted = (
        func.unnest(bindparam(None, list(ids), type_=ARRAY(Uuid)))
        .table_valued(Column("id", Uuid))
        .render_derived(name="among")
    )
    return column == wanted.c.id


def _held_by(worker: str) -> Any:
    return and_(orders.c.status == OrderStatus.PROCESSING.value, orders.c.claimed_by == worker)


async def retry_order_later(conn: AsyncConnection, order_id: UUID, worker: str, at: datetime, now: datetime) -> bool:
    result = await conn.execute(
        update(orders)
        .where(and_(orders.c.id == order_id, _held_by(worker)))
        .values(
            status=OrderStatus.REGISTERED.value,
            status_changed=now,
            process_after=at,
            claimed_by=None,
            claimed_until=None,
        )
    )
    return bool(result.rowcount == 1)


async def release_orders_held_by(conn: AsyncConnection, worker: str, now: datetime) -> list[UUID]:
    """Give back the orders this worker holds while it processes none (a round of its failed with the database
    away): nothing of them was written, so they are Registered again as they were, the failed try not counted."""
    result = await conn.execute(
        update(orders)
        .where(_held_by(worker))
        .values(
            status=OrderStatus.REGISTERED.value,
            status_changed=now,
            claimed_by=None,
            claimed_until=None,
            processing_attempts=orders.c.processing_attempts - 1,  # counted when it was claimed
        )
        .returning(orders.c.id)
    )
    return [row.id for row in result]


async def finish_order(conn: AsyncConnection, order_id: UUID, worker: str, status: OrderStatus, now: datetime) -> bool:
    """Move an order this worker holds to `status`; False when the claim was lost (nothing must be written)."""
    return order_id in await finish_orders(conn, worker, [(order_id, status)], now)


async def finish_orders(
    conn: AsyncConnection, worker: str, statuses: Sequence[tuple[UUID, OrderStatus]], now: datetime
) -> set[UUID]:
    """Move orders this worker holds to their statuses; answers the ids moved. The others' claims were lost:
    nothing must be written for them."""
    finished: set[UUID] = set()
    by_status: dict[OrderStatus, list[UUID]] = {}
    for order_id, status in statuses:
        by_status.setdefault(status, []).append(order_id)
    for status, order_ids in by_status.items():
        result = await conn.execute(
            update(orders)
            .where(and_(orders.c.id.in_(order_ids), _held_by(worker)))
            .values(status=status.value, status_changed=now, claimed_by=None, claimed_until=None)
            .returning(orders.c.id)
        )
        finished.update(row.id for row in result)
    return finished


async def next_due_order(conn: AsyncConnection) -> datetime | None:
    """When the order worker next has something to claim: a Registered order's send time, or the end of another
    worker's lease on a Processing one."""
    registered = await conn.execute(
        select(func.min(orders.c.process_after)).where(
            and_(_ORDER_UNFINISHED, orders.c.status == OrderStatus.REGISTERED.value)
        )
    )
    leased = await conn.execute(
        select(func.min(orders.c.claimed_until)).where(
            and_(_ORDER_UNFINISHED, orders.c.status == OrderStatus.PROCESSING.value)
        )
    )
    return _earliest(registered.scalar(), leased.scalar())


async def insert_notifications(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    # One statement for all rows needs the same columns in each: a failed row has no address or content.
    columns = {key for row in rows for key in row}
    await conn.execute(insert(table), [{column: row.get(column) for column in columns} for row in rows])


async def complete_orders(conn: AsyncConnection, order_ids: Sequence[UUID], now: datetime) -> list[UUID]:
    """Processed orders among these with nothing pending become Completed, each with its status feed entry (which
    takes the feed's lock until commit: call this last in the transaction)."""
    if not order_ids:
        return []
    # Receipt-driven fallback: notifications that ended make their watched fallbacks due or closed, in this
    # transaction; an order with a fallback watching or due is not complete (varsel.dispatch.fallback).
    await repository_fallback.decide(conn, order_ids, now)
    nothing_pending = [
        ~exists().where(and_(table.c.order_id == orders.c.id, _still_pending(table)))
        for table in (email_notifications, sms_notifications)
    ]
    nothing_pending.append(~repository_fallback.unfinished_fallback(orders.c.id))
    result = await conn.execute(
        update(orders)
        .where(
            and_(
                _among(conn, orders.c.id, sorted(set(order_ids))),
                orders.c.status == OrderStatus.PROCESSED.value,
                *nothing_pending,
            )
        )
        .values(status=OrderStatus.COMPLETED.value, status_changed=now)
        .returning(*ENDED_ORDER_COLUMNS)
    )
    completed = result.all()
    await write_feed_entries_of(conn, completed, now)
    return [row.id for row in completed]


# ---------------------------------------------------------------- notifications


async def claim_notifications(
    conn: AsyncConnection, table: Table, worker: str, now: datetime, lease_until: datetime, limit: int
) -> list[Any]:
    """Take up to `limit` notifications due for sending (and ones whose sender's lease ran out) as Sending, taking
    turns between service owners (see `_claim_in_turns`).

    Answers the claimed rows in turns, each with `previous_status` (New, or Sending for a take-over)."""
    values = {
        "status": SENDING,
        "status_changed": now,
        "claimed_by": worker,
        "claimed_until": lease_until,
        "attempts": table.c.attempts + 1,
    }
    return await _claim_in_turns(conn, _NOTIFICATION_QUEUES[table.name], now, values, list(table.c), limit)


# ---------------------------------------------------------------- taking turns between service owners

# The claim statements are built once per kind of work and database (building them took longer than running
# them); what changes between claims is bound: the time, the owners, each owner's share, the rest's size.
_NOW = "claim_now"


@dataclass(frozen=True)
class _Queue:
    """Work of one kind as the claims read it: the table, the column saying when an item is due, the condition
    of the table's partial indexes (`unfinished`: the due-time index and the owner index, on creator and due
    time), and what else an item needs to be claimed at the time bound as _NOW (`claimable`)."""

    table: Table
    due_time: str
    unfinished: Callable[[Any], Any]
    claimable: Callable[[Any, Any], Any]

    def unfinished_in(self, t: Any, dialect: str) -> Any:
        """The partial indexes' condition, for the table or an alias of it."""
        return _usually(self.unfinished(t), dialect)

    def claimable_now(self, t: Any, dialect: str) -> Any:
        """Unfinished and claimable at _NOW, whatever its due time."""
        return and_(self.unfinished_in(t, dialect), self.claimable(t, bindparam(_NOW)))


def _usually(condition: Any, dialect: str) -> Any:
    """A condition most rows of a partial index meet, said so to SQLite (likely()). Left to itself, SQLite took the
    status index for the claims' reads, as if a status were rare, and read and sorted every unfinished row to take
    a few: 3 ms per claim at 20,000 due notifications, and per owner when finding the owners. (For the same
    reason `claimable` says "not leased" as NOT(…): as an OR of statuses SQLite read the status index per
    status.)"""
    return func.likely(condition) if dialect == "sqlite" else condition


_ORDER_QUEUE = _Queue(
    orders,
    "process_after",
    lambda t: _status_in(t, OrderStatus.REGISTERED.value, OrderStatus.PROCESSING.value),
    # Registered, or Processing with its worker's lease run out.
    lambda t, now: not_(and_(t.c.status == OrderStatus.PROCESSING.value, t.c.claimed_until >= now)),
)
_NOTIFICATION_QUEUES = {
    table.name: _Queue(
        table,
        "send_after",
        _unsent,
        lambda t, now: and_(
            # Past its expiry a notification is never handed over (after an outage, say): the sweeper ends it.
            t.c.expiry >= now,
            # New, or Sending with its sender's lease run out.
            not_(and_(t.c.status == SENDING, t.c.claimed_until >= now)),
        ),
    )
    for table in (email_notifications, sms_notifications)
}


async def _claim_in_turns(
    conn: AsyncConnection,
    queue: _Queue,
    now: datetime,
    values: dict[str, Any],
    returning: list[Any],
    limit: int,
) -> list[Any]:
    """Claim up to `limit` due items, taking turns between the service owners who have any: one owner's backlog
    (a burst of 300 orders, a million recipients) must not make another owner's single item wait behind all of
    it, nor one owner's failing items fill every batch.

    Round-robin within the batch: each owner with unfinished work gets up to an equal share of it (its earliest
    due items), and what owners with less than their share leave over goes to the earliest due items of anyone.
    Both reads go through the owner index (creator, due time): the owners are found with one index seek each (a
    loose index scan), their items with one index range each, so a claim costs the same however deep any
    owner's backlog is. The claimed rows are answered in turns (every owner's first, then every owner's second,
    …), the order in which the workers start them."""
    dialect = conn.dialect.name
    owners = [str(creator) for creator in (await conn.execute(_owners_with_work(queue, dialect))).scalars()]
    if not owners:
        return []
    if len(owners) > limit:
        # More owners with work than places in the batch: a random few this time (fair over many claims).
        owners = random.sample(owners, limit)
    share = -(-limit // len(owners))
    parameters = {
        _NOW: now,
        "claim_owners": owners if dialect == "postgresql" else json.dumps(owners),
        "claim_share": share,
    }
    claimed = await _claim(conn, queue.table, _heads(queue, dialect), values, returning, parameters)
    taken = Counter(row.creator for row in claimed)
    if len(claimed) < limit and any(count >= share for count in taken.values()):
        rest = {_NOW: now, "claim_rest": limit - len(claimed)}
        claimed += await _claim(conn, queue.table, _earliest_of_anyone(queue, dialect), values, returning, rest)
    return _in_turns(claimed, queue.due_time)


@functools.cache
def _owners_with_work(queue: _Queue, dialect: str) -> Select[Any]:
    """The creators with unfinished work in the queue's table: each next one is the least creator above the last in
    the owner index, one seek per owner (a recursive CTE: neither database skips through an index by itself)."""
    table = queue.table
    unfinished = queue.unfinished_in(table, dialect)

    def least(*above: Any) -> Any:
        return select(func.min(table.c.creator)).where(and_(unfinished, *above)).scalar_subquery()

    owners = select(least().label("creator")).cte("owners", recursive=True)
    owners = owners.union_all(
        select(least(table.c.creator > owners.c.creator).label("creator")).where(owners.c.creator.is_not(None))
    )
    return select(owners.c.creator).where(owners.c.creator.is_not(None))


@functools.cache
def _heads(queue: _Queue, dialect: str) -> Select[Any]:
    """Each owner's earliest due items, up to the share bound as claim_share, read from the owner index: (id,
    status) rows for `_claim`.

    PostgreSQL joins the owners (unnested from one array parameter) with a LATERAL subquery per owner, which
    locks what it takes and skips what other workers hold. SQLite has no LATERAL: each owner (from a JSON array)
    takes its items through a correlated IN subquery."""
    table = queue.table
    if dialect == "postgresql":
        owner = (
            func.unnest(bindparam("claim_owners", type_=ARRAY(String)))
            .table_valued(Column("creator", String))
            .render_derived(name="owner")
        )
        # Due is said as (creator, due time) <= (owner, now), which only the owner index can answer. Said as due
        # time <= now, the plan PostgreSQL keeps for the prepared statement after five runs (made without the
        # values) read the due-time index instead and skipped every other owner's items: 1.4 ms per owner at
        # 20,000 due notifications, three times the claim it replaced, against 0.03 ms.
        due = tuple_(table.c.creator, table.c[queue.due_time]) <= tuple_(owner.c.creator, bindparam(_NOW))
        head = (
            select(table.c.id, table.c.status)
            .where(and_(table.c.creator == owner.c.creator, due, queue.claimable_now(table, dialect)))
            .order_by(table.c.creator, table.c[queue.due_time])
            .limit(bindparam("claim_share"))
            .with_for_update(skip_locked=True)
            .lateral("head")
        )
        return select(head.c.id, head.c.status).select_from(owner).join(head, true())
    owner = func.json_each(bindparam("claim_owners", type_=String)).table_valued("value").alias("owner")
    item = table.alias("item")
    earliest = (
        select(item.c.id)
        .where(
            and_(
                item.c.creator == owner.c.value,
                item.c[queue.due_time] <= bindparam(_NOW),
                queue.claimable_now(item, dialect),
            )
        )
        .order_by(item.c.creator, item.c[queue.due_time])
        .limit(bindparam("claim_share"))
    )
    return select(table.c.id, table.c.status).select_from(owner).join(table, table.c.id.in_(earliest))


@functools.cache
def _earliest_of_anyone(queue: _Queue, dialect: str) -> Select[Any]:
    """The earliest due items of anyone, as many as bound as claim_rest, read from the due-time index."""
    table = queue.table
    return (
        select(table.c.id, table.c.status)
        .where(and_(table.c[queue.due_time] <= bindparam(_NOW), queue.claimable_now(table, dialect)))
        .order_by(table.c[queue.due_time])
        .limit(bindparam("claim_rest"))
        .with_for_update(skip_locked=True)
    )


def _in_turns(rows: list[Any], due_time: str) -> list[Any]:
    """Rows ordered by turn: each owner's earliest first, then each owner's second, …; within a turn, by due time."""
    by_owner: dict[str, list[Any]] = {}
    for row in sorted(rows, key=lambda row: getattr(row, due_time)):
        by_owner.setdefault(row.creator, []).append(row)
    ranked = [(turn, row) for owned in by_owner.values() for turn, row in enumerate(owned)]
    ranked.sort(key=lambda ranked_row: (ranked_row[0], getattr(ranked_row[1], due_time)))
    return [row for _, row in ranked]


async def _claim(
    conn: AsyncConnection,
    table: Table,
    due: Select[Any],
    values: dict[str, Any],
    returning: list[Any],
    parameters: dict[str, Any],
) -> list[Any]:
    """Update the rows `due` selects (id, status; its bound values in `parameters`) with `values`, answering
    `returning` plus `previous_status`.

    PostgreSQL does it in one statement, the locking select as a CTE whose status RETURNING can still show.
    SQLite cannot name a FROM table in RETURNING; there the select and the update run one after the other, which
    is as safe, since its write transaction (begun IMMEDIATE) admits no other writer in between."""
    if conn.dialect.name == "postgresql":
        locked = due.cte("due")
        result = await conn.execute(
            update(table)
            .where(table.c.id == locked.c.id)
            .values(**values)
            .returning(*returning, locked.c.status.label("previous_status")),
            parameters,
        )
        return list(result)
    previous = {row.id: row.status for row in await conn.execute(due, parameters)}
    if not previous:
        return []
    result = await conn.execute(
        update(table).where(table.c.id.in_(list(previous))).values(**values).returning(*returning)
    )
    return [_with_previous(row, previous[row.id]) for row in result]


def _with_previous(row: Row[Any], previous_status: str) -> Any:
    return SimpleNamespace(**row._asdict(), previous_status=previous_status)


async def order_templates(conn: AsyncConnection, order_ids: Sequence[UUID]) -> dict[UUID, Any]:
    result = await conn.execute(
        select(
            orders.c.id,
            orders.c.email_from_address,
            orders.c.email_subject,
            orders.c.email_body,
            orders.c.email_content_type,
            orders.c.sms_sender,
            orders.c.sms_body,
            orders.c.sms_sending_time_policy,
            orders.c.attachments,
            # For the webhook events of the notifications' changes (varsel.webhooks.events): what they tell of the
            # order, and whether its owner subscribes to them at all (if not, the claim writes none, with no query).
            orders.c.senders_reference,
            outbox.watched(orders.c.creator, NOTIFICATION_STATUS_CHANGED).label("watched"),
        ).where(orders.c.id.in_(sorted(set(order_ids))))
    )
    return {row.id: row for row in result}


# What a send outcome may set; the columns an outcome leaves out keep their values.
_OUTCOME_COLUMNS = (
    "status",
    "status_changed",
    "provider",
    "provider_reference",
    "status_detail",
    "send_after",
    "attempts",
)


class Held(set[UUID]):
    """The notifications an outcome write found still held by its worker (and wrote), and whether the owner of any
    of them subscribes to notification changes (`watched`: only then are webhook events to be written)."""

    def __init__(self, ids: Iterable[UUID] = (), watched: bool = False) -> None:
        super().__init__(ids)
        self.watched = watched


async def record_outcomes(
    conn: AsyncConnection, table: Table, worker: str, outcomes: Sequence[tuple[UUID, dict[str, Any]]]
) -> Held:
    """Write send outcomes, only for the notifications this worker still holds as Sending; answers those ids (and
    whether any of their owners subscribes to notification changes).

    Two statements whatever the number of outcomes: the held rows are read (and locked) with the columns an outcome
    may leave out, then one UPDATE runs for every row with the same shape (one round trip, executemany). SQLite's
    write transaction admits no other writer in between; PostgreSQL's row locks keep others out likewise."""
    if not outcomes:
        return Held()
    columns = [table.c[name] for name in _OUTCOME_COLUMNS]
    held = await conn.execute(
        select(table.c.id, *columns, outbox.watched(table.c.creator, NOTIFICATION_STATUS_CHANGED).label("watched"))
        .where(and_(table.c.id.in_([i for i, _ in outcomes]), table.c.status == SENDING, table.c.claimed_by == worker))
        .with_for_update(of=table)
    )
    current = {row.id: row._asdict() for row in held}
    if not current:
        return Held()
    parameters = []
    for notification_id, values in outcomes:
        if notification_id in current:
            merged = {**current[notification_id], **values}
            parameters.append({"_id": notification_id, **{f"_{name}": merged[name] for name in _OUTCOME_COLUMNS}})
    await conn.execute(
        update(table)
        .where(table.c.id == bindparam("_id", type_=table.c.id.type))
        .values(
            claimed_by=None,
            claimed_until=None,
            **{name: bindparam(f"_{name}", type_=table.c[name].type) for name in _OUTCOME_COLUMNS},
        ),
        parameters,
    )
    return Held(current, watched=any(row["watched"] for row in current.values()))


async def unexpected_errors(conn: AsyncConnection, channel: str, notification_id: UUID) -> int:
    """How often sending this notification raised an exception nobody expected (its attempts with outcome
    "error"): such failures are retried only so many times."""
    result = await conn.execute(
        select(func.count()).where(
            and_(
                notification_attempts.c.notification_id == notification_id,
                notification_attempts.c.channel == channel,
                notification_attempts.c.outcome == "error",
            )
        )
    )
    return int(result.scalar_one())


async def release_notifications_held_by(
    conn: AsyncConnection, table: Table, worker: str, keep: Sequence[UUID]
) -> list[UUID]:
    """Give back, as New, the notifications this worker holds as Sending while it sends none, but for `keep`:
    those it may have handed to the provider, which wait for their lease so that they are not sent twice."""
    held = and_(table.c.status == SENDING, table.c.claimed_by == worker)
    result = await conn.execute(
        update(table)
        .where(and_(held, table.c.id.not_in(keep)) if keep else held)
        .values(status=NEW, claimed_by=None, claimed_until=None, attempts=table.c.attempts - 1)
        .returning(table.c.id)
    )
    return [row.id for row in result]


async def claim_parked_notification(
    conn: AsyncConnection, order_id: UUID, holder: str, now: datetime, lease_until: datetime
) -> tuple[str, Any, Any] | None:
    """Claim an instant order's notification parked after a transient failure (New, due only after its expiry:
    see varsel.orders.instant) for `holder`, if it is still parked and not expired. Answers (channel, notification
    row, its order's template), or None: sent, failed, expired, or being sent by a concurrent retry."""
    for channel, table in NOTIFICATION_TABLES.items():
        result = await conn.execute(
            update(table)
            .where(
                and_(
                    table.c.order_id == order_id,
                    table.c.status == NEW,
                    table.c.send_after > table.c.expiry,
                    table.c.expiry >= now,
                )
            )
            .values(
                status=SENDING,
                status_changed=now,
                claimed_by=holder,
                claimed_until=lease_until,
                attempts=table.c.attempts + 1,
            )
            .returning(*table.c)
        )
        row = result.first()
        if row is not None:
            templates = await order_templates(conn, [order_id])
            return channel, _with_previous(row, NEW), templates[order_id]
    return None


async def being_sent(conn: AsyncConnection, order_id: UUID, now: datetime) -> bool:
    """Whether the order's notification is Sending under a claim that has not run out (its provider call may be
    under way)."""
    for table in NOTIFICATION_TABLES.values():
        found = await conn.execute(
            select(table.c.id).where(
                and_(table.c.order_id == order_id, table.c.status == SENDING, table.c.claimed_until >= now)
            )
        )
        if found.first() is not None:
            return True
    return False


async def apply_delivery_report(
    conn: AsyncConnection,
    table: Table,
    notification_id: UUID,
    status: str,
    now: datetime,
    arrived: datetime | None = None,
) -> UUID | None:
    """Move a notification awaiting its report to the reported status. A final status never moves again, and a
    report that arrived (`arrived`, by default now) after expiry changes nothing. Answers the order id when the
    status moved."""
    result = await conn.execute(
        update(table)
        .where(
            and_(
                table.c.id == notification_id,
                table.c.status == _AWAITING_REPORT[table.name],
                table.c.expiry >= (arrived or now),
            )
        )
        .values(status=status, status_changed=now)
        .returning(table.c.order_id)
    )
    order_id: UUID | None = result.scalar()
    return order_id


async def expire_notifications(
    conn: AsyncConnection, table: Table, now: datetime, report_grace: timedelta
) -> list[tuple[str, Row[Any]]]:
    """Failed_TTL for notifications past expiry: awaiting a report beyond the grace period, or never sent at all
    (New, or Sending with its sender's lease run out). Answers (previous status, row with id and order_id)."""
    stale = {
        _AWAITING_REPORT[table.name]: and_(table.c.expiry < now - report_grace, _expects_report(table)),
        NEW: table.c.expiry < now,
        SENDING: and_(table.c.expiry < now, table.c.claimed_until < now),
    }
    expired: list[tuple[str, Row[Any]]] = []
    # One guarded update per previous status: each transition is logged with the status it really left.
    for previous, condition in stale.items():
        result = await conn.execute(
            update(table)
            .where(and_(table.c.status == previous, condition))
            .values(status=FAILED_TTL, status_changed=now, claimed_by=None, claimed_until=None)
            .returning(table.c.id, table.c.order_id)
        )
        expired += [(previous, row) for row in result]
    return expired


async def next_sendable(conn: AsyncConnection, table: Table, now: datetime) -> datetime | None:
    """When a sender next has something to claim: the earliest New notification's send time, or the earliest end
    of another sender's lease. (Not a Sending row's send time: that is past, and would keep an idle worker spinning
    while another worker holds the row.)"""
    new = await conn.execute(
        select(func.min(table.c.send_after)).where(and_(table.c.status == NEW, table.c.expiry >= now))
    )
    leased = await conn.execute(
        select(func.min(table.c.claimed_until)).where(and_(table.c.status == SENDING, table.c.expiry >= now))
    )
    return _earliest(new.scalar(), leased.scalar())


def _earliest(*moments: datetime | None) -> datetime | None:
    known = [moment for moment in moments if moment is not None]
    return min(known) if known else None


# ---------------------------------------------------------------- wake-ups and the queue's shape

# PostgreSQL channels on which committed work is announced to the workers of every process.
CHANNEL_ORDERS = "varsel_orders"
CHANNEL_EMAIL = "varsel_email"
CHANNEL_SMS = "varsel_sms"


async def announce_work(conn: AsyncConnection, *, orders: bool = False, email: bool = False, sms: bool = False) -> None:
    """Tell listening workers in other processes that work was added. PostgreSQL delivers a NOTIFY only when the
    transaction commits (and folds repeats within it into one), so nobody wakes for work that was rolled back.
    SQLite has no such thing: its one process wakes its workers in memory."""
    if conn.dialect.name != "postgresql":
        return
    for channel, wanted in ((CHANNEL_ORDERS, orders), (CHANNEL_EMAIL, email), (CHANNEL_SMS, sms)):
        if wanted:
            await conn.execute(select(func.pg_notify(channel, "")))


async def queue_snapshot(conn: AsyncConnection, now: datetime) -> dict[str, tuple[int, datetime | None]]:
    """Per kind of work: how many items are due now and unfinished, and since when the oldest has been due."""
    snapshot: dict[str, tuple[int, datetime | None]] = {}
    due_orders = await conn.execute(
        select(func.count(), func.min(orders.c.process_after)).where(
            and_(
                orders.c.status.in_([OrderStatus.REGISTERED.value, OrderStatus.PROCESSING.value]),
                orders.c.process_after <= now,
            )
        )
    )
    count, oldest = due_orders.one()
    snapshot["orders"] = (int(count), oldest)
    for work, table in NOTIFICATION_TABLES.items():
        due = await conn.execute(
            select(func.count(), func.min(table.c.send_after)).where(
                and_(table.c.status.in_([NEW, SENDING]), table.c.send_after <= now)
            )
        )
        count, oldest = due.one()
        snapshot[work] = (int(count), oldest)
    return snapshot


async def awaiting_report_counts(conn: AsyncConnection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for channel, table in NOTIFICATION_TABLES.items():
        result = await conn.execute(
            select(func.count())
            .select_from(table)
            .where(and_(table.c.status == _AWAITING_REPORT[table.name], _expects_report(table)))
        )
        counts[channel] = int(result.scalar_one())
    return counts


async def record_pending_outcomes(
    conn: StatementConnection,
    table: Table,
    worker: str,
    outcomes: Sequence[tuple[UUID, dict[str, Any]]],
    attempts: Sequence[dict[str, Any]],
    now: datetime,
) -> set[UUID]:
    """PostgreSQL, one statement (see varsel.db.one_statement): record_outcomes and insert_attempts together, for
    outcomes that leave their notifications pending (no order to complete) and all set the same columns. Written
    only for the notifications this worker still holds as Sending, and only their attempts and webhook events (each
    change from Sending, at the status_changed it sets, else `now`; built by the statement, for the subscribers it
    finds: see varsel.webhooks.outbox.notification_changes_cte); answers those ids."""
    rows = [{"id": notification_id, **_outcome_values(values)} for notification_id, values in outcomes]
    keys = shape(table, rows)
    attempt_keys = shape(notification_attempts, attempts) if attempts else ()
    statement = _pending_outcomes_statement(table.name, keys, attempt_keys)
    values = {**parameters(rows, keys, "outcome"), "worker": worker, "now": now}
    if attempts:
        values.update(parameters(attempts, attempt_keys, "attempt"))
    return {row["id"] for row in await execute(conn, statement, values)}


@functools.lru_cache(maxsize=64)
def _pending_outcomes_statement(table_name: str, keys: tuple[str, ...], attempt_keys: tuple[str, ...]) -> Any:
    channel = _CHANNEL_OF_TABLE[table_name]
    table = NOTIFICATION_TABLES[channel]
    outcome = source(table, keys, "outcome")
    recorded = (
        update(table)
        .where(and_(table.c.id == outcome.c.id, table.c.status == SENDING, table.c.claimed_by == bindparam("worker")))
        .values(claimed_by=None, claimed_until=None, **{key: outcome.c[key] for key in keys if key != "id"})
        .returning(*outbox.changed_columns(channel), table.c.status_changed)
        .cte("recorded")
    )
    # The webhook events of the outcomes recorded, in the same statement (no round trip more; built by the database
    # only for the notifications someone subscribes to). A change happened when the outcome says, else now.
    now = bindparam("now", type_=UtcDateTime)
    occurred = func.coalesce(recorded.c.status_changed, now) if "status_changed" in keys else now
    events = outbox.notification_changes_cte("events", channel, recorded, SENDING, occurred)
    statement = outbox.notifying(select(recorded.c.id), recorded, events)
    if attempt_keys:
        tried = source(notification_attempts, attempt_keys, "attempt")
        statement = statement.add_cte(
            insert(notification_attempts)
            .from_select(
                attempt_keys,
                select(*[tried.c[key] for key in attempt_keys]).where(
                    tried.c.notification_id.in_(select(recorded.c.id))
                ),
            )
            .cte("attempted")
        )
    return statement


_CHANNEL_OF_TABLE = {table.name: channel for channel, table in NOTIFICATION_TABLES.items()}


def outcome_shape(values: dict[str, Any]) -> tuple[str, ...]:
    """The columns an outcome sets: outcomes written in one record_pending_outcomes must all set the same."""
    return tuple(name for name in _OUTCOME_COLUMNS if name in values)


def _outcome_values(values: dict[str, Any]) -> dict[str, Any]:
    return {name: values[name] for name in _OUTCOME_COLUMNS if name in values}


def record_pending_outcomes_sqlite(
    write: DirectWrite,
    table: Table,
    worker: str,
    outcomes: Sequence[tuple[UUID, dict[str, Any]]],
    attempts: Sequence[dict[str, Any]],
    changes: Sequence[NotificationChange] = (),
) -> set[UUID]:
    """record_pending_outcomes on SQLite, run in the direct writer's transaction (Database.sqlite_write): the
    outcomes in one UPDATE … FROM a VALUES list (RETURNING the notifications still held by this worker as Sending),
    then the attempts of those in one executemany, then the webhook events of their `changes` (which must carry
    their facts), for those someone subscribes to."""
    rows = [{"id": notification_id, **_outcome_values(values)} for notification_id, values in outcomes]
    keys = columns_of(table, rows)
    marks = f"({', '.join('?' for _ in keys)})"
    name = quoted(table.name)
    sql = (
        f"WITH outcome ({', '.join(quoted(key) for key in keys)}) AS (VALUES {', '.join(marks for _ in rows)}) "
        f"UPDATE {name} SET {', '.join(f'{quoted(key)} = outcome.{quoted(key)}' for key in keys if key != 'id')}, "
        "claimed_by = NULL, claimed_until = NULL FROM outcome "
        f"WHERE {name}.id = outcome.id AND {name}.status = ? AND {name}.claimed_by = ? RETURNING {name}.id"
    )
    values = tuple(value for row in rows for value in write.values(table, keys, row))
    returned = {row[0] for row in write.fetch(sql, (*values, SENDING, worker))}
    held = {row["id"] for row in rows if write.value(table, "id", row["id"]) in returned}
    write.insert(notification_attempts, [a for a in attempts if a["notification_id"] in held])
    changed = [change for change in changes if change.notification_id in held and change.facts is not None]
    outbox.write_notification_changes_direct(write, changed)
    return held
