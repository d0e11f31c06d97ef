"""The workers' hot queries use their partial indexes on SQLite: a claim or a next-due look-up that scans the whole
table gets slower with every order ever made (3 ms per 100,000 orders, on every poll of every loop)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert

from tests.conftest import NOW
from tests.dispatch.test_order_completion import _notification, _order
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, orders, sms_notifications
from varsel.dispatch import repository
from varsel.notifications.statuses import OrderStatus


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only: PostgreSQL's planner proves the partial index's condition from the query by itself."""
    import shutil

    target = tmp_path / "varsel.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


async def test_claims_and_next_due_look_ups_use_the_partial_indexes(database: Database) -> None:
    # Two service owners with due work, one with more than its share of a batch of 4: every statement of a claim
    # runs (the owners, each one's share, the rest of the batch).
    order_rows = [_order(OrderStatus.REGISTERED.value, creator=creator) for creator in ["big"] * 5 + ["small"]]
    async with database.transaction() as conn:
        await conn.execute(insert(orders), order_rows)
        for table in (email_notifications, sms_notifications):
            await conn.execute(insert(table), [_due(o["id"], o["creator"]) for o in order_rows])

    with statements_sent(database, ("SELECT", "WITH")) as sent:
        async with database.transaction() as conn:
            claimed = [len(await repository.claim_due_orders(conn, "w", NOW, NOW + timedelta(minutes=2), 4))]
            await repository.next_due_order(conn)
            for table in (email_notifications, sms_notifications):
                claimed.append(
                    len(await repository.claim_notifications(conn, table, "w", NOW, NOW + timedelta(minutes=2), 4))
                )
                await repository.next_sendable(conn, table, NOW)
    assert claimed == [4, 4, 4]
    assert len(sent) >= 14, sent

    async with database.read() as conn:
        for statement, parameters in sent:
            plan = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
            details = [str(row[-1]) for row in plan]
            # SQLite says SCAN for a full table scan, SEARCH … USING INDEX for an index. (The owners CTE and the
            # JSON array of owners are scanned, as they should be.)
            assert not any(
                re.match(r"SCAN (orders|email_notifications|sms_notifications|item)\b", d) for d in details
            ), (
                statement,
                details,
            )
            assert any("USING INDEX" in d or "USING COVERING INDEX" in d for d in details), (statement, details)
            # Read in the index's order, not sorted afterwards: a sort would read every due row to take a few.
            assert not any("TEMP B-TREE" in d for d in details), (statement, details)
            if statement.lstrip().startswith("WITH RECURSIVE owners"):
                # The owners are found in the owner index, one seek each (not in the status index, per owner).
                assert all("_creator_" in d for d in details if d.startswith("SEARCH")), (statement, details)


def _due(order_id: uuid.UUID, creator: str) -> dict[str, Any]:
    return {**_notification(order_id, "New", None), "creator": creator, "attempts": 0}


@contextmanager
def statements_sent(database: Database, prefix: str | tuple[str, ...]) -> Iterator[list[tuple[str, Any]]]:
    """The statements (and their parameters) starting with `prefix` (or one of them) that the block sends, to
    EXPLAIN afterwards."""
    sent: list[tuple[str, Any]] = []
    prefixes = tuple(p.upper() for p in ((prefix,) if isinstance(prefix, str) else prefix))

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(prefixes):
            sent.append((statement, parameters))

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
