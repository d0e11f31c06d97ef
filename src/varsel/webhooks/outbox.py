"""Writing webhook events into the outbox, in the transaction that makes the change they tell of.

An event exists exactly when its change does: the caller passes the connection of the transaction that changes an
order or a notification, and the rows go in with it (or not at all). One row per event and subscriber (fan-out at
write time), so delivery needs no join and each endpoint's events are numbered (`seq`) in the order they were
written. A change of a service owner with no subscription for its kind writes nothing: one index range of
(creator, kind) finds no subscriber.

Rows are written for disabled subscriptions too: they wait, pending, until the owner enables the endpoint again.

What a change costs when nobody subscribes, by the way it is written:

- In a transaction of SQLAlchemy statements: at most one query. `write_notification_changes` looks the subscribers
  up for a whole batch of changes at once (by creator when the writer has the notifications' facts at hand, else
  joined with the changed notifications, which also reads their facts); the payloads are built, and rows written,
  only for changes someone subscribes to. The senders' claims and outcome writes skip even that: a query they make
  anyway (the order templates, the read of the held rows) says whether any owner subscribes (`watched`). Order
  events cost nothing more: the status feed's INSERT answers, per entry, its snapshot only when someone subscribes
  to its owner's order events (varsel.shipments.repository), and only then are events written (`fan_out`).
- PostgreSQL's one-statement writes (varsel.db.one_statement): no round trip more. The senders' outcome writes
  (every SMS awaiting its report goes through one) bind nothing per event: a WITH clause (`notification_changes_cte`)
  builds each changed notification's payload from the row the UPDATE returns, only for the rows that find a
  subscriber. The instant store binds its few events as arrays, and a WITH clause (`events_cte`) inserts each for
  every subscriber of its kind, for the rows the statement did store; those payloads are built beforehand.
- SQLite's direct writes (varsel.db.sqlite_direct): one query in the writer's thread (`fan_out_direct`), the
  payloads built only for changes someone subscribes to.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    String,
    Text,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    tuple_,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import CTE, FromClause, Select

from varsel.db.sqlite_direct import DirectWrite, quoted
from varsel.db.tables import (
    NOTIFICATION_TABLES,
    orders,
    webhook_events,
    webhook_subscription_events,
    webhook_subscriptions,
)
from varsel.ids import new_id
from varsel.webhooks.events import (
    CHANNEL_NAME,
    EMAIL,
    EVENT_KINDS,
    LIFECYCLE_PREFIX,
    LIFECYCLE_RENAMED,
    NOTIFICATION_STATUS_CHANGED,
    ORDER_CANCELLED,
    ORDER_COMPLETED,
    ORDER_KINDS,
    ORDER_SEND_CONDITION_NOT_MET,
    RECIPIENT_TYPE,
    SMS,
    Event,
    NotificationChange,
    NotificationFacts,
    notification_event,
    recipient_lifecycle,
)

__all__ = [
    "DELIVERED",
    "EVENT_KINDS",
    "NOTIFICATION_STATUS_CHANGED",
    "ORDER_CANCELLED",
    "ORDER_COMPLETED",
    "ORDER_KINDS",
    "ORDER_SEND_CONDITION_NOT_MET",
    "PENDING",
    "Event",
    "changed_columns",
    "event_arrays",
    "events_cte",
    "fan_out",
    "fan_out_direct",
    "insert_events",
    "notification_changes_cte",
    "subscribers",
    "watched",
    "write_notification_changes",
    "write_notification_changes_direct",
]

# The channel a PostgreSQL NOTIFY wakes other processes' delivery workers on (varsel.dispatch.wakeup listens).
CHANNEL_WEBHOOKS = "varsel_webhooks"

PENDING = "pending"
DELIVERED = "delivered"

# The subscribers of each (creator, kind) wanted: subscription ids, in id order.
Subscribers = dict[tuple[str, str], list[UUID]]


async def fan_out(conn: AsyncConnection, events: Sequence[Event]) -> int:
    """Write each event once per subscription of its creator that takes its kind, in the caller's transaction, in
    the order given; answers how many rows were written (0, with one query, when nobody subscribes)."""
    if not events:
        return 0
    return await insert_events(conn, events, await subscribers(conn, {(e.creator, e.kind) for e in events}))


async def subscribers(conn: AsyncConnection, wanted: Collection[tuple[str, str]]) -> Subscribers:
    """The subscriptions taking each of these (creator, kind): one index range each, in one query; empty when
    nobody subscribes."""
    found: Subscribers = {}
    if not wanted:
        return found
    subscription = webhook_subscription_events
    read = (
        select(subscription.c.creator, subscription.c.kind, subscription.c.subscription_id)
        .where(tuple_(subscription.c.creator, subscription.c.kind).in_(list(wanted)))
        .order_by(subscription.c.subscription_id)
    )
    if conn.dialect.name == "postgresql":
        read = read.join(_key_shared(subscription.c.subscription_id), true())
    result = await conn.execute(read)
    for row in result:
        found.setdefault((row.creator, row.kind), []).append(row.subscription_id)
    return found


def _key_shared(subscription_id: Any) -> Any:
    """SQL (PostgreSQL): a LATERAL read of the subscription `subscription_id` (a column) names, locked FOR KEY SHARE,
    to join to a read of its subscribers: a subscriber found is one whose events can be inserted. Without the lock,
    a DELETE of the subscription committed between the read and the insert of its events made the insert violate
    fk_webhook_events_subscription, and roll back the whole status change; with it, the delete waits for the
    writer's commit (and a subscription deleted before is not found). KEY SHARE conflicts only with a DELETE (or a
    change of the key): the delivery worker's and the owner's updates (FOR NO KEY UPDATE) pass, and a DELETE holds
    no lock a writer waits for. LATERAL, as a locking clause is not allowed in a UNION's parts."""
    s = webhook_subscriptions
    return select(s.c.id).where(s.c.id == subscription_id).with_for_update(read=True, key_share=True).lateral("locked")


