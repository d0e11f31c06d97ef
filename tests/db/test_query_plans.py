"""The workers' hot queries use their partial indexes on SQLite: a claim or a next-due look-up that scans the whole
table gets slower with every order ever made (3 ms per 100,000 orders, on every poll of every loop)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import NOW
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, sms_notifications
from varsel.dispatch import repository


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only: PostgreSQL's planner proves the partial index's condition from the query by itself."""
    import shutil

    target = tmp_path / "varsel.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


async def test_claims_and_next_due_look_ups_use_the_partial_indexes(database: Database) -> None:
    with statements_sent(database, "SELECT") as sent:
        async with database.transaction() as conn:
            await repository.claim_due_orders(conn, "w", NOW, NOW + timedelta(minutes=2), 100)
            await repository.next_due_order(conn)
            for table in (email_notifications, sms_notifications):
                await repository.claim_notifications(conn, table, "w", NOW, NOW + timedelta(minutes=2), 100)
                await repository.next_sendable(conn, table, NOW)
    assert len(sent) >= 6, sent

    async with database.read() as conn:
        for statement, parameters in sent:
            plan = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
            details = [str(row[-1]) for row in plan]
            # SQLite says SCAN for a full table scan, SEARCH … USING INDEX for an index.
            assert not any(d.startswith("SCAN") for d in details), (statement, details)
            assert any("USING INDEX" in d or "USING COVERING INDEX" in d for d in details), (statement, details)


@contextmanager
def statements_sent(database: Database, prefix: str) -> Iterator[list[tuple[str, Any]]]:
    """The statements (and their parameters) starting with `prefix` that the block sends, to EXPLAIN afterwards."""
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(prefix.upper()):
            sent.append((statement, parameters))

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
