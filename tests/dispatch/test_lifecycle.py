"""What operators rely on around the pipeline: metrics, the transition log, stopping gracefully, orders that cannot
be processed, idle workers that stay idle, and wake-ups across processes on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Collection
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import NOW
from tests.dispatch.test_pipeline import _email, _order
from tests.recipients.registry_data import load
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, metadata, orders
from varsel.dispatch import repository
from varsel.providers.base import Accepted, EmailMessage
from varsel.recipients.registry import LocalRegistry, OrganizationContact, PersonContact, UserContactPoint
from varsel.settings import Settings

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]


def _metric(exposition: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in exposition.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"{name}{{{wanted}}} not in metrics")


async def test_metrics_show_intake_transitions_and_the_queue(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await _order(client, auth, _email("a@example.com", "b@example.com"))
    clock.advance(timedelta(seconds=30))  # the order has now been due for 30 s
    before = (await client.get("/metrics")).text
    assert _metric(before, "varsel_orders_accepted_total", channel="Email") == 1
    assert _metric(before, "varsel_queue_depth", work="orders") == 1
    assert _metric(before, "varsel_oldest_due_age_seconds", work="orders") == 30
    assert _metric(before, "varsel_queue_depth", work="email") == 0

    await varsel.workers.processor.run_once()
    generated = (await client.get("/metrics")).text
    assert _metric(generated, "varsel_queue_depth", work="orders") == 0
    assert _metric(generated, "varsel_queue_depth", work="email") == 2
    assert _metric(generated, "varsel_status_transitions_total", entity="email", status="New") == 2

    await varsel.workers.drain()
    after = (await client.get("/metrics")).text
    assert _metric(after, "varsel_queue_depth", work="email") == 0
    assert _metric(after, "varsel_oldest_due_age_seconds", work="email") == 0
    assert _metric(after, "varsel_status_transitions_total", entity="email", status="Delivered") == 2
    assert _metric(after, "varsel_status_transitions_total", entity="order", status="Completed") == 1
    assert (
        _metric(after, "varsel_provider_call_seconds_count", channel="email", provider="outbox", outcome="accepted")
        == 2
    )
    assert _metric(after, "varsel_claim_seconds_count", work="orders") >= 1
    # Both outcomes written, in one group or two, each group timed.
    assert _metric(after, "varsel_outcome_group_size_sum", channel="email") == 2
    groups = _metric(after, "varsel_outcome_group_size_count", channel="email")
    assert 1 <= groups <= 2
    assert _metric(after, "varsel_outcome_write_seconds_count", channel="email") == groups


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    assert (await client.get("/health/ready")).json() == {"status": "ok"}


async def test_readiness_fails_while_the_database_is_away(settings: Settings, clock: FrozenClock) -> None:
    # Nothing listens on port 1: the database is unreachable, the process itself is fine.
    varsel = build(settings, clock=clock, database=Database("postgresql+asyncpg://postgres@127.0.0.1:1/varsel"))
    transport = httpx.ASGITransport(app=create_app(varsel))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"
    await varsel.close()


async def test_every_status_transition_is_one_log_line(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="varsel.transitions")
    order_id = await _order(client, auth, _email("a@example.com"))
    await varsel.workers.drain()
    lines = [r.getMessage() for r in caplog.records if r.name == "varsel.transitions"]
    moves = [re.search(r"entity=(\S+) id=\S+ from=(\S+) to=(\S+)", line).groups() for line in lines]  # type: ignore[union-attr]
    assert moves == [
        ("order", "-", "Registered"),
        ("order", "Registered", "Processing"),
        ("email", "-", "New"),
        ("order", "Processing", "Processed"),
        ("email", "New", "Sending"),
        ("email", "Sending", "Succeeded"),
        ("email", "Succeeded", "Delivered"),
        ("order", "Processed", "Completed"),
    ]
    assert all(f"id={order_id}" in line or f"order={order_id}" in line for line in lines)
    record = next(r for r in caplog.records if r.name == "varsel.transitions")
    # The same facts as attributes, for a JSON log formatter.
    assert (record.entity, record.entity_id, record.to_status) == ("order", order_id, "Registered")  # type: ignore[attr-defined]


class GatedEmailProvider:
    """Holds every send until the test opens the gate; counts what it was handed."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered: list[str] = []
        self.sent: list[str] = []

    async def send(self, message: EmailMessage) -> Accepted:
        self.entered.append(message.to_address)
        await self.gate.wait()
        self.sent.append(message.to_address)
        return Accepted(reference=str(message.notification_id))

    async def close(self) -> None:
        return None


