"""SQL of shipments: an order's delivery manifest, and the status feed (written, read, purged).

A feed entry is written in the transaction that moves its order to a final state (Completed, SendConditionNotMet,
Cancelled), by `write_feed_entries`, with a snapshot of the order's notifications then. Every writer goes through
it, so the feed's one rule holds everywhere:

**seq is allocated in commit order.** A reader pages by seq ("everything after the last seq I saw"); if one
transaction took seq 10 and another seq 11, and 11 committed first, a reader could see 11, move past it, and never
see 10. Altinn hides every entry for 2 seconds and hopes. varsel makes it impossible:

- PostgreSQL: `write_feed_entries` takes a transaction-scoped advisory lock (`FEED_LOCK_KEY`) immediately before
  inserting, as the last statements of the transaction; the lock is held until commit. So between taking a seq
  and committing, no other transaction can take one: seqs are taken in the order transactions commit. And a
  transaction is visible to new snapshots before its locks are released (PostgreSQL ends a transaction in the
  proc array before it releases its locks), so when the next writer gets the lock and its seq, every lower seq is
  already visible: a reader whose snapshot shows seq n shows every committed entry below n. Entries are served at
  once, with no delay. The lock is held for the one INSERT … SELECT that builds the entries, for the order.*
  webhook events of the owners who subscribe (their payload is the entry's snapshot, so they are written after
  it) and for the commit. One row lock can be waited for inside it, and only that one: the webhook events' read
  of the owner's subscriptions locks them FOR KEY SHARE (varsel.webhooks.outbox), which waits for a DELETE of one
  of them under way. It cannot deadlock: the deletion (the owner's API request) takes no feed lock and waits for
  nothing a feed writer holds, and the updates of subscriptions (the owner's API, the delivery worker: FOR NO KEY
  UPDATE) do not conflict with KEY SHARE. The entries' foreign key share lock is on order rows the transaction has
  just updated itself. Writers queue on the lock for that long: completions are serialised from their feed insert
  to their commit, not before.
- SQLite: a writer holds the database's one write lock from BEGIN IMMEDIATE to commit, so the same holds by
  construction. seq is the rowid; the purge never deletes the newest entry, so SQLite never hands out a seq again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Column, String, Uuid, and_, bindparam, delete, func, literal, select, text, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import email_notifications, orders, sms_notifications, status_feed
from varsel.db.types import UtcDateTime
from varsel.notifications.statuses import OrderStatus
from varsel.webhooks import outbox
from varsel.webhooks.events import ORDER_KINDS, order_event

# The order statuses that end an order, and so write its feed entry.
FINAL_ORDER_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.SEND_CONDITION_NOT_MET, OrderStatus.CANCELLED})
_FINAL = frozenset(status.value for status in FINAL_ORDER_STATUSES)
# PostgreSQL advisory lock ordering the feed's writers (any 64-bit constant no other lock of varsel's uses: "varsfeed").
FEED_LOCK_KEY = int.from_bytes(b"varsfeed", "big", signed=True)

EMAIL = "email"
SMS = "sms"


@dataclass(frozen=True)
class ShipmentRecipient:
    """One generated notification: its channel (email, sms), address ("" when none was found or the recipient is
    reserved), stored status and when that status was reached."""

    channel: str
    destination: str
    status: str
    last_update: datetime
    # Receipt-driven fallback: the notification on the other channel this one was sent for, and why (its failed
    # status, or NoDeliveryReport); None for any other notification.
    fallback_of: UUID | None = None
    fallback_reason: str | None = None


@dataclass(frozen=True)
class Shipment:
    """An order as a shipment: its type (Notification, Reminder, …), stored status, last update and notifications."""

    id: UUID
    senders_reference: str | None
    order_type: str
    status: str
    last_update: datetime
    recipients: tuple[ShipmentRecipient, ...]


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    shipment: Shipment


_ORDER_COLUMNS = (
    orders.c.id,
    orders.c.senders_reference,
    orders.c.order_type,
    orders.c.status,
    orders.c.created,
    orders.c.status_changed,
)


async def manifest(conn: AsyncConnection, order_id: UUID, creator: str) -> Shipment | None:
    """The order as a shipment with every notification generated for it; None when `creator` has no such order."""
    row = (
        await conn.execute(select(*_ORDER_COLUMNS).where(and_(orders.c.id == order_id, orders.c.creator == creator)))
    ).one_or_none()
    if row is None:
        return None
    recipients = await _recipients_of(conn, [order_id])
    return _shipment(row, recipients.get(order_id, ()))


def _shipment(row: Any, recipients: Sequence[ShipmentRecipient]) -> Shipment:
    # The later of the order's creation and its last status change (the reference: created or processed).
    return Shipment(
        id=row.id,
        senders_reference=row.senders_reference,
        order_type=row.order_type,
        status=row.status,
        last_update=max(row.created, row.status_changed),
        recipients=tuple(recipients),
    )


def _among(conn: AsyncConnection, column: Any, ids: Sequence[UUID]) -> Any:
    """`column` is one of `ids`, as one bound value whatever their number: an array on PostgreSQL (unnested and
    joined, which the planner answers from the index), a JSON array of the stored hex form on SQLite. A plain IN
    binds each id apart, which cost more than the look-up itself at a hundred ids."""
    if conn.dialect.name == "postgresql":
        wanted = (
            func.unnest(bindparam(None, list(ids), type_=ARRAY(Uuid)))
            .table_valued(Column("id", Uuid))
            .render_derived(name="wanted")
        )
        return column.in_(select(wanted.c.id))
    return column.in_(select(func.json_each(json.dumps([i.hex for i in ids])).table_valued("value").c.value))


async def _recipients_of(conn: AsyncConnection, order_ids: Sequence[UUID]) -> dict[UUID, list[ShipmentRecipient]]:
    """Each order's notifications, email first, each channel in the order they were made: one statement."""
    found: dict[UUID, list[ShipmentRecipient]] = {}
    if not order_ids:
        return found
    email, sms = email_notifications, sms_notifications
    both = union_all(
        *(
            select(
                literal(channel).label("channel"),
                table.c.order_id,
                address.label("destination"),
                table.c.status,
                table.c.status_changed,
                table.c.created,
                table.c.id,
                table.c.fallback_of,
                table.c.fallback_reason,
            ).where(_among(conn, table.c.order_id, order_ids))
            for channel, table, address in ((EMAIL, email, email.c.email_address), (SMS, sms, sms.c.mobile_number))
        )
    ).subquery()
    result = await conn.execute(
        select(
            both.c.channel,
            both.c.order_id,
            both.c.destination,
            both.c.status,
            both.c.status_changed,
            both.c.fallback_of,
            both.c.fallback_reason,
        ).order_by(both.c.order_id, both.c.channel, both.c.created, both.c.id)
    )
    for row in result:
        found.setdefault(row.order_id, []).append(
            ShipmentRecipient(
                row.channel,
                row.destination or "",
                row.status,
                row.status_changed,
                row.fallback_of,
                row.fallback_reason,
            )
        )
    return found


