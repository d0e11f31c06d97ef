"""The console's read-side SQL on SQLite and PostgreSQL: search filters, keyset paging, tenancy, and the indexes the
hot queries are served from (migration 0008)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, insert

from tests.conftest import NOW
from varsel.console import repository
from varsel.console.repository import Cursor, OrderSearch, TimeField
from varsel.db.engine import Database
from varsel.db.tables import (
    NOTIFICATION_TABLES,
    delivery_reports,
    notification_attempts,
    order_chains,
    order_recipients,
    orders,
)
from varsel.notifications.statuses import OrderStatus
from varsel.orders.vocabulary import NotificationChannel, OrderType

# ---------------------------------------------------------------- rows as varsel writes them (the service tests' too)


def order_row(creator: str = "ttd", **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "creator": creator,
        "senders_reference": None,
        "notification_channel": NotificationChannel.EMAIL.value,
        "requested_send_time": NOW,
        "created": NOW,
        "status": OrderStatus.COMPLETED.value,
        "status_changed": NOW,
        "process_after": NOW,
        "email_from_address": "noreply@example.com",
        "email_subject": "Subject",
        "email_body": "Body",
        "email_content_type": "Plain",
        "sms_sender": "Etat",
        "sms_body": "SMS body",
        "order_type": OrderType.NOTIFICATION.value,
    }
    row.update(overrides)
    return row


def notification_row(channel: str, order: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "order_id": order["id"],
        "creator": order["creator"],
        "status": "Delivered",
        "status_changed": order["created"],
        "created": order["created"],
        "expiry": order["created"] + timedelta(days=2),
        "send_after": order["created"],
        "attempts": 1,
        "provider": "outbox",
    }
    row["email_address" if channel == "email" else "mobile_number"] = (
        "ola@example.com" if channel == "email" else "+4799999999"
    )
    row.update(overrides)
    return row


def attempt_row(channel: str, notification: dict[str, Any], started: datetime, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "channel": channel,
        "notification_id": notification["id"],
        "attempt": 1,
        "started": started,
        "finished": started + timedelta(milliseconds=200),
        "provider": "outbox",
        "outcome": "accepted",
        "status": "Succeeded" if channel == "email" else "Accepted",
        "provider_reference": None,
        "detail": None,
    }
    row.update(overrides)
    return row


def report_row(channel: str, notification: dict[str, Any], received: datetime, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "channel": channel,
        "provider": "outbox",
        "reference": str(notification["id"]),
        "provider_reference": None,
        "notification_id": notification["id"],
        "status": "Delivered",
        "detail": None,
        "occurred": received,
        "received": received,
        "state": "applied",
    }
    row.update(overrides)
    return row


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the same keys: an executemany takes its columns from the first row and drops others' extras."""
    keys = {key for row in rows for key in row}
    return [{key: row.get(key) for key in keys} for row in rows]


async def store(
    database: Database,
    order_rows: list[dict[str, Any]],
    notifications: dict[str, list[dict[str, Any]]] | None = None,
    attempts: list[dict[str, Any]] | None = None,
    reports: list[dict[str, Any]] | None = None,
    chains: list[dict[str, Any]] | None = None,
    recipients: list[dict[str, Any]] | None = None,
) -> None:
    async with database.transaction() as conn:
        if chains:
            await conn.execute(insert(order_chains), _uniform(chains))
        if order_rows:
            await conn.execute(insert(orders), _uniform(order_rows))
        if recipients:
            await conn.execute(insert(order_recipients), _uniform(recipients))
        for channel, rows in (notifications or {}).items():
            if rows:
                await conn.execute(insert(NOTIFICATION_TABLES[channel]), _uniform(rows))
        if attempts:
            await conn.execute(insert(notification_attempts), _uniform(attempts))
        if reports:
            await conn.execute(insert(delivery_reports), _uniform(reports))


async def search(
    database: Database,
    creator: str | None,
    wanted: OrderSearch,
    after: Cursor | None = None,
    limit: int = 100,
) -> list[uuid.UUID]:
    async with database.read() as conn:
        return [row.id for row in await repository.search_orders(conn, creator, wanted, after, limit)]


def newest_first(rows: list[dict[str, Any]], field: str = "created") -> list[uuid.UUID]:
    return [row["id"] for row in sorted(rows, key=lambda r: (r[field], r["id"]), reverse=True)]


# ---------------------------------------------------------------- search


