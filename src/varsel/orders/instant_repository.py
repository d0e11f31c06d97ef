"""SQL of instant orders: a batch stored in one statement on PostgreSQL (see varsel.db.one_statement), in a few
calls straight on the driver's connection on SQLite (varsel.db.sqlite_direct).

The keys are inserted as insert_chains inserts them (a key another holds, committed or being inserted by a
concurrent statement, which is waited for, is left out), and only the orders of the keys inserted, their recipients
and their notifications, go in with them: the statement's data-modifying WITH clauses all take effect or none does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql

from varsel.db.engine import StatementConnection
from varsel.db.one_statement import execute, parameters, shape, source
from varsel.db.sqlite_direct import DirectWrite, columns_of, quoted
from varsel.db.tables import NOTIFICATION_TABLES, order_chains, order_recipients, orders
from varsel.webhooks import outbox
from varsel.webhooks.events import Event, NotificationChange

_TABLES = {table.name: table for table in (order_recipients, *NOTIFICATION_TABLES.values())}


@functools.lru_cache(maxsize=64)
def _store_statement(
    chain_keys: tuple[str, ...], order_keys: tuple[str, ...], children: tuple[tuple[str, tuple[str, ...]], ...]
) -> Any:
    chains = source(order_chains, chain_keys, "new_chains")
    stored_chains = (
        postgresql.insert(order_chains)
        .from_select(chain_keys, select(*[chains.c[key] for key in chain_keys]))
        .on_conflict_do_nothing(index_elements=["creator", "family", "idempotency_hash"])
        .returning(order_chains.c.id)
        .cte("stored_chains")
    )
    new_orders = source(orders, order_keys, "new_orders")
    stored_orders = (
        insert(orders)
        .from_select(
            order_keys,
            select(*[new_orders.c[key] for key in order_keys]).where(
                new_orders.c.chain_id.in_(select(stored_chains.c.id))
            ),
        )
        .returning(orders.c.id)
        .cte("stored_orders")
    )
    writes = []
    for name, keys in children:
        table = _TABLES[name]
        rows = source(table, keys, f"new_{name}")
        writes.append(
            insert(table)
            .from_select(
                keys, select(*[rows.c[key] for key in keys]).where(rows.c.order_id.in_(select(stored_orders.c.id)))
            )
            .cte(f"stored_{name}")
        )
    # The webhook events of the orders stored (their notifications' first status), in the same statement.
    stored_events = outbox.events_cte("events", select(stored_orders.c.id))
    return outbox.notifying(select(stored_chains.c.id), stored_chains, stored_events).add_cte(stored_orders, *writes)


async def store_instant_orders(
    conn: StatementConnection,
    chains: Sequence[Mapping[str, Any]],
    order_rows: Sequence[Mapping[str, Any]],
    recipients: Sequence[Mapping[str, Any]],
    notifications: Mapping[Table, Sequence[Mapping[str, Any]]],
    events: Sequence[tuple[UUID, Event]] = (),
) -> set[UUID]:
    """Store the instant orders whose keys are free, in one statement; answer the ids of the chains stored. Every
    order row names its chain (chain_id), every recipient and notification row its order (order_id), every webhook
    event the order whose change it tells of (written for the orders stored only)."""
    chain_keys, order_keys = shape(order_chains, chains), shape(orders, order_rows)
    values = {
        **parameters(chains, chain_keys, "new_chains"),
        **parameters(order_rows, order_keys, "new_orders"),
        **outbox.event_arrays("events", events),
    }
    children = []
    for table, rows in [(order_recipients, recipients), *notifications.items()]:
        if rows:
            keys = shape(table, rows)
            children.append((table.name, keys))
            values.update(parameters(rows, keys, f"new_{table.name}"))
    result = await execute(conn, _store_statement(chain_keys, order_keys, tuple(children)), values)
    return {row["id"] for row in result}


# ---------------------------------------------------------------- SQLite (see varsel.db.sqlite_direct)


def store_instant_orders_sqlite(
    write: DirectWrite,
    chains: Sequence[Mapping[str, Any]],
    order_rows: Sequence[Mapping[str, Any]],
    recipients: Sequence[Mapping[str, Any]],
    notifications: Mapping[Table, Sequence[Mapping[str, Any]]],
    changes: Sequence[NotificationChange] = (),
) -> set[UUID]:
    """store_instant_orders on SQLite, run in the direct writer's transaction (Database.sqlite_write): the keys in
    one statement (those whose key is free come back), then the orders, recipients and notifications of those, one
    executemany per table, then the webhook events of the stored notifications' `changes` (which carry their facts)
    that someone subscribes to."""
    keys = columns_of(order_chains, chains)
    row_marks = f"({', '.join('?' for _ in keys)})"
    sql = (
        f"INSERT INTO {quoted(order_chains.name)} ({', '.join(quoted(key) for key in keys)})"
        f" VALUES {', '.join(row_marks for _ in chains)}"
        " ON CONFLICT (creator, family, idempotency_hash) DO NOTHING RETURNING id"
    )
    values = tuple(value for row in chains for value in write.values(order_chains, keys, row))
    returned = {row[0] for row in write.fetch(sql, values)}
    stored = {row["id"] for row in chains if write.value(order_chains, "id", row["id"]) in returned}
    stored_orders = [row for row in order_rows if row["chain_id"] in stored]
    order_ids = {row["id"] for row in stored_orders}
    write.insert(orders, stored_orders)
    write.insert(order_recipients, [row for row in recipients if row["order_id"] in order_ids])
    for table, rows in notifications.items():
        write.insert(table, [row for row in rows if row["order_id"] in order_ids])
    changed = [change for change in changes if change.facts is not None and change.facts.order_id in order_ids]
    outbox.write_notification_changes_direct(write, changed)
    return stored