# ---------------------------------------------------------------- the status feed

# What a feed entry needs of its order: complete_orders answers these from its UPDATE (no read of its own).
ENDED_ORDER_COLUMNS = (*_ORDER_COLUMNS, orders.c.creator)


async def write_feed_entries(conn: AsyncConnection, order_ids: Sequence[UUID], now: datetime) -> int:
    """Write the feed entry of each of these orders that is now in a final state, with a snapshot of its
    notifications; an order that has its entry already keeps it, and the order.* webhook events of those written
    (varsel.webhooks.events: an event's payload is the entry's snapshot, as the manifest). Call it last in the
    transaction that ends the orders (see the module's docstring: on PostgreSQL it takes the feed's lock, held until
    commit). Answers how many entries were written.

    One INSERT … SELECT builds every entry in the database (json_object / json_build_object), so that ending a
    batch of orders costs one statement more, not a read of their notifications into Python and back."""
    wanted = sorted(set(order_ids))
    if not wanted:
        return 0
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        # The last statements of the transaction: from here to commit no other writer can take a seq (see above).
        await conn.execute(select(func.pg_advisory_xact_lock(FEED_LOCK_KEY)))
    statement = _INSERT_POSTGRESQL if postgres else _INSERT_SQLITE
    ids: Any = wanted if postgres else json.dumps([i.hex for i in wanted])
    written = (await conn.execute(statement, {"ids": ids, "now": now})).all()
    # The order.* webhook events, in the same transaction: only for the entries whose owner subscribes (the
    # statement answered their snapshots), each with the manifest the entry's snapshot is.
    watched = sorted((row for row in written if row.watched is not None), key=lambda row: row.seq)
    if watched:
        await outbox.fan_out(conn, [order_event(row.creator, row.watched, now) for row in watched])
    return len(written)


