"""The whole pipeline with the real provider adapters, chosen by settings, on SQLite and PostgreSQL: orders in through
the v1 API, the workers, the guard, the adapter, and a loopback peer that speaks the provider's wire protocol (LINK
Mobility for SMS; Azure Communication Services and an SMTP relay for email).

The frozen clock drives backoff, the guard's 429 pause and its breaker; the peers run in threads of their own and
count what reaches them. To make "what reached the peer" exact, the retry, 429 and breaker tests call the provider
one message at a time (the guard's max_concurrency = 1); the success test uses the default concurrency.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as ServerSession
from aiosmtpd.smtp import Envelope, Session
from pydantic import SecretStr
from sqlalchemy import Table, select

from tests.conftest import NOW
from tests.providers.acs_peer import AcsPeer
from tests.providers.linkmobility_peer import LinkMobilityPeer, delivery_report
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, notification_attempts, orders, sms_notifications
from varsel.providers.acs import AcsSettings
from varsel.providers.guard import GuardSettings, ProviderGuard
from varsel.providers.smtp import SmtpSettings
from varsel.settings import Settings

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]
GATE_USER, GATE_PASSWORD = "linkgate", "rapport-hemmelig"
ACCESS_KEY = "eventgrid-key"


# ---------------------------------------------------------------- an SMTP relay on loopback


class Relay:
    """An aiosmtpd handler that keeps every message it takes; can defer MAIL (4xx) and refuse recipients (5xx)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[bytes] = []
        self.mails = 0  # MAIL commands: one per message the provider tried to hand over
        self.defer_next = 0
        self.refused: set[str] = set()

    async def handle_MAIL(
        self, server: ServerSession, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.mails += 1
            if self.defer_next > 0:
                self.defer_next -= 1
                return "451 4.3.0 Try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: ServerSession, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: ServerSession, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        with self.lock:
            self.messages.append(envelope.content)
        return "250 2.0.0 queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ---------------------------------------------------------------- the peers, behind one face


class Peer:
    """What the tests need of a loopback provider, whatever its protocol."""

    name: str
    channel: str  # "sms" or "email"
    # Whether the provider sends delivery reports. SMTP does not: what the relay took is final, and its order
    # completes at once instead of awaiting reports.
    reports = True

    def configure(self, settings: Settings, guard: GuardSettings) -> Settings:
        raise NotImplementedError

    def fail_next(self, n: int) -> None:
        """The next n send attempts fail transiently (5xx; for SMTP a 4xx reply), without taking the message."""
        raise NotImplementedError

    def throttle(self, retry_after: int) -> None:
        """The next send attempt is answered 429 with this Retry-After."""
        raise NotImplementedError

    def refuse(self, address: str) -> None:
        """Sending to this address fails for good: an invalid recipient (for ACS: the next send, whatever it is)."""
        raise NotImplementedError

    @property
    def failed_status(self) -> str:
        raise NotImplementedError

    def taken(self) -> Counter[str]:
        """How often the peer took each notification's message."""
        raise NotImplementedError

    def references(self) -> dict[str, str]:
        """The provider's reference for each notification's message, as the peer gave it."""
        raise NotImplementedError

    def attempts(self) -> int:
        """Send attempts that reached the peer (ACS: POST /emails:send; SMTP: MAIL commands)."""
        raise NotImplementedError

    def requests(self) -> int:
        """Every request that reached the peer (for ACS, polls too)."""
        return self.attempts()


class LinkPeer(Peer):
    name = "linkmobility"
    channel = "sms"

    def __init__(self, peer: LinkMobilityPeer) -> None:
        self.peer = peer

    def configure(self, settings: Settings, guard: GuardSettings) -> Settings:
        link = self.peer.settings(
            timeout_seconds=5, report_username=GATE_USER, report_password=SecretStr(GATE_PASSWORD)
        )
        return settings.model_copy(
            update={
                "sms": settings.sms.model_copy(
                    update={"provider": "linkmobility", "linkmobility": link, "guard": guard}
                )
            }
        )

    def fail_next(self, n: int) -> None:
        self.peer.fail_next(n, status=503)

    def throttle(self, retry_after: int) -> None:
        self.peer.rate_limit(retry_after, times=1)

    def refuse(self, address: str) -> None:
        self.peer.reject_destination(address)

    @property
    def failed_status(self) -> str:
        return "Failed_InvalidRecipient"

    def taken(self) -> Counter[str]:
        return Counter(str(ref) for ref in self.peer.counts_by_ref().elements())

    def references(self) -> dict[str, str]:
        return {str(m.ref_id): m.message_id for m in self.peer.messages}

    def attempts(self) -> int:
        return len(self.peer.requests)


class AzurePeer(Peer):
    name = "acs"
    channel = "email"

    def __init__(self, peer: AcsPeer, timeout_seconds: float = 5) -> None:
        self.peer = peer
        self.timeout_seconds = timeout_seconds

    def configure(self, settings: Settings, guard: GuardSettings) -> Settings:
        acs = AcsSettings(
            connection_string=SecretStr(self.peer.connection_string),
            timeout_seconds=self.timeout_seconds,
            poll_interval_seconds=0.01,
            poll_max_seconds=2,
            report_access_key=SecretStr(ACCESS_KEY),
        )
        return settings.model_copy(
            update={"email": settings.email.model_copy(update={"provider": "acs", "acs": acs, "guard": guard})}
        )

    def fail_next(self, n: int) -> None:
        self.peer.fail_next(n, status=503)

    def throttle(self, retry_after: int) -> None:
        self.peer.throttle(retry_after)

    def refuse(self, address: str) -> None:
        self.peer.answer_next(400, code="InvalidEmailAddress", message="Invalid format for email address.")

    @property
    def failed_status(self) -> str:
        return "Failed_InvalidEmailFormat"

    def taken(self) -> Counter[str]:
        return Counter(e.operation_id for e in self.peer.emails)

    def references(self) -> dict[str, str]:
        return {e.operation_id: e.operation_id for e in self.peer.emails}

    def attempts(self) -> int:
        return sum(1 for r in self.peer.requests if r.method == "POST")

    def requests(self) -> int:
        return len(self.peer.requests)


class SmtpPeer(Peer):
    name = "smtp"
    channel = "email"
    reports = False

    def __init__(self, relay: Relay, port: int) -> None:
        self.relay = relay
        self.port = port

    def configure(self, settings: Settings, guard: GuardSettings) -> Settings:
        smtp = SmtpSettings(
            host="127.0.0.1", port=self.port, security="none", timeout_seconds=3, local_hostname="varsel.test"
        )
        return settings.model_copy(
            update={"email": settings.email.model_copy(update={"provider": "smtp", "smtp": smtp, "guard": guard})}
        )

    def fail_next(self, n: int) -> None:
        with self.relay.lock:
            self.relay.defer_next = n

    def throttle(self, retry_after: int) -> None:
        raise NotImplementedError("SMTP has no 429")

    def refuse(self, address: str) -> None:
        self.relay.refused.add(address)

    @property
    def failed_status(self) -> str:
        return "Failed_InvalidEmailFormat"

    def _ids(self) -> list[str]:
        ids = []
        for raw in self.relay.messages:
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            ids.append(str(parsed["Message-ID"]).strip("<>"))
        return ids

    def taken(self) -> Counter[str]:
        return Counter(message_id.removesuffix("@varsel") for message_id in self._ids())

    def references(self) -> dict[str, str]:
        return {message_id.removesuffix("@varsel"): message_id for message_id in self._ids()}

    def attempts(self) -> int:
        return self.relay.mails


@asynccontextmanager
async def _peer(name: str, clock: FrozenClock) -> AsyncIterator[Peer]:
    if name == "linkmobility":
        async with LinkMobilityPeer() as link:
            yield LinkPeer(link)
    elif name == "acs":
        # The peer checks x-ms-date against its clock: the frozen one the adapter signs with.
        async with AcsPeer(clock=clock) as acs:
            yield AzurePeer(acs)
    else:
        relay = Relay()
        controller = Controller(relay, hostname="127.0.0.1", port=free_port())
        controller.start()
        try:
            yield SmtpPeer(relay, int(controller.port))
        finally:
            controller.stop()


@dataclass
class Pipeline:
    peer: Peer
    varsel: Varsel
    client: httpx.AsyncClient
    clock: FrozenClock
    auth: Auth

    @property
    def table(self) -> Table:
        return sms_notifications if self.peer.channel == "sms" else email_notifications

    @property
    def guard(self) -> ProviderGuard[Any]:
        provider = (
            self.varsel.workers.sms_provider if self.peer.channel == "sms" else self.varsel.workers.email_provider
        )
        assert isinstance(provider, ProviderGuard)
        return provider

    @property
    def accepted(self) -> str:
        return "Accepted" if self.peer.channel == "sms" else "Succeeded"

    @property
    def handed_over(self) -> str:
        """The order's status once all its notifications are accepted: still awaiting reports, or done."""
        return "Processed" if self.peer.reports else "Completed"

    def addresses(self, n: int, start: int = 1) -> list[str]:
        if self.peer.channel == "sms":
            return [f"+47900000{i:02d}" for i in range(start, start + n)]
        return [f"r{i}@example.com" for i in range(start, start + n)]

    async def order(self, *addresses: str) -> str:
        if self.peer.channel == "sms":
            path, body = "/orders/sms", {"body": "Hei", "recipients": [{"mobileNumber": a} for a in addresses]}
        else:
            path = "/orders/email"
            body = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": a} for a in addresses]}
        response = await self.client.post(f"{V1}{path}", json=body, headers=self.auth())
        assert response.status_code == 202, response.text
        return str(response.json()["orderId"])

    async def statuses(self) -> dict[str, str]:
        """Each notification's status, by notification id."""
        async with self.varsel.database.read() as conn:
            rows = await conn.execute(select(self.table.c.id, self.table.c.status))
            return {str(row.id): str(row.status) for row in rows}

    async def attempt_rows(self) -> dict[str, list[Any]]:
        """The attempt history, by notification id, in order."""
        async with self.varsel.database.read() as conn:
            rows = await conn.execute(
                select(notification_attempts).order_by(notification_attempts.c.started, notification_attempts.c.attempt)
            )
            history: dict[str, list[Any]] = {}
            for row in rows:
                history.setdefault(str(row.notification_id), []).append(row)
            return history

    async def outcomes(self) -> list[list[str]]:
        return sorted([row.outcome for row in rows] for rows in (await self.attempt_rows()).values())

    async def order_status(self, order_id: str) -> str:
        async with self.varsel.database.read() as conn:
            rows = await conn.execute(select(orders.c.id, orders.c.status))
            return next(str(row.status) for row in rows if str(row.id) == order_id)

    async def drain(self) -> None:
        await self.varsel.workers.drain()

    def advance(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": []})


@pytest.fixture
def make_pipeline(settings: Settings, database: Database, clock: FrozenClock, auth: Auth) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(provider: str, **guard: Any) -> AsyncIterator[Pipeline]:
        async with _peer(provider, clock) as peer:
            chosen = peer.configure(settings, GuardSettings(**guard))
            # No provider given: the factory builds the real adapter from the settings.
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


ALL = ["linkmobility", "acs", "smtp"]
HTTP = ["linkmobility", "acs"]  # the providers that can answer 429


# ---------------------------------------------------------------- success


@pytest.mark.parametrize("provider", ALL)
async def test_every_notification_reaches_the_provider_exactly_once(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    async with make_pipeline(provider) as p:
        order_id = await p.order(*p.addresses(5))
        await p.drain()
        statuses = await p.statuses()
        assert len(statuses) == 5
        assert set(statuses.values()) == {p.accepted}
        assert p.peer.taken() == Counter(dict.fromkeys(statuses, 1))
        assert p.peer.attempts() == 5
        # Handed over, awaiting delivery reports: the order is processed, not yet completed (unless none will come).
        assert await p.order_status(order_id) == p.handed_over

        references = p.peer.references()
        history = await p.attempt_rows()
        assert set(history) == set(statuses)
        for notification_id, rows in history.items():
            (row,) = rows
            assert (row.outcome, row.status, row.provider, row.attempt) == ("accepted", p.accepted, provider, 1)
            assert row.provider_reference == references[notification_id]
            assert row.started == NOW
        async with p.varsel.database.read() as conn:
            stored = await conn.execute(select(p.table.c.id, p.table.c.provider_reference))
            assert {str(row.id): row.provider_reference for row in stored} == references

        # Nothing is sent again, however long the workers keep running.
        p.advance(3600)
        await p.drain()
        assert p.peer.attempts() == 5


# ---------------------------------------------------------------- transient failures


@pytest.mark.parametrize("provider", ALL)
async def test_a_burst_of_transient_failures_is_retried_with_backoff_until_all_are_delivered(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    # Four consecutive failures: below the breaker's threshold of five, so only the backoff is at work here.
    async with make_pipeline(provider, max_concurrency=1, failure_threshold=5) as p:
        p.peer.fail_next(4)
        order_id = await p.order(*p.addresses(3))
        await p.drain()
        assert p.peer.attempts() == 3
        assert set((await p.statuses()).values()) == {"New"}
        assert p.peer.taken() == Counter()
        assert p.guard.blocked_for() == 0

        p.advance(4.9)  # the first backoff is 5 s
        await p.drain()
        assert p.peer.attempts() == 3

        p.advance(0.1)
        await p.drain()
        # The first of the three failed again (the burst's fourth), the other two went through.
        assert p.peer.attempts() == 6
        assert sorted((await p.statuses()).values()) == sorted([p.accepted, p.accepted, "New"])

        p.advance(9.9)  # the second backoff is 10 s
        await p.drain()
        assert p.peer.attempts() == 6
        p.advance(0.1)
        await p.drain()
        assert p.peer.attempts() == 7

        statuses = await p.statuses()
        assert set(statuses.values()) == {p.accepted}
        assert p.peer.taken() == Counter(dict.fromkeys(statuses, 1))
        assert await p.outcomes() == [["retry", "accepted"], ["retry", "accepted"], ["retry", "retry", "accepted"]]
        history = await p.attempt_rows()
        for rows in history.values():
            assert [row.attempt for row in rows] == list(range(1, len(rows) + 1))
            assert all(row.status == "New" and row.provider_reference is None for row in rows[:-1])
            assert rows[-1].provider_reference is not None
        assert await p.order_status(order_id) == p.handed_over


@pytest.mark.parametrize("provider", ALL)
async def test_a_longer_outage_opens_the_breaker_and_nothing_reaches_the_provider_while_it_is_open(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    # The default breaker: open after 5 consecutive failures, for 5 s, doubled after a failed trial call.
    async with make_pipeline(provider, max_concurrency=1, failure_threshold=5, cooldown_seconds=5) as p:
        p.peer.fail_next(6)
        await p.order(*p.addresses(6))
        await p.drain()
        # Five calls failed at the provider; the sixth was refused by the open breaker without reaching it.
        assert p.peer.attempts() == 5
        assert p.guard.blocked_for() == 5
        # The refused one is no attempt (the provider never saw it): it waits, uncounted, for the breaker.
        assert await p.outcomes() == [["retry"]] * 5
        async with p.varsel.database.read() as conn:
            rows = (await conn.execute(select(p.table.c.id, p.table.c.attempts, p.table.c.status_detail))).all()
        attempted = await p.attempt_rows()
        (refused,) = [row for row in rows if str(row.id) not in attempted]
        assert refused.attempts == 0
        assert "circuit open" in refused.status_detail

        # Work that falls due while the breaker is open is not even claimed.
        p.advance(1)
        later = await p.order(*p.addresses(1, start=7))
        await p.drain()
        assert p.peer.requests() == 5
        assert len(await p.statuses()) == 7
        assert p.peer.taken() == Counter()
        async with p.varsel.database.read() as conn:
            waiting = (
                await conn.execute(
                    select(p.table.c.status, p.table.c.attempts).where(p.table.c.order_id == uuid.UUID(later))
                )
            ).one()
        assert tuple(waiting) == ("New", 0)

        p.advance(4)  # the cooldown is over: one trial call, which fails (the outage's sixth failure)
        await p.drain()
        assert p.peer.attempts() == 6
        assert p.guard.blocked_for() == 10  # open again, for twice as long
        p.advance(9.9)
        await p.drain()
        assert p.peer.requests() == 6

        # The provider is back: after the cooldown the trial succeeds, the breaker closes, and everything goes out.
        for _ in range(20):
            p.clock.set(max(p.clock.now(), await _next_due(p)))
            await p.drain()
            if "New" not in (await p.statuses()).values():
                break
        statuses = await p.statuses()
        assert set(statuses.values()) == {p.accepted}
        assert p.peer.taken() == Counter(dict.fromkeys(statuses, 1))
        assert p.peer.attempts() == 6 + 7
        assert p.guard.blocked_for() == 0


async def _next_due(p: Pipeline) -> Any:
    sender = p.varsel.workers.sms if p.peer.channel == "sms" else p.varsel.workers.email
    due = await sender.next_due()
    assert due is not None
    return due


@pytest.mark.parametrize("provider", HTTP)
async def test_429_pauses_the_provider_until_retry_after_has_passed(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    async with make_pipeline(provider, max_concurrency=1) as p:
        p.peer.throttle(30)
        first = await p.order(*p.addresses(3))
        await p.drain()
        # One request was answered 429; the other two were held back by the pause without reaching the peer.
        assert p.peer.requests() == 1
        assert p.guard.blocked_for() == 30
        assert set((await p.statuses()).values()) == {"New"}
        # Only the call the peer answered is an attempt; the two held back are not, and say why they wait.
        ((answered,),) = (await p.attempt_rows()).values()
        assert "429" in answered.detail
        async with p.varsel.database.read() as conn:
            rows = (await conn.execute(select(p.table.c.attempts, p.table.c.status_detail))).all()
        assert sorted(row.attempts for row in rows) == [0, 0, 1]
        assert sum("paused" in (row.status_detail or "") for row in rows) == 2

        p.advance(10)
        second = await p.order(*p.addresses(1, start=4))
        await p.drain()
        p.advance(19.9)
        await p.drain()
        assert p.peer.requests() == 1

        p.advance(0.1)
        await p.drain()
        statuses = await p.statuses()
        assert set(statuses.values()) == {p.accepted}
        assert p.peer.taken() == Counter(dict.fromkeys(statuses, 1))
        assert p.peer.attempts() == 1 + 4
        assert await p.outcomes() == [["accepted"], ["accepted"], ["accepted"], ["retry", "accepted"]]
        assert {await p.order_status(first), await p.order_status(second)} == {"Processed"}


async def test_an_acs_send_whose_answer_was_lost_is_not_sent_twice(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    # ACS took the email but its answer came after our timeout: the retry names the same operation (the
    # notification id), ACS answers 409, and varsel polls the operation instead of sending a second email.
    async with AcsPeer(clock=clock) as acs:
        peer = AzurePeer(acs, timeout_seconds=0.3)
        chosen = peer.configure(settings, GuardSettings())
        varsel = build(chosen, clock=clock, database=database)
        transport = httpx.ASGITransport(app=create_app(varsel))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
                p = Pipeline(peer, varsel, client, clock, auth)
                acs.delay_seconds = 0.6
                await p.order(*p.addresses(1))
                await p.drain()
                assert list((await p.statuses()).values()) == ["New"]
                await asyncio.to_thread(acs.wait_for_requests, 1)  # the peer took it, after we gave up
                acs.delay_seconds = 0
                assert len(acs.emails) == 1

                p.advance(5)
                await p.drain()
                statuses = await p.statuses()
                assert list(statuses.values()) == ["Succeeded"]
                assert p.peer.taken() == Counter(dict.fromkeys(statuses, 1))
                sends = [r.status for r in acs.requests if r.method == "POST"]
                assert sends == [202, 409]
                assert await p.outcomes() == [["retry", "accepted"]]
        finally:
            await varsel.workers.email_provider.close()
            await varsel.http.aclose()


# ---------------------------------------------------------------- permanent failures


@pytest.mark.parametrize("provider", ALL)
async def test_an_invalid_recipient_fails_for_good_without_a_retry(
    make_pipeline: Callable[..., Any], provider: str
) -> None:
    async with make_pipeline(provider, max_concurrency=1) as p:
        (refused,) = p.addresses(1, start=99)
        p.peer.refuse(refused)
        order_id = await p.order(refused)
        await p.drain()
        (status,) = (await p.statuses()).values()
        assert status == p.peer.failed_status
        assert p.peer.attempts() == 1
        assert p.peer.taken() == Counter()
        assert await p.order_status(order_id) == "Completed"
        ((row,),) = (await p.attempt_rows()).values()
        assert (row.outcome, row.status, row.provider_reference) == ("failed", p.peer.failed_status, None)

        p.advance(3600)
        await p.drain()
        assert p.peer.attempts() == 1
        assert list((await p.statuses()).values()) == [p.peer.failed_status]


async def test_an_acs_operation_that_fails_after_acceptance_is_a_permanent_failure(
    make_pipeline: Callable[..., Any],
) -> None:
    async with make_pipeline("acs") as p:
        assert isinstance(p.peer, AzurePeer)
        p.peer.peer.fail_code = "EmailDroppedAllRecipientsSuppressed"
        order_id = await p.order(*p.addresses(1))
        await p.drain()
        assert list((await p.statuses()).values()) == ["Failed_SupressedRecipient"]
        assert p.peer.attempts() == 1
        assert await p.order_status(order_id) == "Completed"
        p.advance(3600)
        await p.drain()
        assert p.peer.attempts() == 1


# ---------------------------------------------------------------- delivery reports from the peers


async def test_linkmobility_delivery_reports_complete_the_order(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline("linkmobility") as p:
        assert isinstance(p.peer, LinkPeer)
        first, second = p.addresses(2)
        p.peer.peer.report_result(second, 1006)  # not delivered
        order_id = await p.order(first, second)
        await p.drain()
        assert await p.order_status(order_id) == "Processed"
        # The peer cannot post to an app served over ASGI: its reports, built from what it took, are posted here.
        for message in p.peer.peer.messages:
            code = 1006 if message.body["destination"] == second else 1001
            body = delivery_report(message.ref_id, message.message_id, code)
            answer = await p.client.post(f"{V1}/reports/sms/linkmobility", json=body, auth=(GATE_USER, GATE_PASSWORD))
            assert answer.json() == {"received": 1, "states": {"applied": 1}}
        by_number = {m.body["destination"]: str(m.ref_id) for m in p.peer.peer.messages}
        statuses = await p.statuses()
        assert (statuses[by_number[first]], statuses[by_number[second]]) == ("Delivered", "Failed_Undelivered")
        assert await p.order_status(order_id) == "Completed"
        listed = (await p.client.get(f"{V1}/orders/{order_id}/notifications/sms", headers=p.auth())).json()
        assert (listed["generated"], listed["succeeded"]) == (2, 1)


async def test_event_grid_delivery_reports_complete_the_order(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline("acs") as p:
        assert isinstance(p.peer, AzurePeer)
        order_id = await p.order(*p.addresses(2))
        await p.drain()
        events = [
            {
                "id": str(uuid.uuid4()),
                "topic": "/subscriptions/x",
                "subject": f"sender/noreply@varsel.local/message/{sent.operation_id}",
                "eventType": "Microsoft.Communication.EmailDeliveryReportReceived",
                "eventTime": "2026-03-02T10:00:06Z",
                "dataVersion": "1.0",
                "metadataVersion": "1",
                "data": {
                    "sender": sent.sender,
                    "recipient": sent.to[0],
                    "messageId": sent.operation_id,
                    "status": "Delivered",
                },
            }
            for sent in p.peer.peer.emails
        ]
        answer = await p.client.post(f"{V1}/reports/email/acs", params={"accesskey": ACCESS_KEY}, json=events)
        assert answer.json() == {"received": 2, "states": {"applied": 2}}
        assert set((await p.statuses()).values()) == {"Delivered"}
        assert await p.order_status(order_id) == "Completed"