async def test_each_search_filter_finds_exactly_its_orders(database: Database) -> None:
    chain_id = uuid.uuid4()
    base = order_row()
    by_reference = order_row(senders_reference="ref-1", created=NOW - timedelta(minutes=1))
    same_reference_other_org = order_row("other", senders_reference="ref-1")
    cancelled = order_row(status=OrderStatus.CANCELLED.value, created=NOW - timedelta(minutes=2))
    reminder = order_row(
        order_type=OrderType.REMINDER.value, chain_id=chain_id, chain_position=1, created=NOW - timedelta(minutes=3)
    )
    main = order_row(chain_id=chain_id, chain_position=0, created=NOW - timedelta(minutes=3))
    sms = order_row(notification_channel=NotificationChannel.SMS.value, created=NOW - timedelta(minutes=4))
    later = order_row(requested_send_time=NOW + timedelta(days=3), created=NOW - timedelta(hours=5))
    rows = [base, by_reference, same_reference_other_org, cancelled, reminder, main, sms, later]
    await store(
        database,
        rows,
        chains=[
            {
                "id": chain_id,
                "creator": "ttd",
                "family": "orders",
                "idempotency_id": "k",
                "idempotency_hash": "0" * 64,
                "created": NOW,
            }
        ],
    )
    ttd = [r for r in rows if r["creator"] == "ttd"]

    assert await search(database, "ttd", OrderSearch()) == newest_first(ttd)
    assert await search(database, "ttd", OrderSearch(senders_reference="ref-1")) == [by_reference["id"]]
    assert await search(database, None, OrderSearch(senders_reference="ref-1")) == newest_first(
        [by_reference, same_reference_other_org]
    )
    assert await search(database, "ttd", OrderSearch(order_id=sms["id"])) == [sms["id"]]
    # A chain's id finds its orders; a shipment id is its order's id.
    assert await search(database, "ttd", OrderSearch(order_id=chain_id)) == newest_first([reminder, main])
    assert await search(database, "ttd", OrderSearch(status=OrderStatus.CANCELLED)) == [cancelled["id"]]
    assert await search(database, "ttd", OrderSearch(order_type=OrderType.REMINDER)) == [reminder["id"]]
    assert await search(database, "ttd", OrderSearch(channel=NotificationChannel.SMS)) == [sms["id"]]
    # The time range is [since, until) on the chosen time.
    in_last_two_minutes = OrderSearch(since=NOW - timedelta(minutes=2), until=NOW)
    assert await search(database, "ttd", in_last_two_minutes) == newest_first([by_reference, cancelled])
    by_send_time = OrderSearch(time_field=TimeField.REQUESTED_SEND_TIME, since=NOW + timedelta(days=1))
    assert await search(database, "ttd", by_send_time) == [later["id"]]
    # Filters combine.
    assert (
        await search(database, "ttd", OrderSearch(status=OrderStatus.CANCELLED, channel=NotificationChannel.SMS)) == []
    )


async def test_an_org_never_finds_another_orgs_orders_and_an_admin_finds_all(database: Database) -> None:
    mine = [order_row("ttd", senders_reference="shared", created=NOW - timedelta(seconds=i)) for i in range(3)]
    theirs = [order_row("nav", senders_reference="shared", created=NOW - timedelta(seconds=i)) for i in range(3)]
    await store(database, mine + theirs)

    for wanted in (OrderSearch(), OrderSearch(senders_reference="shared"), OrderSearch(order_id=theirs[0]["id"])):
        found = set(await search(database, "ttd", wanted))
        assert not found & {r["id"] for r in theirs}, wanted
    assert await search(database, "ttd", OrderSearch(order_id=theirs[0]["id"])) == []
    assert set(await search(database, None, OrderSearch())) == {r["id"] for r in mine + theirs}
    assert await search(database, "nav", OrderSearch()) == newest_first(theirs)


async def test_keyset_pages_cover_every_order_once_with_ties_on_time(database: Database) -> None:
    # Seven orders at one instant, three at others: pages of three break inside the tie.
    tied = [order_row(created=NOW - timedelta(minutes=1)) for _ in range(7)]
    others = [order_row(created=NOW - timedelta(minutes=m)) for m in (0, 2, 3)]
    other_org = [order_row("nav", created=NOW - timedelta(minutes=1)) for _ in range(2)]
    await store(database, tied + others + other_org)

    for time_field in TimeField:
        field = "created" if time_field is TimeField.CREATED else "requested_send_time"
        if field == "requested_send_time":
            # Shuffle send times against creation so that this run pages by a different column.
            async with database.transaction() as conn:
                for i, row in enumerate(tied + others):
                    row["requested_send_time"] = NOW + timedelta(hours=i % 2)
                    await conn.execute(
                        orders.update()
                        .where(orders.c.id == row["id"])
                        .values(requested_send_time=row["requested_send_time"])
                    )
        seen: list[uuid.UUID] = []
        after: Cursor | None = None
        pages = 0
        while True:
            async with database.read() as conn:
                page = await repository.search_orders(conn, "ttd", OrderSearch(time_field=time_field), after, 3)
            pages += 1
            seen += [row.id for row in page]
            if len(page) < 3:
                break
            last = page[-1]
            after = Cursor(getattr(last, field), last.id)
        assert seen == newest_first(tied + others, field), time_field
        assert pages == 4


