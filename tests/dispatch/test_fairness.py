"""One service owner's unsendable messages or backlog must not hold another's, on SQLite and PostgreSQL.

The whole pipeline runs (orders in through the v1 API, the order worker, the sender, the provider guard) with the
frozen clock. The provider stands in for one that chokes on some messages for a reason of their own: an adapter
that raises what nobody expected (as the outbox did on a subject with U+2028, and Python's email package on an
encoded-word address) for every recipient at poison.example. The claims take turns between owners: checked
through the workers and, for the shares of a batch, on the claim itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, text

from tests.conftest import NOW
from tests.dispatch.test_pipeline import ConditionPeer
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, notification_attempts, orders
from varsel.dispatch import repository
from varsel.providers.base import Accepted, EmailMessage
from varsel.providers.guard import ProviderGuard
from varsel.settings import Settings

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]
POISON = "poison.example"


class ChokingEmailProvider:
    """Takes every message but those to poison.example, on which it raises as an adapter bug would."""

    name = "choking"

    def __init__(self) -> None:
        self.taken: Counter[str] = Counter()
        self.choked: Counter[str] = Counter()

    async def send(self, message: EmailMessage) -> Accepted:
        if message.to_address.endswith(f"@{POISON}"):
            self.choked[message.to_address] += 1
            raise ValueError("Header values may not contain linefeed or carriage return characters")
        self.taken[message.to_address] += 1
        # Delivered at once, as the outbox reports: an order completes without delivery reports.
        return Accepted(reference=str(message.notification_id), delivered=True)

    async def close(self) -> None:
        return None


@pytest.fixture
def provider() -> ChokingEmailProvider:
    return ChokingEmailProvider()


@pytest.fixture
async def varsel(
    settings: Settings, database: Database, clock: FrozenClock, provider: ChokingEmailProvider
) -> AsyncIterator[Varsel]:
    # The guard's defaults: its breaker opens after 5 consecutive failures.
    services = build(settings, clock=clock, database=database, email_provider=provider)
    yield services
    await services.http.aclose()


@pytest.fixture
async def client(varsel: Varsel) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://varsel.test"
    ) as http:
        yield http


async def _order(client: httpx.AsyncClient, headers: dict[str, str], *addresses: str) -> str:
    body = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": a} for a in addresses]}
    response = await client.post(f"{V1}/orders/email", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def _notifications(database: Database) -> dict[str, Any]:
    """Each email notification by its address."""
    async with database.read() as conn:
        rows = await conn.execute(select(email_notifications))
        return {row.email_address: row for row in rows}


async def _outcomes(database: Database) -> dict[str, list[str]]:
    """The attempt history's outcomes by address, in order."""
    async with database.read() as conn:
        rows = await conn.execute(
            select(email_notifications.c.email_address, notification_attempts.c.outcome)
            .join(notification_attempts, notification_attempts.c.notification_id == email_notifications.c.id)
            .order_by(notification_attempts.c.attempt)
        )
        history: dict[str, list[str]] = {}
        for row in rows:
            history.setdefault(row.email_address, []).append(row.outcome)
        return history


def _guard(varsel: Varsel) -> ProviderGuard[Any]:
    guard = varsel.workers.email_provider
    assert isinstance(guard, ProviderGuard)
    return guard


