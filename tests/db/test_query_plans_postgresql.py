"""On PostgreSQL, the statements that move a group of orders do not test every order against every id.

Given `id IN (…)` over a table of a few thousand orders, PostgreSQL's planner chose a sequential scan comparing
every order with every id: 5-16 ms per statement for 25-40 ids in the dispatch benchmark, where a join with the ids
unnested from one array takes about 1 ms (an index look-up per id on a larger table)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, text

from tests.conftest import NOW
from tests.db.test_query_plans import statements_sent
from tests.dispatch.test_order_completion import _notification, _order
from varsel.db.engine import Database
from varsel.db.tables import orders, sms_notifications
from varsel.dispatch import repository
from varsel.notifications.statuses import OrderStatus, SmsStatus


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """PostgreSQL only: its planner is the one that chose to scan the orders for a list of ids."""
    return postgres_url


async def test_a_list_of_order_ids_never_has_every_order_tested_against_it(database: Database) -> None:
    """A few thousand orders (a quiet day), then the statements a sender and the order worker send for a group."""
    order_rows = [_order() for _ in range(3_000)]
    held = [_order(OrderStatus.PROCESSING.value, claimed_by="w", claimed_until=NOW) for _ in range(40)]
    async with database.transaction() as conn:
        await conn.execute(insert(orders), order_rows)
        await conn.execute(insert(orders), held)  # one statement per shape of row: these have claim columns
        await conn.execute(
            insert(sms_notifications),
            [_notification(o["id"], SmsStatus.ACCEPTED.value, "linkmobility") for o in order_rows],
        )
    async with database.transaction() as conn:
        await conn.execute(text("ANALYZE"))

    with statements_sent(database, "UPDATE orders") as sent:
        async with database.transaction() as conn:
            completed = await repository.complete_orders(conn, [o["id"] for o in order_rows[:40]], NOW)
            finished = await repository.finish_orders(conn, "w", [(o["id"], OrderStatus.PROCESSED) for o in held], NOW)
    assert completed == []  # every SMS still awaits its delivery report
    assert finished == {o["id"] for o in held}
    assert len(sent) == 2, sent

    async with database.read() as conn:
        for statement, parameters in sent:
            plan = "\n".join(row[0] for row in await conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            # The harm: a scan of all orders comparing each with every id of the list. An index look-up per id, one
            # pass joining the orders to the ids by hash, or (finishing) the index of unfinished orders, whose few
            # rows are then compared, is what a list of ids should cost.
            assert not re.search(r"Seq Scan on orders .*\n\s*Filter: .*= ANY", plan), (statement, plan)


async def test_each_owners_share_is_read_from_the_owner_index_even_in_a_generic_plan(database: Database) -> None:
    """A claim's statements run prepared: after five runs PostgreSQL may keep a plan made without the values (a
    generic plan). Such a plan once read each owner's share through the due-time index, skipping every other
    owner's items (1.4 ms per owner at 20,000 due notifications, instead of 0.03 ms)."""
    owners = [f"owner{i:02d}" for i in range(20)]
    order_rows = [_order(OrderStatus.REGISTERED.value, creator=owner) for owner in owners for _ in range(100)]
    async with database.transaction() as conn:
        await conn.execute(insert(orders), order_rows)
        await conn.execute(
            insert(sms_notifications),
            [{**_notification(o["id"], "New", None), "creator": o["creator"]} for o in order_rows],
        )
    async with database.transaction() as conn:
        await conn.execute(text("ANALYZE"))

    with statements_sent(database, "WITH due") as sent:
        async with database.transaction() as conn:
            claimed = await repository.claim_notifications(conn, sms_notifications, "w", NOW, NOW, 200)
            claimed += await repository.claim_due_orders(conn, "w", NOW, NOW, 200)
    assert len(claimed) == 400
    assert len(sent) == 2, sent

    async with database.transaction() as conn:
        await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        for number, (statement, parameters) in enumerate(sent):
            await conn.exec_driver_sql(f"PREPARE claim{number} AS {statement}")
            arguments = ", ".join(_literal(value) for value in parameters)
            explained = await conn.exec_driver_sql(f"EXPLAIN EXECUTE claim{number}({arguments})")
            plan = "\n".join(row[0] for row in explained)
            assert "$" in plan, plan  # generic: the values are not in the plan
            owner_index = "ix_sms_notifications_creator_sendable" if number == 0 else "ix_orders_creator_due"
            assert f"Index Scan using {owner_index}" in plan, plan
            assert "_sendable on" not in plan.replace(f"{owner_index} on", ""), plan
            assert "ix_orders_due on" not in plan, plan


def _literal(value: Any) -> str:
    """A parameter written as SQL (EXECUTE takes no parameters of its own)."""
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, int):
        return str(value)
    text_value = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text_value.replace("'", "''") + "'"