# ---------------------------------------------------------------- the overview's counts


async def test_period_counts_count_only_the_period_and_the_viewers_rows(database: Database) -> None:
    since, until = NOW - timedelta(hours=1), NOW
    inside = order_row(created=NOW - timedelta(minutes=30))
    at_start = order_row(created=since, notification_channel="Sms", status=OrderStatus.PROCESSED.value)
    before = order_row(created=since - timedelta(microseconds=1))
    at_end = order_row(created=until)
    other = order_row("nav", created=NOW - timedelta(minutes=30))
    rows = [inside, at_start, before, at_end, other]
    email = [notification_row("email", o) for o in rows]
    email.append(notification_row("email", inside, status="Failed_Bounced"))
    sms = [notification_row("sms", at_start, status="Accepted")]
    await store(database, rows, {"email": email, "sms": sms})

    async with database.read() as conn:
        assert sorted(await repository.order_counts(conn, "ttd", since, until)) == [
            ("Email", "Completed", 1),
            ("Sms", "Processed", 1),
        ]
        assert len(await repository.order_counts(conn, None, since, until)) == 2
        assert sum(c for _, _, c in await repository.order_counts(conn, None, since, until)) == 3
        assert await repository.notification_counts(conn, "email", "ttd", since, until) == {
            "Delivered": 2,
            "Failed_Bounced": 1,
        }
        assert await repository.notification_counts(conn, "email", None, since, until) == {
            "Delivered": 3,
            "Failed_Bounced": 1,
        }
        assert await repository.notification_counts(conn, "sms", "nav", since, until) == {}


# ---------------------------------------------------------------- the indexes the hot queries use (SQLite's plans)


@contextmanager
def statements_sent(database: Database) -> Iterator[list[tuple[str, Any]]]:
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def test_search_and_period_counts_read_indexes_not_tables(database: Database) -> None:
    """On SQLite, EXPLAIN QUERY PLAN names how each table is read: every search and count of the console reads an
    index range (SEARCH … USING INDEX), never the whole table (SCAN), and sorts nothing it could read in order.
    (PostgreSQL's planner chooses by statistics, which an almost empty test database does not have.)"""
    if database.dialect != "sqlite":
        return
    await store(database, [order_row(), order_row("nav")])
    since = NOW - timedelta(days=30)
    cursor = Cursor(NOW, uuid.uuid4())
    with statements_sent(database) as sent:
        async with database.read() as conn:
            for creator in ("ttd", None):
                for field in TimeField:
                    await repository.search_orders(conn, creator, OrderSearch(time_field=field), cursor, 26)
                    await repository.search_orders(
                        conn, creator, OrderSearch(time_field=field, status=OrderStatus.CANCELLED), None, 26
                    )
                await repository.search_orders(conn, creator, OrderSearch(senders_reference="r"), None, 26)
                await repository.order_counts(conn, creator, since, NOW)
                for channel in NOTIFICATION_TABLES:
                    await repository.notification_counts(conn, channel, creator, since, NOW)
                    await repository.notifications_of_orders(conn, channel, [uuid.uuid4()], 100)
                    await repository.notification_queue(conn, channel, creator, NOW, 10)
                await repository.order_queue(conn, creator, NOW, 10)
                await repository.sample_orders(conn, creator, [(since, NOW), (NOW, NOW + timedelta(hours=1))], 50)
            await repository.provider_calls(conn, since, NOW)
    assert len(sent) > 30
    async with database.read() as conn:
        for statement, parameters in sent:
            plan = [str(row[-1]) for row in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
            paged = "ORDER BY" in statement and "LIMIT" in statement
            for detail in plan:
                if not detail.startswith("SCAN") or "anon" in detail or "CONSTANT ROW" in detail:
                    continue
                # A walk of an index in its order that stops at the page's end is what a search without a time range
                # is; anything else that reads a whole table or index is not bounded.
                if not (paged and "USING" in detail and "INDEX" in detail):
                    raise AssertionError(f"a table is scanned: {detail}\n{statement}")
            # Search results come out of the index in order: no sort of the period's rows (only the few orders of one
            # sender's reference are sorted).
            if paged and "senders_reference =" not in statement:
                assert not any("TEMP B-TREE FOR ORDER BY" in d for d in plan), (plan, statement)