async def write_feed_entries_of(conn: AsyncConnection, ended: Sequence[Any], now: datetime) -> int:
    """As write_feed_entries, given the orders' rows (with id and status, as they are now in this transaction): only
    those in a final state are looked at."""
    return await write_feed_entries(conn, [row.id for row in ended if row.status in _FINAL], now)


_FINAL_SQL = ", ".join(f"'{status}'" for status in sorted(_FINAL))
# A notification sent by receipt-driven fallback carries "fallbackFor": {"notificationId", "reason"} (as stored: the
# id as each database writes it, the reason its status; the API answers both as the manifest does); the others have
# "fallbackFor": null.
_RECIPIENT_SQL = {
    "sqlite": "json_object('channel', '{channel}', 'destination', coalesce(n.{address}, ''), 'status', n.status, "
    "'lastUpdate', n.status_changed, 'fallbackFor', json(CASE WHEN n.fallback_of IS NOT NULL THEN "
    "json_object('notificationId', n.fallback_of, 'reason', n.fallback_reason) END))",
    "postgresql": "json_build_object('channel', '{channel}', 'destination', coalesce(n.{address}, ''), "
    "'status', n.status, 'lastUpdate', n.status_changed, 'fallbackFor', CASE WHEN n.fallback_of IS NOT NULL THEN "
    "json_build_object('notificationId', n.fallback_of, 'reason', n.fallback_reason) END)",
}


# Each entry's snapshot is answered back only when its owner subscribes to order events (the order.* webhook's
# payload is built from it: varsel.webhooks.events); otherwise null, and ending an order costs nothing more for
# webhooks than this index probe of (creator, kind), inside the feed's INSERT.
_ORDER_KINDS_SQL = ", ".join(f"'{kind}'" for kind in ORDER_KINDS)
_WATCHED_SQL = (
    "CASE WHEN EXISTS (SELECT 1 FROM webhook_subscription_events s WHERE s.creator = status_feed.creator AND "
    f"s.kind IN ({_ORDER_KINDS_SQL})) THEN status_feed.entry END AS watched"
)


def _recipients_sql(dialect: str) -> str:
    parts = [
        f"SELECT {_RECIPIENT_SQL[dialect].format(channel=channel, address=address)} AS recipient, {rank} AS rank, "
        f"n.created, n.id FROM {table} n WHERE n.order_id = o.id"
        for rank, (channel, table, address) in enumerate(
            ((EMAIL, "email_notifications", "email_address"), (SMS, "sms_notifications", "mobile_number"))
        )
    ]
    return " UNION ALL ".join(parts)


# SQLite: json() keeps what a subquery answers JSON (it would be a string otherwise); the aggregate takes the rows in
# the subquery's order. The WHERE clause is required before an upsert's ON CONFLICT in INSERT … SELECT.
_INSERT_SQLITE = text(
    f"""
    INSERT INTO status_feed (order_id, creator, created, entry)
    SELECT o.id, o.creator, :now, json_object(
        'shipmentId', o.id, 'sendersReference', o.senders_reference, 'type', o.order_type, 'status', o.status,
        'lastUpdate', max(o.created, o.status_changed),
        'recipients', json((SELECT json_group_array(json(r.recipient)) FROM (
            {_recipients_sql("sqlite")} ORDER BY rank, created, id) r)))
    FROM orders o
    WHERE o.id IN (SELECT value FROM json_each(:ids)) AND o.status IN ({_FINAL_SQL})
    ORDER BY o.id
    ON CONFLICT (order_id) DO NOTHING
    RETURNING seq, creator, {_WATCHED_SQL}
    """
).bindparams(bindparam("now", type_=UtcDateTime()), bindparam("ids", type_=String()))