def watched(creator: Any, kind: str) -> Any:
    """SQL: whether the service owner `creator` (a column) has a subscription taking `kind` (one index probe), for a
    query the writer makes anyway to answer, so that nobody's subscribing costs no query of its own."""
    subscription = webhook_subscription_events
    return exists().where(and_(subscription.c.creator == creator, subscription.c.kind == kind))


def _rows(events: Iterable[Event], found: Subscribers) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id(),
            "subscription_id": subscription_id,
            "creator": event.creator,
            "kind": event.kind,
            "occurred": event.occurred,
            "payload": event.payload,
            "state": PENDING,
            "attempts": 0,
            "next_attempt": event.occurred,
        }
        for event in events
        for subscription_id in found.get((event.creator, event.kind), ())
    ]


async def insert_events(conn: AsyncConnection, events: Sequence[Event], found: Subscribers) -> int:
    """Write the events for the subscribers `subscribers` found, in the order given; answers the rows written."""
    rows = _rows(events, found)
    if rows:
        await conn.execute(insert(webhook_events), rows)
    return len(rows)


# ---------------------------------------------------------------- notification changes (SQLAlchemy transactions)


async def write_notification_changes(conn: AsyncConnection, changes: Sequence[NotificationChange]) -> int:
    """Write the notification.status_changed events of these changes, in the order given, in the caller's
    transaction, after the changes themselves (the notifications' row locks then order each one's events). Answers
    the rows written. A change from a status to itself (a sender taking over a lease that ran out) tells nothing.

    Changes with their facts at hand cost one look-up of their creators' subscriptions; the others one query that
    reads their facts joined with the subscriptions (only the notifications someone subscribes to come back).
    Nothing more is done when nobody subscribes: no payload is built."""
    told = [change for change in changes if change.previous != change.status]
    if not told:
        return 0
    known = {(_facts(change).creator, NOTIFICATION_STATUS_CHANGED) for change in told if change.facts is not None}
    found = await subscribers(conn, known)
    facts: dict[UUID, NotificationFacts] = {}
    unknown = [change for change in told if change.facts is None]
    if unknown:
        read, subscribed = await _facts_of_subscribed(conn, unknown)
        facts.update(read)
        for key, ids in subscribed.items():
            found[key] = sorted({*found.get(key, ()), *ids})
    if not found:
        return 0
    events = []
    for change in told:
        of = change.facts or facts.get(change.notification_id)
        if of is not None and (of.creator, NOTIFICATION_STATUS_CHANGED) in found:
            events.append(notification_event(change, of))
    return await insert_events(conn, events, found)