async def _statuses(database: Database) -> dict[str, tuple[str, int]]:
    async with database.read() as conn:
        rows = await conn.execute(
            select(email_notifications.c.email_address, email_notifications.c.status, email_notifications.c.attempts)
        )
        return {row.email_address: (row.status, row.attempts) for row in rows}


async def _stopping_build(settings: Settings, database: Database, clock: FrozenClock) -> tuple[Varsel, Any]:
    provider = GatedEmailProvider()
    one_at_a_time = settings.model_copy(
        update={
            "dispatch": settings.dispatch.model_copy(update={"poll_seconds": 3600}),
            "email": settings.email.model_copy(
                update={"guard": settings.email.guard.model_copy(update={"max_concurrency": 1})}
            ),
        }
    )
    return build(one_at_a_time, clock=clock, database=database, email_provider=provider), provider


async def _wait_for(condition: Callable[[], bool]) -> None:
    # A harness bound, not a timing assertion: the condition is expected to hold almost at once.
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_stopping_past_the_grace_period_releases_what_the_provider_never_saw(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    varsel, provider = await _stopping_build(settings, database, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://t") as client:
        await _order(client, auth, _email("a@example.com", "b@example.com", "c@example.com"))
    await varsel.workers.processor.run_once()
    varsel.workers.start()
    await _wait_for(lambda: len(provider.entered) == 1)
    await varsel.close(grace_seconds=0.05)  # the one send under way never finishes
    statuses = await _statuses(database)
    in_flight = provider.entered[0]
    # Cut off at the provider: left Sending under its lease, to be retried when the lease runs out.
    assert statuses.pop(in_flight) == ("Sending", 1)
    # Never handed over: back to New at once, the attempt not counted.
    assert statuses == {address: ("New", 0) for address in statuses}
    assert len(statuses) == 2


async def test_stopping_within_the_grace_period_finishes_and_records_the_round(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    varsel, provider = await _stopping_build(settings, database, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://t") as client:
        await _order(client, auth, _email("a@example.com", "b@example.com"))
    await varsel.workers.processor.run_once()
    varsel.workers.start()
    await _wait_for(lambda: len(provider.entered) == 1)
    stopping = asyncio.create_task(varsel.close(grace_seconds=30))
    await asyncio.sleep(0)
    provider.gate.set()
    await stopping
    assert sorted(provider.sent) == ["a@example.com", "b@example.com"]
    assert await _statuses(database) == {"a@example.com": ("Succeeded", 1), "b@example.com": ("Succeeded", 1)}


class _ConnectionLost(Exception):
    sqlstate = "08006"  # PostgreSQL's connection_failure


class FlakyRegistry:
    """A contact registry that can be taken down, as a remote registry can be."""

    def __init__(self, inner: LocalRegistry) -> None:
        self.inner = inner
        self.down = False
        # The local registry is varsel's own database: its connection can fail as the database goes away.
        self.database_gone = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("registry unreachable")
        if self.database_gone:
            raise DBAPIError("SELECT …", None, _ConnectionLost("server closed the connection unexpectedly"))

    async def persons(self, numbers: Collection[str]) -> dict[str, PersonContact]:
        self._check()
        return await self.inner.persons(numbers)

    async def organizations(self, numbers: Collection[str]) -> dict[str, OrganizationContact]:
        self._check()
        return await self.inner.organizations(numbers)

    async def user_contacts(
        self, organization_numbers: Collection[str], resource_id: str
    ) -> dict[str, list[UserContactPoint]]:
        self._check()
        return await self.inner.user_contacts(organization_numbers, resource_id)


async def _order_row(database: Database, order_id: str) -> Any:
    async with database.read() as conn:
        rows = list(await conn.execute(select(orders)))
    return next(row for row in rows if str(row.id) == order_id)


async def _order_behind_a_flaky_registry(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> tuple[Varsel, FlakyRegistry, str]:
    """Varsel on a registry that can be taken down, and an order to Ola (by identity number) taken."""
    registry = FlakyRegistry(LocalRegistry(database))
    varsel = build(settings, clock=clock, database=database, registry=registry)
    await load(database, clock, [{"kind": "person", "nationalIdentityNumber": "01017012345", "name": "Ola",
                                  "emailAddress": "ola@example.com", "isReserved": False}])  # fmt: skip
    body = {"subject": "Hei", "body": "Hallo", "recipients": [{"nationalIdentityNumber": "01017012345"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://t") as client:
        return varsel, registry, await _order(client, auth, body)


async def test_an_order_that_cannot_be_processed_backs_off_and_finally_ends_failed(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    varsel, registry, order_id = await _order_behind_a_flaky_registry(settings, database, clock, auth)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://t") as client:
        registry.down = True
        delays = []
        for _ in range(4):
            assert await varsel.workers.processor.run_once() == 1
            row = await _order_row(database, order_id)
            # Back to Registered (not stuck Processing for a lease) with a growing delay.
            assert row.status == "Registered"
            delays.append((row.process_after - clock.now()).total_seconds())
            assert await varsel.workers.processor.run_once() == 0  # not retried before its time
            clock.set(row.process_after)
        assert delays == [5, 10, 20, 40]
        # Still down when the notifications would have expired: the order ends, each recipient Failed with why.
        clock.set(NOW + timedelta(hours=48))
        assert await varsel.workers.processor.run_once() == 1
        assert (await _order_row(database, order_id)).status == "Completed"
        listed = (await client.get(f"{V1}/orders/{order_id}/notifications/email", headers=auth())).json()
        assert (listed["generated"], listed["succeeded"]) == (1, 0)
        assert listed["notifications"][0]["sendStatus"]["status"] == "Failed"
        async with database.read() as conn:
            detail = (await conn.execute(select(email_notifications.c.status_detail))).scalar_one()
        assert "registry unreachable" in detail
    await varsel.close()


async def test_orders_held_when_the_database_went_away_are_given_back_at_once_not_after_their_lease(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    varsel, registry, order_id = await _order_behind_a_flaky_registry(settings, database, clock, auth)
    registry.database_gone = True
    # The round fails as a whole (the worker loop then pauses): an outage is not this order's failure.
    with pytest.raises(DBAPIError):
        await varsel.workers.processor.run_once()
    held = await _order_row(database, order_id)
    assert (held.status, held.processing_attempts) == ("Processing", 1)
    registry.database_gone = False
    await varsel.workers.processor.recover()
    row = await _order_row(database, order_id)
    # Registered again as it was: due now (no backoff), its try not counted, held by nobody.
    assert (row.status, row.processing_attempts, row.claimed_by) == ("Registered", 0, None)
    assert row.process_after == held.process_after
    await varsel.workers.drain()
    assert (await _order_row(database, order_id)).status == "Completed"
    await varsel.close()


async def test_a_sender_gives_back_what_it_held_but_never_sent_and_leaves_what_the_provider_may_have_to_its_lease(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, database: Database, settings: Settings
) -> None:
    await _order(client, auth, _email("a@example.com", "b@example.com"))
    await varsel.workers.processor.run_once()
    sender = varsel.workers.email
    # A claim that committed though its worker never learnt so (the connection dropped at COMMIT), and one the
    # worker had handed to the provider in a round that then failed: the first is safe to send again, the second
    # not before its lease runs out.
    async with database.transaction() as conn:
        claimed = await repository.claim_notifications(
            conn, email_notifications, sender._worker, clock.now(), clock.now() + timedelta(seconds=120), 10
        )
    never_sent, maybe_sent = sorted(row.id for row in claimed)
    sender._uncertain[maybe_sent] = time.monotonic() + 3600
    await sender.recover()
    async with database.read() as conn:
        rows = {row.id: row for row in await conn.execute(select(email_notifications))}
    assert (rows[never_sent].status, rows[never_sent].attempts, rows[never_sent].claimed_by) == ("New", 0, None)
    assert rows[maybe_sent].status == "Sending"
    await varsel.workers.drain()
    eml = sorted((settings.data_dir / "outbox" / "email").glob("*.eml"))
    assert [path.stem for path in eml] == [str(never_sent)]


async def test_an_idle_sender_waits_for_another_workers_lease_instead_of_spinning(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings, database: Database
) -> None:
    await _order(client, auth, _email("a@example.com"))
    await varsel.workers.processor.run_once()
    other = build(settings, clock=clock, database=database)
    # Another worker claims the notification (and holds it, as if its provider call were slow).
    async with database.transaction() as conn:
        claimed = await repository.claim_notifications(
            conn, email_notifications, "other", clock.now(), clock.now() + timedelta(seconds=120), 10
        )
    assert len(claimed) == 1
    assert await varsel.workers.email.run_once() == 0
    # Nothing to do until the other worker's lease runs out: not "now", which would keep this worker spinning.
    assert await varsel.workers.email.next_due() == clock.now() + timedelta(seconds=120)
    await other.close()


@pytest.mark.postgres_only
async def test_a_worker_in_another_process_is_woken_by_postgresql(
    postgres_url: str, settings: Settings, clock: FrozenClock, auth: Auth, tmp_path: Path
) -> None:
    cleaner = Database(postgres_url)
    async with cleaner.transaction() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} CASCADE"))
    await cleaner.dispose()
    never_polls = settings.model_copy(update={"dispatch": settings.dispatch.model_copy(update={"poll_seconds": 3600})})
    provider = GatedEmailProvider()
    provider.gate.set()
    api = build(never_polls, clock=clock, database=Database(postgres_url))
    worker = build(never_polls, clock=clock, database=Database(postgres_url), email_provider=provider)
    worker.workers.start()
    try:
        assert worker.workers._listener is not None
        await asyncio.wait_for(worker.workers._listener.connected.wait(), 10)
        await asyncio.sleep(0.1)  # let the loops finish their first (empty) rounds and go to sleep
        transport = httpx.ASGITransport(app=create_app(api))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await _order(client, auth, _email("woken@example.com"))
        # Only a NOTIFY can wake the worker: its poll is an hour, and the API's in-process signal is not its own.
        await _wait_for(lambda: provider.sent == ["woken@example.com"])
    finally:
        await worker.close()
        await api.close()


class RelayWithoutReports:
    """Accepts like an SMTP relay: no delivery report will ever follow."""

    name = "smtp"

    async def send(self, message: EmailMessage) -> Accepted:
        return Accepted(reference=f"<{message.notification_id}@varsel>")

    async def close(self) -> None:
        return None


async def test_email_through_a_provider_without_reports_is_final_when_accepted(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    varsel = build(settings, clock=clock, database=database, email_provider=RelayWithoutReports())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://t") as client:
        order_id = await _order(client, auth, _email("a@example.com"))
        await varsel.workers.drain()
        # Nothing is awaited: the order completes at once (not Processed until a report that never comes).
        assert (await _order_row(database, order_id)).status == "Completed"
        clock.advance(timedelta(hours=49))
        await varsel.workers.drain()
        assert await _statuses(database) == {"a@example.com": ("Succeeded", 1)}  # not Failed_TTL
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "varsel_notifications_awaiting_report", channel="email") == 0
    await varsel.close()


@pytest.mark.parametrize(("policy", "sent_at_night"), [("Daytime", False), ("Anytime", True)])
async def test_the_sms_sending_time_policy_decides_whether_sms_go_out_at_night(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    database: Database,
    settings: Settings,
    policy: str,
    sent_at_night: bool,
) -> None:
    clock.set(NOW.replace(hour=2))  # 03:00 in Oslo
    body = {"body": "Hei", "recipients": [{"mobileNumber": "+4799999999"}]}
    order_id = await _order(client, auth, body, path="/orders/sms")
    # v1 orders are all Daytime; Anytime is what later API versions can ask for.
    async with database.transaction() as conn:
        await conn.execute(orders.update().values(sms_sending_time_policy=policy))
    await varsel.workers.drain()
    outbox = settings.data_dir / "outbox" / "sms.jsonl"
    assert outbox.exists() is sent_at_night
    assert (await _order_row(database, order_id)).status == ("Completed" if sent_at_night else "Processed")