_INSERT_POSTGRESQL = text(
    f"""
    INSERT INTO status_feed (order_id, creator, created, entry)
    SELECT o.id, o.creator, :now, json_build_object(
        'shipmentId', o.id, 'sendersReference', o.senders_reference, 'type', o.order_type, 'status', o.status,
        'lastUpdate', greatest(o.created, o.status_changed),
        'recipients', coalesce((SELECT json_agg(r.recipient ORDER BY r.rank, r.created, r.id) FROM (
            {_recipients_sql("postgresql")}) r), '[]'::json))
    FROM orders o
    WHERE o.id = ANY(:ids) AND o.status IN ({_FINAL_SQL})
    ORDER BY o.id
    ON CONFLICT (order_id) DO NOTHING
    RETURNING seq, creator, {_WATCHED_SQL}
    """
).bindparams(bindparam("now", type_=UtcDateTime()), bindparam("ids", type_=ARRAY(Uuid)))


def _utc(value: str) -> datetime:
    """A time as the database wrote it into JSON: PostgreSQL with its session's offset, SQLite as stored (UTC)."""
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _from_snapshot(seq: int, entry: Any) -> FeedEntry:
    data = json.loads(entry) if isinstance(entry, str) else entry
    return FeedEntry(
        seq,
        Shipment(
            id=UUID(data["shipmentId"]),
            senders_reference=data.get("sendersReference"),
            order_type=data["type"],
            status=data["status"],
            last_update=_utc(data["lastUpdate"]),
            recipients=tuple(
                ShipmentRecipient(
                    r["channel"],
                    r["destination"],
                    r["status"],
                    _utc(r["lastUpdate"]),
                    *_fallback_for(r.get("fallbackFor")),
                )
                for r in data["recipients"]
            ),
        ),
    )


def _fallback_for(snapshot: Any) -> tuple[UUID | None, str | None]:
    if not snapshot:
        return None, None
    return UUID(snapshot["notificationId"]), snapshot.get("reason")


async def read_feed(
    conn: AsyncConnection, creator: str, seq: int, limit: int, *, descending: bool = False
) -> list[FeedEntry]:
    """The creator's entries after `seq` in ascending order; or, descending, before `seq` (every one when `seq` is
    0), newest first. At most `limit`. Everything committed is served: see the module's docstring."""
    query = select(status_feed.c.seq, status_feed.c.entry).where(status_feed.c.creator == creator)
    if descending:
        if seq > 0:
            query = query.where(status_feed.c.seq < seq)
        query = query.order_by(status_feed.c.seq.desc())
    else:
        query = query.where(status_feed.c.seq > seq).order_by(status_feed.c.seq)
    result = await conn.execute(query.limit(limit))
    return [_from_snapshot(int(row.seq), row.entry) for row in result]


async def purge_feed(conn: AsyncConnection, created_before: datetime, limit: int) -> int:
    """Delete up to `limit` entries created at or before `created_before`, oldest first; answers how many. The
    newest entry of all is kept whatever its age: SQLite numbers a new row one above the highest there is, so
    deleting every row would hand out seqs a reader has already seen."""
    newest = select(func.max(status_feed.c.seq)).scalar_subquery()
    oldest = (
        select(status_feed.c.seq)
        .where(and_(status_feed.c.created <= created_before, status_feed.c.seq < newest))
        .order_by(status_feed.c.seq)
        .limit(limit)
    )
    result = await conn.execute(delete(status_feed).where(status_feed.c.seq.in_(oldest)))
    return int(result.rowcount or 0)