def _among(conn: AsyncConnection, column: Any, ids: Sequence[UUID]) -> Any:
    """`column` is one of `ids`, as one bound value whatever their number (an expiry sweep may end thousands at
    once): an array on PostgreSQL, a JSON array of the stored hex form on SQLite."""
    if conn.dialect.name == "postgresql":
        wanted = (
            func.unnest(bindparam(None, list(ids), type_=ARRAY(Uuid)))
            .table_valued(Column("id", Uuid))
            .render_derived(name="wanted")
        )
        return column.in_(select(wanted.c.id))
    return column.in_(select(func.json_each(json.dumps([i.hex for i in ids])).table_valued("value").c.value))


async def _facts_of_subscribed(
    conn: AsyncConnection, changes: Sequence[NotificationChange]
) -> tuple[dict[UUID, NotificationFacts], Subscribers]:
    """The facts of the changed notifications whose creator subscribes to notification.status_changed, and those
    subscriptions: one statement (each channel's notifications joined with the subscriptions and their orders)."""
    subscription = webhook_subscription_events
    parts = []
    for channel, table in NOTIFICATION_TABLES.items():
        ids = sorted({change.notification_id for change in changes if change.channel == channel})
        if not ids:
            continue
        address = table.c.email_address if channel == "email" else table.c.mobile_number
        parts.append(
            select(
                subscription.c.subscription_id,
                table.c.id,
                table.c.order_id,
                table.c.creator,
                address.label("destination"),
                table.c.national_identity_number,
                table.c.organization_number,
                table.c.fallback_of,
                table.c.fallback_reason,
                orders.c.senders_reference,
            )
            .select_from(
                table.join(
                    subscription,
                    and_(subscription.c.creator == table.c.creator, subscription.c.kind == NOTIFICATION_STATUS_CHANGED),
                ).join(orders, orders.c.id == table.c.order_id)
            )
            .where(_among(conn, table.c.id, ids))
        )
        if conn.dialect.name == "postgresql":
            parts[-1] = parts[-1].join(_key_shared(subscription.c.subscription_id), true())
    statement = parts[0] if len(parts) == 1 else union_all(*parts)
    facts: dict[UUID, NotificationFacts] = {}
    found: Subscribers = {}
    for row in await conn.execute(statement):
        facts[row.id] = NotificationFacts(
            order_id=row.order_id,
            creator=row.creator,
            senders_reference=row.senders_reference,
            destination=row.destination,
            national_identity_number=row.national_identity_number,
            organization_number=row.organization_number,
            fallback_of=row.fallback_of,
            fallback_reason=row.fallback_reason,
        )
        subscribed = found.setdefault((row.creator, NOTIFICATION_STATUS_CHANGED), [])
        if row.subscription_id not in subscribed:
            subscribed.append(row.subscription_id)
    for ids in found.values():
        ids.sort()
    return facts, found


# ---------------------------------------------------------------- PostgreSQL one-statement writes


