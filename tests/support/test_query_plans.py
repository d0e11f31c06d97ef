"""The support look-up, the monthly usage (counting its days into the rollup, then summing them) and the daily export
read through migration 0007's and 0010's indexes: on a database
with a million notifications, a look-up that scanned a notification table, or a month that scanned all orders, would
take seconds. SQLite's plan is checked as sent; PostgreSQL's after ANALYZE on enough rows that its planner would
rather scan than seek if the indexes were missing."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from tests.conftest import NOW
from tests.db.test_query_plans import statements_sent
from tests.support.helpers import NIN, email, order, seed, sms
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.support.service import RecipientIdentifier, RecipientQuery, SupportService, UsageMonth, UsageService

TABLES = r"(orders|email_notifications|sms_notifications|usage_days|usage_days_counted)"


async def _populate(database: Database) -> None:
    """Some thousands of orders over four years (a month is a small part of them, as in a real database), to others
    than the one looked up; a few to that one."""
    rows = [order(f"org{i % 7}", NOW - timedelta(hours=12 * i)) for i in range(3_000)]
    emails = [email(o, national_identity_number=f"{i:011d}") for i, o in enumerate(rows)]
    texts = [sms(o, organization_number=f"{i:09d}") for i, o in enumerate(rows)]
    mine = [order("ttd", NOW - timedelta(days=d)) for d in range(1, 4)]
    await seed(database, [*rows, *mine], [*emails, *[email(o, national_identity_number=NIN) for o in mine]], texts)
    async with database.transaction() as conn:
        await conn.execute(text("ANALYZE"))


async def _statements(database: Database) -> list[tuple[str, Any]]:
    clock = FrozenClock(NOW)
    with statements_sent(database, ("SELECT", "WITH", "(SELECT")) as sent:
        await SupportService(database).recipient_lookup(
            RecipientQuery(RecipientIdentifier.NATIONAL_IDENTITY_NUMBER, NIN, NOW - timedelta(days=7), NOW)
        )
        await SupportService(database).recipient_lookup(
            RecipientQuery(RecipientIdentifier.ORGANIZATION_NUMBER, "000000004", NOW - timedelta(days=7), NOW)
        )
        usage = UsageService(database, clock)
        await usage.monthly(UsageMonth(2026, 1))
        await usage.final_sms(usage.yesterday())
        await usage.final_emails(usage.yesterday())
    return sent


# The indexes each statement must read through (patterns), in the order the services send them. Orders of a month
# may be read through either index holding requested_send_time (the console's by owner also serves a GROUP BY owner).
ORDERS_BY_TIME = r"ix_orders(_creator)?_requested_send_time"
NIN_INDEXES = (
    "ix_email_notifications_national_identity_number_order_id",
    "ix_sms_notifications_national_identity_number_order_id",
)
ORG_INDEXES = (
    "ix_email_notifications_organization_number_order_id",
    "ix_sms_notifications_organization_number_order_id",
)
# The rollup's tables by their primary keys (SQLite names a composite or non-integer key's index itself).
COUNTED_KEY = r"(pk_usage_days_counted|sqlite_autoindex_usage_days_counted_1)"
USAGE_KEY = r"(pk_usage_days|sqlite_autoindex_usage_days_1)"
# A month first asked for: which of its days are counted; each of its 31 days then counted (whether an order of the
# day is still under way, then the day's orders, emails and SMS); then the month's sums and its days' counts.
COUNT_A_DAY = [
    ("ix_orders_unfinished_requested_send_time",),
    (ORDERS_BY_TIME,),
    (ORDERS_BY_TIME, "ix_email_notifications_order_id"),
    (ORDERS_BY_TIME, "ix_sms_notifications_order_id"),
]
EXPECTED = [
    NIN_INDEXES,
    NIN_INDEXES,
    ORG_INDEXES,
    ORG_INDEXES,
    (COUNTED_KEY,),
    *COUNT_A_DAY * 31,
    (USAGE_KEY,),
    (COUNTED_KEY,),
    ("ix_sms_notifications_status_changed",),
    ("ix_email_notifications_status_changed",),
]


async def test_every_statement_reads_through_its_index(database: Database) -> None:
    await _populate(database)
    sent = await _statements(database)
    assert len(sent) == len(EXPECTED), [s for s, _ in sent]
    async with database.read() as conn:
        if database.dialect == "postgresql":
            # A test database is small enough that scanning is cheap, so the planner would scan whatever indexes
            # exist. Forbidden to scan, it still must when no index serves the statement: so what is proved is that
            # the indexes named below serve it (at a million notifications the planner takes them by itself).
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
        for (statement, parameters), indexes in zip(sent, EXPECTED, strict=True):
            if database.dialect == "sqlite":
                plan = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
                details = [str(row[-1]) for row in plan]
                # SCAN is a whole table read; SEARCH … USING INDEX a seek or a range.
                assert not any(re.match(rf"SCAN {TABLES}\b", d) for d in details), (statement, details)
            else:
                plan = (await conn.exec_driver_sql("EXPLAIN " + statement, parameters)).all()
                details = [str(row[0]) for row in plan]
                assert not any(re.search(rf"Seq Scan on {TABLES}\b", d) for d in details), (statement, details)
            for index in indexes:
                assert any(re.search(rf"\b{index}\b", d) for d in details), (statement, index, details)
