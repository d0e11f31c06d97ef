"""One service owner's unsendable messages or backlog must not hold another's, on SQLite and PostgreSQL.

The whole pipeline runs (orders in through the v1 API, the order worker, the sender, the provider guard) with the
frozen clock. The provider stands in for one that chokes on some messages for a reason of their own: an adapter
that raises what nobody expected (as the outbox did on a subject with U+2028, and Python's email package on an
encoded-word address) for every recipient at poison.example.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, notification_attempts, orders
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