def events_cte(name: str, changed: Any) -> CTE:
    """A WITH clause for a one-statement write (varsel.db.one_statement): the events bound as arrays named `name`
    (see `event_arrays`), each written once per subscriber of its creator and kind, in the order given, but only
    those whose key is among `changed` (a select of the ids the statement did change: the rows it stored, the
    outcomes it recorded). Ids are the database's own (UUIDv7, made by the statement)."""
    event = (
        func.unnest(
            bindparam(f"{name}_key", type_=ARRAY(Uuid)),
            bindparam(f"{name}_creator", type_=ARRAY(String)),
            bindparam(f"{name}_kind", type_=ARRAY(String)),
            bindparam(f"{name}_occurred", type_=ARRAY(webhook_events.c.occurred.type)),
            bindparam(f"{name}_payload", type_=ARRAY(Text)),
        )
        .table_valued(
            Column("key", Uuid),
            Column("creator", String),
            Column("kind", String),
            Column("occurred", webhook_events.c.occurred.type),
            Column("payload", Text),
            with_ordinality="position",
        )
        .render_derived(name=f"{name}_given")
    )
    subscription = webhook_subscription_events
    rows = (
        select(
            *_outbox_row(
                subscription.c.subscription_id,
                event.c.creator,
                event.c.kind,
                event.c.occurred,
                cast(event.c.payload, JSON),
            )
        )
        .select_from(
            event.join(
                subscription, and_(subscription.c.creator == event.c.creator, subscription.c.kind == event.c.kind)
            ).join(_key_shared(subscription.c.subscription_id), true())
        )
        .where(event.c.key.in_(changed))
        .order_by(event.c.position, subscription.c.subscription_id)
    )
    return _outbox_insert(name, rows)


# The outbox's columns as its WITH clauses insert them (see _outbox_row).
_OUTBOX_COLUMNS = (
    "id",
    "subscription_id",
    "creator",
    "kind",
    "occurred",
    "payload",
    "state",
    "attempts",
    "next_attempt",
)


# A UUID version 7 made by PostgreSQL (15 has no uuidv7()): the milliseconds of the moment it is made, then the
# random bits of a gen_random_uuid(), its version nibble turned from 4 into 7 (bits 52 and 53 set; its variant bits
# kept). Time-ordered as varsel.ids.new_id's are, so events written by one statement land at the end of the key's
# index as the others do, not scattered through it.
_UUID7 = literal_column(
    "encode(set_bit(set_bit(substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)"
    " || substring(uuid_send(gen_random_uuid()) FROM 7), 52, 1), 53, 1), 'hex')::uuid",
    Uuid,
)


def _outbox_row(subscription_id: Any, creator: Any, kind: Any, occurred: Any, payload: Any) -> list[Any]:
    """SQL: the values of one outbox row for a WITH clause's INSERT (_OUTBOX_COLUMNS): a new id of the database's
    own (a UUIDv7, as every other id), pending, never tried, due when the change happened."""
    return [
        _UUID7,
        subscription_id,
        creator,
        kind,
        occurred,
        payload,
        literal(PENDING),
        literal(0),
        occurred,
    ]


def _outbox_insert(name: str, rows: Select[Any]) -> CTE:
    return insert(webhook_events).from_select(_OUTBOX_COLUMNS, rows).returning(webhook_events.c.seq).cte(name)