async def test_one_owners_unsendable_messages_do_not_hold_another_owners(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    provider: ChokingEmailProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 30 unsendable messages first (six times the breaker's threshold), then another owner's ordinary ones.
    for i in range(30):
        await _order(client, auth("poisoner"), f"p{i}@{POISON}")
    ordinary = [f"r{i}@example.com" for i in range(5)]
    await _order(client, auth("ttd"), *ordinary[:3])
    await _order(client, auth("ttd"), *ordinary[3:])

    with caplog.at_level(logging.INFO, logger="varsel.providers"):
        await varsel.workers.drain()

    # The ordinary ones went out at once, each handed over exactly once, as if the others were not there.
    assert provider.taken == Counter(dict.fromkeys(ordinary, 1))
    notifications = await _notifications(varsel.database)
    assert {a: notifications[a].status for a in ordinary} == dict.fromkeys(ordinary, "Delivered")
    history = await _outcomes(varsel.database)
    assert {a: history[a] for a in ordinary} == {a: ["accepted"] for a in ordinary}
    # The unsendable ones failed for their own reason, each once so far; the provider's breaker never moved.
    assert len(provider.choked) == 30
    assert {n.status for a, n in notifications.items() if a.endswith(POISON)} == {"New"}
    assert _guard(varsel).blocked_for() == 0
    assert not [r for r in caplog.records if "circuit" in r.getMessage()]


async def test_an_unexpected_error_is_retried_a_bounded_number_of_times_then_the_notification_fails(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    provider: ChokingEmailProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    unsendable = f"kari@{POISON}"
    order_id = await _order(client, auth("poisoner"), unsendable, "ola@example.com")
    await varsel.workers.drain()
    # Tried again with the backoff of transient failures (5 s, then 10 s), three tries in all (the default).
    for wait in (5, 10):
        assert (await _notifications(varsel.database))[unsendable].status == "New"
        clock.advance(timedelta(seconds=wait - 0.1))
        await varsel.workers.drain()
        clock.advance(timedelta(seconds=0.1))
        await varsel.workers.drain()
    assert provider.choked == Counter({unsendable: 3})

    failed = (await _notifications(varsel.database))[unsendable]
    assert failed.status == "Failed"
    assert failed.status_detail.startswith("unexpected error (try 3 of 3): ValueError('Header values may not")
    assert (await _outcomes(varsel.database))[unsendable] == ["error", "error", "failed"]
    async with varsel.database.read() as conn:
        status = (await conn.execute(select(orders.c.status).where(orders.c.id == failed.order_id))).scalar()
    assert (str(failed.order_id), status) == (order_id, "Completed")

    # Never tried again, however long the workers run; each try logged its traceback once.
    clock.advance(timedelta(hours=47))
    await varsel.workers.drain()
    assert provider.choked == Counter({unsendable: 3})
    tracebacks = [r for r in caplog.records if r.exc_info and "sending raised unexpectedly" in r.getMessage()]
    assert len(tracebacks) == 3
    assert _guard(varsel).blocked_for() == 0


async def test_the_number_of_tries_is_a_setting(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth, provider: ChokingEmailProvider
) -> None:
    once = settings.model_copy(
        update={"dispatch": settings.dispatch.model_copy(update={"unexpected_error_attempts": 1})}
    )
    services = build(once, clock=clock, database=database, email_provider=provider)
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            await _order(client, auth(), f"kari@{POISON}")
            await services.workers.drain()
        (failed,) = (await _notifications(services.database)).values()
        assert (failed.status, failed.status_detail[:29]) == ("Failed", "unexpected error (try 1 of 1)")
    finally:
        await services.http.aclose()


# ---------------------------------------------------------------- claims take turns between service owners


def _with(settings: Settings, **dispatch: Any) -> Settings:
    return settings.model_copy(update={"dispatch": settings.dispatch.model_copy(update=dispatch)})


async def test_another_owners_notification_goes_out_in_the_first_batch_despite_one_owners_backlog(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth, provider: ChokingEmailProvider
) -> None:
    services = build(_with(settings, notification_batch_size=10), clock=clock, database=database,
                     email_provider=provider)  # fmt: skip
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            # A backlog of 30 due notifications, three batches' worth, then another owner's one, due after them.
            await _order(client, auth("bulk"), *[f"b{i}@example.com" for i in range(30)])
            await services.workers.processor.run_once()
            clock.advance(timedelta(seconds=1))
            await _order(client, auth("ttd"), "kari@example.com")
            await services.workers.processor.run_once()

        assert await services.workers.email.run_once() == 10
        # In the first batch, and among the first handed over: the claim answers every owner's first in turn.
        assert "kari@example.com" in list(provider.taken)[:2]
        assert sum(provider.taken.values()) == 10
    finally:
        await services.http.aclose()


async def test_another_owners_order_is_processed_in_the_first_round_despite_one_owners_burst(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth, provider: ChokingEmailProvider
) -> None:
    services = build(_with(settings, order_batch_size=5), clock=clock, database=database, email_provider=provider)
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            for i in range(12):
                await _order(client, auth("bulk"), f"b{i}@example.com")
            clock.advance(timedelta(seconds=1))
            other = await _order(client, auth("ttd"), "kari@example.com")

        assert await services.workers.processor.run_once() == 5
        async with services.database.read() as conn:
            processed = (
                await conn.execute(select(orders.c.id, orders.c.creator).where(orders.c.status == "Processed"))
            ).all()
        # The other owner's order, and the rest of the batch to the burst.
        assert uuid.UUID(other) in {row.id for row in processed}
        assert Counter(row.creator for row in processed) == {"bulk": 4, "ttd": 1}
    finally:
        await services.http.aclose()


async def test_another_owners_order_is_not_queued_behind_one_owners_hanging_conditions(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth, provider: ChokingEmailProvider
) -> None:
    # 25 orders whose condition endpoint hangs, more than the order worker checks at once (20), then another
    # owner's order: it is claimed in the same round and started among the first, not after the hanging ones.
    allowed = settings.model_copy(
        update={"conditions": settings.conditions.model_copy(update={"allowed_hosts": ["127.0.0.1"]})}
    )
    services = build(allowed, clock=clock, database=database, email_provider=provider)
    held = ConditionPeer()
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            for i in range(25):
                body = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": f"b{i}@example.com"}],
                        "conditionEndpoint": f"{held.url}/held"}  # fmt: skip
                response = await client.post(f"{V1}/orders/email", json=body, headers=auth("bulk"))
                assert response.status_code == 202, response.text
            clock.advance(timedelta(seconds=1))
            other = uuid.UUID(await _order(client, auth("ttd"), "kari@example.com"))

        round_ = asyncio.create_task(services.workers.processor.run_once())

        async def processed() -> None:
            while True:
                async with services.database.read() as conn:
                    status = (await conn.execute(select(orders.c.status).where(orders.c.id == other))).scalar()
                if status == "Processed":
                    return
                await asyncio.sleep(0.02)

        # Written while the round still waits for the hanging endpoints (they answer only when released).
        await asyncio.wait_for(processed(), timeout=5)
        assert not round_.done()
        held.release.set()
        assert await round_ == 26
    finally:
        held.close()
        await services.http.aclose()


async def test_a_batch_is_shared_between_owners_and_the_rest_goes_to_the_earliest(database: Database) -> None:
    # Owner a has 30 due, b 1, c 5; a's are the earliest. A batch of 10 gives each an equal share (4), b leaves 3
    # of its share over, and those go to the earliest due of anyone: a's.
    order = _order_row()
    rows = [
        _due_row(order["id"], creator, NOW - timedelta(minutes=60 - minute))
        for creator, minute in [("a", m) for m in range(30)] + [("b", 45)] + [("c", 40 + m) for m in range(5)]
    ]
    async with database.transaction() as conn:
        await conn.execute(insert(orders), [order])
        await conn.execute(insert(email_notifications), rows)

    async with database.transaction() as conn:
        claimed = await repository.claim_notifications(
            conn, email_notifications, "w", NOW, NOW + timedelta(minutes=2), 10
        )
    assert Counter(row.creator for row in claimed) == {"a": 5, "b": 1, "c": 4}
    # Answered in turns: every owner's earliest first, then every owner's second, …
    assert [row.creator for row in claimed] == ["a", "c", "b", "a", "c", "a", "c", "a", "c", "a"]
    by_id = {row["id"]: row for row in rows}
    a_sent = [by_id[row.id]["send_after"] for row in claimed if row.creator == "a"]
    assert a_sent == sorted(r["send_after"] for r in rows if r["creator"] == "a")[:5]


async def test_workers_claiming_at_once_take_turns_without_taking_the_same_work(postgres_url: str) -> None:
    # PostgreSQL only: there two claims really overlap, each skipping what the other has locked.
    database = Database(postgres_url)
    try:
        async with database.transaction() as conn:
            await conn.execute(text("TRUNCATE orders CASCADE"))
            order = _order_row()
            await conn.execute(insert(orders), [order])
            await conn.execute(
                insert(email_notifications),
                [
                    _due_row(order["id"], creator, NOW - timedelta(minutes=minutes, seconds=i))
                    for creator, minutes in (("a", 60), ("b", 30), ("c", 0))
                    for i in range(8)
                ],
            )
        lease = NOW + timedelta(minutes=2)
        async with database.transaction() as first, database.transaction() as second:
            one = await repository.claim_notifications(first, email_notifications, "w1", NOW, lease, 6)
            two = await repository.claim_notifications(second, email_notifications, "w2", NOW, lease, 6)
        assert not {row.id for row in one} & {row.id for row in two}
        assert Counter(row.creator for row in one) == Counter(row.creator for row in two) == {"a": 2, "b": 2, "c": 2}
    finally:
        await database.dispose()


def _order_row() -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "creator": "a",
        "notification_channel": "Email",
        "requested_send_time": NOW,
        "created": NOW,
        "status": "Processed",
        "status_changed": NOW,
        "process_after": NOW,
    }


def _due_row(order_id: uuid.UUID, creator: str, send_after: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "order_id": order_id,
        "creator": creator,
        "email_address": f"{creator}@example.com",
        "status": "New",
        "status_changed": send_after,
        "created": send_after,
        "expiry": NOW + timedelta(days=2),
        "send_after": send_after,
    }
