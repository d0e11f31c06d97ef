"""The orders of one round are written in few transactions (group commit), and an order whose claim another worker
took over meanwhile gets nothing written, while the rest of its group is written in full."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import event, func, select, update

from tests.dispatch.test_pipeline import ConditionPeer, _email, _order
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import email_notifications, orders
from varsel.dispatch import repository
from varsel.dispatch.generation import generate, undeliverable
from varsel.dispatch.processor import _ClaimLost, _Processed
from varsel.notifications.statuses import OrderStatus
from varsel.orders import repository as order_repository
from varsel.settings import Settings

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The condition peer's loopback host allow-listed, as in the pipeline tests.
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": ["127.0.0.1"]})


@pytest.fixture
def held() -> Iterator[ConditionPeer]:
    peer = ConditionPeer()
    yield peer
    peer.close()


async def test_a_round_is_written_in_few_transactions_and_a_lost_claim_writes_nothing(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, held: ConditionPeer
) -> None:
    plain = [await _order(client, auth, _email(f"p{n}@example.com")) for n in range(15)]
    stolen = await _order(client, auth, _email("stolen@example.com", conditionEndpoint=held.url + "/held"))

    inserts: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO email_notifications"):
            inserts.append(statement)

    engine = varsel.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        round_ = asyncio.create_task(varsel.workers.processor.run_once())
        # The conditioned order is held at its endpoint (a thread's event, so waited for off the loop); the others
        # go on and are written.
        assert await asyncio.to_thread(held.held.wait, 10)
        # Meanwhile its lease ran out and another worker took it over.
        async with varsel.database.transaction() as conn:
            await conn.execute(update(orders).where(orders.c.id == UUID(stolen)).values(claimed_by="another-worker"))
        held.release.set()
        assert await round_ == 16
    finally:
        event.remove(engine, "before_cursor_execute", record)

    async with varsel.database.read() as conn:
        status = dict((str(r.id), r.status) for r in await conn.execute(select(orders.c.id, orders.c.status)))
        per_order = dict(
            (str(r.order_id), r.n)
            for r in await conn.execute(
                select(email_notifications.c.order_id, func.count().label("n")).group_by(email_notifications.c.order_id)
            )
        )
    assert all(status[order_id] == "Processed" for order_id in plain), status
    assert all(per_order.get(order_id) == 1 for order_id in plain), per_order
    # The order the other worker holds: still Processing (its now), and nothing of ours written for it.
    assert status[stolen] == "Processing"
    assert stolen not in per_order
    # Fifteen orders processed at once, their notifications inserted in a few statements, not fifteen.
    assert 1 <= len(inserts) <= 4, inserts


async def test_one_group_writes_each_order_its_own_status_and_nothing_for_a_lost_claim(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    # Three orders claimed by this worker and written in one group: one ends Completed (nothing pending), one
    # Processed (a notification to send), and one another worker took over in between: it gets nothing.
    ids = [UUID(await _order(client, auth, _email(f"{name}@example.com"))) for name in ("done", "sent", "stolen")]
    processor = varsel.workers.processor
    now = clock.now()
    async with varsel.database.transaction() as conn:
        claimed = await repository.claim_due_orders(conn, processor._worker, now, now + timedelta(minutes=2), 10)
        assert {row.id for row in claimed} == set(ids)
        loaded = {order.id: order for order in await order_repository.load_orders(conn, ids)}
        await conn.execute(update(orders).where(orders.c.id == ids[2]).values(claimed_by="another-worker"))
    done, sent, stolen = (loaded[order_id] for order_id in ids)
    lookup = await processor._lookup.resolve(sent.recipients, sent.channel)
    items = [
        _Processed(done, undeliverable(done, now, "given up"), OrderStatus.COMPLETED, now),
        _Processed(sent, generate(sent, lookup, now, timedelta(hours=48), None), OrderStatus.PROCESSED, now),
        _Processed(stolen, generate(stolen, lookup, now, timedelta(hours=48), None), OrderStatus.PROCESSED, now),
    ]
    outcomes = await asyncio.gather(*(processor._finished.write(item) for item in items), return_exceptions=True)
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], _ClaimLost)

    async with varsel.database.read() as conn:
        status = {r.id: r.status for r in await conn.execute(select(orders.c.id, orders.c.status))}
        rows = [
            (r.order_id, r.status)
            for r in await conn.execute(select(email_notifications.c.order_id, email_notifications.c.status))
        ]
    assert status == {ids[0]: "Completed", ids[1]: "Processed", ids[2]: "Processing"}
    assert sorted(rows) == sorted([(ids[0], "Failed"), (ids[1], "New")])


async def test_a_group_committed_after_its_round_was_cancelled_still_logs_its_transitions(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, caplog: pytest.LogCaptureFixture
) -> None:
    """At shutdown a round is cancelled while its group may be committing: the group is written whatever happens to
    the round, so its transitions must be logged all the same (they used to be logged by the cancelled round)."""
    caplog.set_level(logging.INFO, logger="varsel.transitions")
    order_id = await _order(client, auth, _email("late@example.com"))
    loop = asyncio.get_running_loop()
    round_: asyncio.Task[int] | None = None
    processed = asyncio.Event()

    def cancel_the_round(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Inside the group's transaction: the round is cancelled while its group is being written. (On SQLite this
        # runs on the driver's thread, hence call_soon_threadsafe.)
        if statement.startswith("INSERT INTO email_notifications") and round_ is not None:
            loop.call_soon_threadsafe(round_.cancel)

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if f"id={order_id} from=Processing to=Processed" in record.getMessage():
                loop.call_soon_threadsafe(processed.set)

    watch = Watch()
    logging.getLogger("varsel.transitions").addHandler(watch)
    engine = varsel.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", cancel_the_round)
    try:
        round_ = asyncio.create_task(varsel.workers.processor.run_once())
        with pytest.raises(asyncio.CancelledError):
            await round_
        await asyncio.wait_for(processed.wait(), 10)
    finally:
        event.remove(engine, "before_cursor_execute", cancel_the_round)
        logging.getLogger("varsel.transitions").removeHandler(watch)
    async with varsel.database.read() as conn:
        status = (await conn.execute(select(orders.c.status).where(orders.c.id == UUID(order_id)))).scalar_one()
    assert status == "Processed"
    lines = [r.getMessage() for r in caplog.records if r.name == "varsel.transitions"]
    assert any("entity=email" in line and "to=New" in line and f"order={order_id}" in line for line in lines), lines