def notification_changes_cte(name: str, channel: str, changed: CTE, previous: str, occurred: Any) -> CTE:
    """A WITH clause for a one-statement write of notification changes (varsel.db.one_statement): the
    notification.status_changed event of each notification `changed` (an UPDATE's RETURNING: the notifications of
    `channel` it changed from `previous`, with their new columns) for every subscriber of its creator, its payload
    built by the database, as `notification_event` builds it in Python, and only for the rows that find a
    subscriber. `occurred` (SQL) is when each change happened.

    Unlike `events_cte`, nothing is bound per event: the senders' outcome writes of SMS awaiting their reports, the
    hottest write there is, paid for building and binding a payload per message whoever subscribed (a third of the
    SMS dispatch's CPU, measured on #18). Keeping it exact (an event written exactly when its change is, for a
    subscription made even during the send) means deciding in the statement, so the payload is built there too."""
    address = changed.c.email_address if channel == EMAIL else changed.c.mobile_number
    subscription = webhook_subscription_events
    at = cast(occurred, DateTime(timezone=True))
    data = func.json_strip_nulls(
        func.json_build_object(
            _text("shipmentId"), cast(changed.c.order_id, Text),
            _text("sendersReference"), func.nullif(orders.c.senders_reference, ""),
            _text("notificationId"), cast(changed.c.id, Text),
            _text("channel"), _text(CHANNEL_NAME[channel]),
            _text("type"), _text(RECIPIENT_TYPE[channel]),
            _text("destination"), func.coalesce(address, ""),
            _text("status"), _lifecycle(channel, changed.c.status),
            _text("previousStatus"), _text(recipient_lifecycle(channel, previous)),
            _text("lastUpdate"), _utc_iso(at),
            _text("nationalIdentityNumber"), func.nullif(changed.c.national_identity_number, ""),
            _text("organizationNumber"), func.nullif(changed.c.organization_number, ""),
            _text("fallbackFor"), _fallback_for(channel, changed.c.fallback_of, changed.c.fallback_reason),
        )
    )  # fmt: skip
    payload = func.json_build_object(
        _text("type"), _text(NOTIFICATION_STATUS_CHANGED), _text("timestamp"), _utc_iso(at), _text("data"), data
    )
    rows = (
        select(
            *_outbox_row(
                subscription.c.subscription_id, changed.c.creator, literal(NOTIFICATION_STATUS_CHANGED), at, payload
            )
        )
        .select_from(
            changed.join(
                subscription,
                and_(subscription.c.creator == changed.c.creator, subscription.c.kind == NOTIFICATION_STATUS_CHANGED),
            )
            .join(_key_shared(subscription.c.subscription_id), true())
            .join(orders, orders.c.id == changed.c.order_id)
        )
        # One event per notification here: the order between notifications is not kept anyway (see docs/webhooks).
        .order_by(changed.c.id, subscription.c.subscription_id)
    )
    return _outbox_insert(name, rows)


def changed_columns(channel: str) -> list[Any]:
    """The columns of `channel`'s notifications an UPDATE's RETURNING gives notification_changes_cte."""
    table = NOTIFICATION_TABLES[channel]
    address = table.c.email_address if channel == EMAIL else table.c.mobile_number
    return [
        table.c.id,
        table.c.order_id,
        table.c.creator,
        table.c.status,
        address,
        table.c.national_identity_number,
        table.c.organization_number,
        table.c.fallback_of,
        table.c.fallback_reason,
    ]


def _text(value: str) -> Any:
    """A constant text for json_build_object, whose arguments PostgreSQL cannot type when bound as parameters."""
    return literal_column("'" + value.replace("'", "''") + "'", Text)


def _utc_iso(moment: Any) -> Any:
    """SQL: a timestamptz as `utc_iso` writes it (Python's isoformat in UTC: microseconds only when there are any,
    then Z)."""
    utc = func.timezone("UTC", moment)
    fraction = func.to_char(utc, "US")
    return (
        func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS')
        + case((fraction == "000000", ""), else_=literal_column("'.'", Text) + fraction)
        + literal_column("'Z'", Text)
    )


def _lifecycle(channel: str, status: Any) -> Any:
    """SQL: `recipient_lifecycle(channel, status)` of a status column."""
    prefix = LIFECYCLE_PREFIX[channel]
    renamed = [
        (status == stored[len(prefix) :], _text(name))
        for stored, name in LIFECYCLE_RENAMED.items()
        if stored.startswith(prefix)
    ]
    plain = _text(prefix) + status
    return case(*renamed, else_=plain) if renamed else plain


def _fallback_for(channel: str, first_id: Any, reason: Any) -> Any:
    """SQL: `fallback_for` of a notification's fallback_of and fallback_reason, NULL when it follows none."""
    first = SMS if channel == EMAIL else EMAIL
    why = func.coalesce(reason, "")
    return case(
        (
            first_id.is_not(None),
            func.json_build_object(
                _text("notificationId"), cast(first_id, Text),
                _text("type"), _text(RECIPIENT_TYPE[first]),
                _text("reason"), case((why.startswith("Failed"), _lifecycle(first, why)), else_=why),
            ),
        ),
    )  # fmt: skip


