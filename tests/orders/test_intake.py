"""Group commit at intake: orders arriving together are committed together, every one is answered only once it is
stored, and one order the database refuses fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tests.conftest import NOW
from varsel.app import Varsel
from varsel.db.engine import Database, database_unavailable
from varsel.db.tables import order_recipients, orders
from varsel.ids import new_id
from varsel.orders import repository
from varsel.orders.drafts import EmailTemplateSpec, OrderDraft, RecipientSpec
from varsel.orders.intake import OrderWriter
from varsel.orders.vocabulary import EmailContentType, NotificationChannel

V1 = "/notifications/api/v1"


def _draft(recipients: int = 1, *, due_in: timedelta = timedelta(days=1)) -> OrderDraft:
    return OrderDraft(
        channel=NotificationChannel.EMAIL,
        recipients=tuple(RecipientSpec(f"person{n}@example.com") for n in range(recipients)),
        requested_send_time=NOW + due_in,
        senders_reference="intake-test",
        email_template=EmailTemplateSpec("noreply@varsel.local", "Subject", "Body", EmailContentType.PLAIN),
    )


def _rows(draft: OrderDraft, order_id: uuid.UUID | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    order_id = order_id or new_id()
    return repository.order_row(order_id, "ttd", draft, NOW), repository.recipient_rows(order_id, draft)


async def _count(database: Database, table: Any) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_concurrent_orders_are_committed_together_and_every_one_is_stored(
    varsel: Varsel, client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    body = {"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}]}
    headers = auth()
    answers = await asyncio.gather(*(client.post(f"{V1}/orders/email", json=body, headers=headers) for _ in range(60)))
    assert [a.status_code for a in answers] == [202] * 60
    ids = {a.json()["orderId"] for a in answers}
    assert len(ids) == 60
    for order_id in ids:  # each answer came after its order was committed: it reads back at once
        assert (await client.get(f"{V1}/orders/{order_id}", headers=headers)).status_code == 200
    assert await _count(varsel.database, orders) == 60
    assert await _count(varsel.database, order_recipients) == 60

    exposition = varsel.telemetry.exposition().decode()
    batches = _sample(exposition, "varsel_intake_batch_orders_count")
    assert _sample(exposition, "varsel_intake_batch_orders_sum") == 60
    assert 1 <= batches < 60, exposition  # fewer transactions than orders: they were grouped


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def test_an_order_the_database_refuses_fails_alone(database: Database) -> None:
    sizes: list[int] = []
    writer = OrderWriter(database, on_batch=sizes.append, parallel=1)
    taken = new_id()
    await writer.write(*_rows(_draft(), taken), due_soon=False)
    assert sizes == [1]

    good = [_rows(_draft(2)) for _ in range(3)]
    duplicate = _rows(_draft(), taken)  # same primary key as a stored order
    outcomes = await asyncio.gather(
        writer.write(*good[0], due_soon=False),
        writer.write(*duplicate, due_soon=False),
        writer.write(*good[1], due_soon=True),
        writer.write(*good[2], due_soon=False),
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert outcomes[2:] == [None, None]
    assert await _count(database, orders) == 4
    assert await _count(database, order_recipients) == 1 + 3 * 2
    # The four were tried as one batch, which failed, then one by one: three single batches committed.
    assert sizes == [1, 1, 1, 1]


async def test_batches_are_bounded_by_orders_and_recipients(database: Database) -> None:
    sizes: list[int] = []
    writer = OrderWriter(database, on_batch=sizes.append, max_orders=3, max_recipients=5, parallel=1)
    # All ten queue before the writer runs, and are taken in turn under the bounds.
    drafts = [_draft(1)] + [_draft(2) for _ in range(4)] + [_draft(9)] + [_draft(1) for _ in range(4)]
    await asyncio.gather(*(writer.write(*_rows(d), due_soon=False) for d in drafts))
    assert sum(sizes) == len(drafts)
    # 1+2+2 (3 orders at most), 2+2 (the order of 9 would pass 5 recipients), the order of 9 alone (larger than
    # the bound, but never refused), 1+1+1, then 1.
    assert sizes == [3, 2, 1, 3, 1]
    assert await _count(database, order_recipients) == 1 + 4 * 2 + 9 + 4


@pytest.mark.parametrize("parallel", [1, 2, 4])
async def test_writes_arriving_as_flushers_finish_are_never_stranded(database: Database, parallel: int) -> None:
    # Waves of writes, each arriving just as the previous wave's flushers run out of work: every one completes.
    writer = OrderWriter(database, parallel=parallel)
    for wave in range(20):
        await asyncio.wait_for(
            asyncio.gather(*(writer.write(*_rows(_draft()), due_soon=False) for _ in range(wave % 5 + 1))), 10
        )
    assert await _count(database, orders) == sum(w % 5 + 1 for w in range(20))


async def test_a_caller_that_goes_away_does_not_take_its_order_or_the_others_with_it(database: Database) -> None:
    writer = OrderWriter(database)
    rows = [_rows(_draft()) for _ in range(5)]
    tasks = [asyncio.create_task(writer.write(*r, due_soon=False)) for r in rows]
    await asyncio.sleep(0)  # all five queued, the first batch under way
    tasks[0].cancel()
    tasks[3].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert [outcomes[i] for i in (1, 2, 4)] == [None, None, None]
    # Being written, they were stored even though nobody waited for them any more.
    for _ in range(100):
        if await _count(database, orders) == 5:
            break
        await asyncio.sleep(0.01)
    assert await _count(database, orders) == 5


async def test_an_outage_fails_the_whole_batch_as_unavailable() -> None:
    database = Database("postgresql+asyncpg://postgres@127.0.0.1:9/varsel")  # nothing listens on port 9
    try:
        writer = OrderWriter(database)
        outcomes = await asyncio.gather(
            *(writer.write(*_rows(_draft()), due_soon=False) for _ in range(3)), return_exceptions=True
        )
        assert len(outcomes) == 3
        for outcome in outcomes:
            assert isinstance(outcome, Exception)
            assert database_unavailable(outcome), repr(outcome)
    finally:
        await database.dispose()


@pytest.mark.parametrize("recipients", [0, 1])
def test_rows_are_what_the_order_says(recipients: int) -> None:
    draft = _draft(recipients)
    order, rows = _rows(draft)
    assert order["status"] == "Registered"
    assert order["process_after"] == draft.requested_send_time
    assert [r["position"] for r in rows] == list(range(recipients))
    assert all(r["order_id"] == order["id"] for r in rows)
