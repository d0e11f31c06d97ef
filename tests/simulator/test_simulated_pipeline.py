"""Simulated recipients through the whole pipeline, on SQLite and PostgreSQL, with real providers configured.

Each of the eight simulated addresses and numbers (varsel.orders.simulated) goes in through the API (a v1 order, a v2
order chain, an instant order), through the order worker, the sender's claim and outcome write, and its delivery
report through the delivery-report service, driven by a frozen clock, and ends in its documented status. The
provider's loopback peer (an SMTP relay, Azure Communication Services, LINK Mobility) receives nothing for them, while
a real recipient of the same order gets its message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import Table, select

from tests.providers.test_provider_pipeline import Peer, _peer
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import delivery_reports, email_notifications, notification_attempts, orders, sms_notifications
from varsel.dispatch.senders import ExpirySweeper
from varsel.providers.guard import GuardSettings, ProviderGuard
from varsel.settings import Settings

V1 = "/notifications/api/v1"
FUTURE = f"{V1}/future"
Auth = Callable[..., dict[str, str]]

EMAILS = {
    "delivered": "delivered@simulator.invalid",
    "bounced": "bounced@simulator.invalid",
    "transient": "transient@simulator.invalid",
    "silent": "silent@simulator.invalid",
}
NUMBERS = {"delivered": "+447700900001", "bounced": "+447700900002", "transient": "+447700900003",
           "silent": "+447700900004"}  # fmt: skip
REAL = {"email": "kari@example.com", "sms": "+4799999999"}
# The documented end of each, by channel: a bounce is Failed_Bounced for email, Failed_Undelivered for SMS; the silent
# one is never reported and expires as any notification whose report never comes.
FINAL = {
    channel: {"delivered": "Delivered", "bounced": bounced, "transient": "Delivered", "silent": "Failed_TTL"}
    for channel, bounced in (("email", "Failed_Bounced"), ("sms", "Failed_Undelivered"))
}
ACCEPTED = {"email": "Succeeded", "sms": "Accepted"}
# Past any notification's expiry (48 hours after its send time) and the sweeper's grace for late reports.
PAST_EXPIRY = timedelta(hours=48) + ExpirySweeper.REPORT_GRACE + timedelta(seconds=1)
REPORT_RETRY = 5.0  # VARSEL_REPORTS__RETRY_SECONDS's default: when a pending report is tried again


def simulated(channel: str) -> dict[str, str]:
    return EMAILS if channel == "email" else NUMBERS


@dataclass
class Pipeline:
    peer: Peer
    varsel: Varsel
    client: httpx.AsyncClient
    clock: FrozenClock
    auth: Auth

    @property
    def channel(self) -> str:
        return self.peer.channel

    @property
    def table(self) -> Table:
        return sms_notifications if self.channel == "sms" else email_notifications

    @property
    def guard(self) -> ProviderGuard[Any]:
        provider = self.varsel.workers.sms_provider if self.channel == "sms" else self.varsel.workers.email_provider
        assert isinstance(provider, ProviderGuard)
        return provider

    async def v1_order(self, *addresses: str) -> str:
        if self.channel == "sms":
            path, body = "/orders/sms", {"body": "Hei", "recipients": [{"mobileNumber": a} for a in addresses]}
        else:
            path = "/orders/email"
            body = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": a} for a in addresses]}
        response = await self.client.post(f"{V1}{path}", json=body, headers=self.auth())
        assert response.status_code == 202, response.text
        return str(response.json()["orderId"])

    async def chain(self, key: str, address: str) -> str:
        if self.channel == "sms":
            recipient = {"recipientSms": {"phoneNumber": address, "smsSettings": {"body": "Your case has news"}}}
        else:
            recipient = {
                "recipientEmail": {"emailAddress": address, "emailSettings": {"subject": "Your case", "body": "News"}}
            }
        response = await self.client.post(
            f"{FUTURE}/orders", json={"idempotencyId": key, "recipient": recipient}, headers=self.auth()
        )
        assert response.status_code == 201, response.text
        return str(response.json()["notification"]["shipmentId"])

    async def rows(self) -> dict[str, Any]:
        """Each notification, by its address or number."""
        address = self.table.c.mobile_number if self.channel == "sms" else self.table.c.email_address
        async with self.varsel.database.read() as conn:
            found = await conn.execute(select(self.table, address.label("address")))
            return {row.address: row for row in found}

    async def statuses(self) -> dict[str, str]:
        return {address: row.status for address, row in (await self.rows()).items()}

    async def history(self, address: str) -> list[Any]:
        row = (await self.rows())[address]
        async with self.varsel.database.read() as conn:
            found = await conn.execute(
                select(notification_attempts)
                .where(notification_attempts.c.notification_id == row.id)
                .order_by(notification_attempts.c.attempt)
            )
            return list(found)

    async def reports(self) -> list[Any]:
        async with self.varsel.database.read() as conn:
            return list(await conn.execute(select(delivery_reports).order_by(delivery_reports.c.received)))

    async def order_status(self, order_id: str) -> str:
        async with self.varsel.database.read() as conn:
            found = await conn.execute(select(orders.c.status).where(orders.c.id == UUID(order_id)))
            return str(found.scalar_one())

    async def drain(self) -> None:
        await self.varsel.workers.drain()

    def advance(self, delta: timedelta | float) -> None:
        self.clock.advance(delta if isinstance(delta, timedelta) else timedelta(seconds=delta))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": []})


@pytest.fixture
def make_pipeline(settings: Settings, database: Database, clock: FrozenClock, auth: Auth) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(provider: str, **guard: Any) -> AsyncIterator[Pipeline]:
        async with _peer(provider, clock) as peer:
            chosen = peer.configure(settings, GuardSettings(**guard))
            varsel = build(chosen, clock=clock, database=database)
            app = create_app(varsel)
            try:
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://varsel.test"
                ) as client:
                    yield Pipeline(peer, varsel, client, clock, auth)
            finally:
                await varsel.workers.email_provider.close()
                await varsel.workers.sms_provider.close()
                await varsel.http.aclose()

    return make


async def _taken_by_peer_only_the_real_one(p: Pipeline) -> None:
    rows = await p.rows()
    real_id = str(rows[REAL[p.channel]].id)
    assert p.peer.taken() == Counter({real_id: 1})
    assert p.peer.attempts() == 1


@pytest.mark.parametrize("provider", ["smtp", "acs", "linkmobility"])
async def test_a_v1_order_s_simulated_recipients_end_as_documented_and_reach_no_provider(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    # A breaker that opens at the first failure of the provider: the simulated transient failure is not one.
    async with make_pipeline(provider, failure_threshold=1) as p:
        names = simulated(p.channel)
        real = REAL[p.channel]
        order_id = await p.v1_order(real, *names.values())
        await p.drain()

        accepted = ACCEPTED[p.channel]
        statuses = await p.statuses()
        assert statuses == {
            real: accepted,
            names["delivered"]: accepted,
            names["bounced"]: accepted,
            names["transient"]: "New",  # failed transiently, retried after the sender's backoff (5 s)
            names["silent"]: accepted,
        }
        await _taken_by_peer_only_the_real_one(p)
        assert p.guard.health().consecutive_failures == 0
        assert p.guard.blocked_for() == 0
        rows = await p.rows()
        for name, address in names.items():
            expected = None if name == "transient" else "simulator"
            assert rows[address].provider == expected, name
        assert rows[real].provider == provider
        # The reports of the delivered and the bounced one are stored before the hand-over is recorded: pending.
        reports = await p.reports()
        assert sorted((r.provider, r.status, r.state) for r in reports) == sorted(
            ("simulator", FINAL[p.channel][name], "pending") for name in ("delivered", "bounced")
        )

        p.advance(REPORT_RETRY)
        await p.drain()
        statuses = await p.statuses()
        assert statuses[names["delivered"]] == FINAL[p.channel]["delivered"]
        assert statuses[names["bounced"]] == FINAL[p.channel]["bounced"]
        assert statuses[names["transient"]] == accepted
        assert statuses[names["silent"]] == accepted

        p.advance(REPORT_RETRY)
        await p.drain()
        assert (await p.statuses())[names["transient"]] == "Delivered"
        history = await p.history(names["transient"])
        assert [(a.attempt, a.outcome, a.provider) for a in history] == [
            (1, "retry", "simulator"),
            (2, "accepted", "simulator"),
        ]
        assert await p.order_status(order_id) == "Processed"  # the silent one still awaits its report

        p.advance(PAST_EXPIRY)
        await p.drain()
        statuses = await p.statuses()
        for name, address in names.items():
            assert statuses[address] == FINAL[p.channel][name], name
        # Every report applied through the delivery-report service, as a provider's are; none left pending.
        reports = await p.reports()
        assert sorted((r.status, r.state) for r in reports) == sorted(
            (FINAL[p.channel][name], "applied") for name in ("delivered", "bounced", "transient")
        )
        assert await p.order_status(order_id) == "Completed"
        await _taken_by_peer_only_the_real_one(p)


@pytest.mark.parametrize("provider", ["smtp", "linkmobility"])
async def test_v2_order_chains_to_simulated_recipients_show_their_outcomes_in_the_manifest(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    async with make_pipeline(provider) as p:
        names = simulated(p.channel)
        real_shipment = await p.chain("real", REAL[p.channel])
        shipments = {name: await p.chain(name, address) for name, address in names.items()}
        await p.drain()
        await _taken_by_peer_only_the_real_one(p)
        for _ in range(2):
            p.advance(REPORT_RETRY)
            await p.drain()
        p.advance(PAST_EXPIRY)
        await p.drain()

        prefix = "Email" if p.channel == "email" else "SMS"
        for name, shipment in shipments.items():
            manifest = await p.client.get(f"{FUTURE}/shipment/{shipment}", headers=p.auth())
            assert manifest.status_code == 200, manifest.text
            shown = manifest.json()
            assert shown["status"] == "Order_Completed", name
            [recipient] = shown["recipients"]
            assert recipient["destination"] == names[name]
            assert recipient["status"] == f"{prefix}_{FINAL[p.channel][name]}", name
        manifest = await p.client.get(f"{FUTURE}/shipment/{real_shipment}", headers=p.auth())
        assert manifest.json()["recipients"][0]["destination"] == REAL[p.channel]
        await _taken_by_peer_only_the_real_one(p)


# ---------------------------------------------------------------- instant orders, through the outbox providers


def _outbox(settings: Settings) -> list[Path]:
    folder = settings.data_dir / "outbox"
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def _instant(channel: str, key: str, address: str) -> tuple[str, dict[str, Any]]:
    if channel == "sms":
        details = {"phoneNumber": address, "timeToLiveInSeconds": 300, "smsSettings": {"body": "Your code is 1234"}}
        return f"{FUTURE}/orders/instant/sms", {"idempotencyId": key, "recipientSms": details}
    settings = {"subject": "Your document", "body": "Log in to read it."}
    details = {"emailAddress": address, "emailSettings": settings}
    return f"{FUTURE}/orders/instant/email", {"idempotencyId": key, "recipientEmail": details}


@pytest.mark.parametrize("channel", ["email", "sms"])
async def test_instant_orders_to_simulated_recipients_end_as_documented_and_write_nothing_to_the_outbox(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: str
) -> None:
    names = simulated(channel)
    shipments: dict[str, str] = {}
    for name, address in names.items():
        path, body = _instant(channel, name, address)
        response = await client.post(path, json=body, headers=auth())
        if name == "transient":
            # A transient failure of an instant order is the caller's to retry, with the same key (reference 2.3).
            assert response.status_code == 503, response.text
            response = await client.post(path, json=body, headers=auth())
        assert response.status_code == 201, (name, response.text)
        shipments[name] = response.json()["notification"]["shipmentId"]
    assert _outbox(settings) == []

    clock.advance(timedelta(seconds=REPORT_RETRY))
    await varsel.workers.drain()
    clock.advance(PAST_EXPIRY)
    await varsel.workers.drain()
    prefix = "Email" if channel == "email" else "SMS"
    for name, shipment in shipments.items():
        manifest = await client.get(f"{FUTURE}/shipment/{shipment}", headers=auth())
        assert manifest.status_code == 200, manifest.text
        [recipient] = manifest.json()["recipients"]
        assert (recipient["destination"], recipient["status"]) == (names[name], f"{prefix}_{FINAL[channel][name]}")
    assert _outbox(settings) == []

    # A real recipient of the same service goes through the outbox as ever.
    path, body = _instant(channel, "real", REAL[channel])
    assert (await client.post(path, json=body, headers=auth())).status_code == 201
    assert len(_outbox(settings)) == 1


@pytest.mark.parametrize("provider", ["smtp", "linkmobility"])
async def test_the_provider_s_rate_limit_and_concurrency_cap_are_not_spent_on_simulated_recipients(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    # One call to the provider a minute: the real recipient's takes it; the simulated ones, past the guard, go on.
    async with make_pipeline(provider, max_concurrency=1, rate_per_second=1 / 60, burst=1) as p:
        names = simulated(p.channel)
        await p.v1_order(REAL[p.channel], names["delivered"], names["bounced"], names["silent"])
        await p.v1_order(REAL[p.channel].replace("kari", "ola").replace("99999999", "99999998"))
        await p.drain()
        statuses = await p.statuses()
        accepted = ACCEPTED[p.channel]
        assert [statuses[names[n]] for n in ("delivered", "bounced", "silent")] == [accepted] * 3
        # Of the two real ones, one went through and the other waits for the rate limit.
        real = [status for address, status in statuses.items() if address not in names.values()]
        assert sorted(real) == sorted([accepted, "New"])
        assert p.peer.attempts() == 1