def notifying(statement: Select[Any], base: FromClause, events: CTE) -> Select[Any]:
    """`statement` (a select from `base`) with the events WITH clause, and a NOTIFY on CHANNEL_WEBHOOKS sent by the
    statement itself when it wrote at least one event: other processes' delivery workers are woken at the commit,
    and only then. (The engine's listener, varsel.webhooks.wakeup, cannot tell whether such a statement wrote an
    event, and sending the NOTIFY from there cost a round trip on every instant order.) The notice is joined to
    `base` so that PostgreSQL evaluates it (a WITH clause that is only a SELECT runs when it is read); it has one
    row or none, so the statement's rows are the same."""
    notice = (
        select(func.pg_notify(CHANNEL_WEBHOOKS, "").label("notified"))
        .select_from(select(events.c.seq).limit(1).subquery())
        .cte(f"{events.name}_notice")
    )
    return statement.select_from(base.outerjoin(notice, true())).add_cte(events)


def event_arrays(name: str, events: Sequence[tuple[UUID, Event]]) -> dict[str, list[Any]]:
    """The arrays `events_cte(name, …)` reads: each event with its key (the id of the row whose change it tells
    of, as `changed` names it)."""
    return {
        f"{name}_key": [key for key, _ in events],
        f"{name}_creator": [event.creator for _, event in events],
        f"{name}_kind": [event.kind for _, event in events],
        f"{name}_occurred": [event.occurred for _, event in events],
        f"{name}_payload": [json.dumps(event.payload) for _, event in events],
    }


# ---------------------------------------------------------------- SQLite direct writes


def fan_out_direct(
    write: DirectWrite, wanted: Collection[tuple[str, str]], build: Callable[[Subscribers], Sequence[Event]]
) -> int:
    """fan_out in the direct writer's transaction (varsel.db.sqlite_direct): the subscribers of the (creator, kind)
    pairs `wanted`, in one query; then, only if there are any, `build(subscribers)` makes the events (so nobody's
    payload is built when nobody subscribes) and they are written. Answers the rows written."""
    if not wanted:
        return 0
    pairs = sorted(wanted)
    table = quoted(webhook_subscription_events.name)
    sql = (
        f"SELECT creator, kind, subscription_id FROM {table} WHERE (creator, kind) IN "
        f"(VALUES {', '.join('(?, ?)' for _ in pairs)}) ORDER BY subscription_id"
    )
    found: Subscribers = {}
    for creator, kind, subscription_id in write.fetch(sql, tuple(value for pair in pairs for value in pair)):
        found.setdefault((creator, kind), []).append(_stored_uuid(subscription_id))
    if not found:
        return 0
    rows = _rows(build(found), found)
    write.insert(webhook_events, rows)
    return len(rows)


def write_notification_changes_direct(write: DirectWrite, changes: Sequence[NotificationChange]) -> int:
    """write_notification_changes in the direct writer's transaction, for changes that carry their facts (a change
    without them, or from a status to itself, tells nothing and is left out)."""
    told = [change for change in changes if change.facts is not None and change.previous != change.status]
    return fan_out_direct(
        write,
        {(_facts(change).creator, NOTIFICATION_STATUS_CHANGED) for change in told},
        lambda found: [
            notification_event(change, _facts(change))
            for change in told
            if (_facts(change).creator, NOTIFICATION_STATUS_CHANGED) in found
        ],
    )


def _facts(change: NotificationChange) -> NotificationFacts:
    assert change.facts is not None
    return change.facts


def _stored_uuid(value: Any) -> UUID:
    """A Uuid column's value as the SQLite driver gives it (32 hex digits, as SQLAlchemy stores it there)."""
    return value if isinstance(value, UUID) else UUID(str(value))
