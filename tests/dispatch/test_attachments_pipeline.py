"""A composed email through the real pipeline, on SQLite and PostgreSQL with the injected clock: its attachments are
fetched from a loopback HTTPS store when it is sent, and arrive at the outbox, an SMTP relay (aiosmtpd) and ACS; the
store's refusals end it as Failed_InvalidSasUrl or Failed_PayloadTooLarge, its passing failures are retried."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage as ParsedMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as ServerSession
from aiosmtpd.smtp import Envelope, Session
from pydantic import SecretStr
from sqlalchemy import select

from tests.conftest import NOW
from tests.providers.acs_peer import AcsPeer
from tests.tls import CHUNK, HttpsStore, TlsFiles, make_tls
from varsel.app import Varsel, build
from varsel.clock import FrozenClock, SystemClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, orders
from varsel.dispatch.attachments import AttachmentFetcher
from varsel.orders.drafts import AttachmentSpec, ChainDraft, EmailTemplateSpec, OrderDraft, RecipientSpec
from varsel.orders.vocabulary import EmailContentType, IdempotencyFamily, NotificationChannel, OrderType
from varsel.providers.acs import AcsEmailProvider, AcsSettings
from varsel.providers.base import Accepted, EmailProvider
from varsel.providers.smtp import SmtpEmailProvider, SmtpSettings
from varsel.settings import AttachmentSettings, Settings

SAS = "?sv=2024-11-04&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=S3CRET-SIGNATURE%3D"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64
CSV = "navn;beløp\nKari;100\n".encode()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def store(tls: TlsFiles) -> AsyncIterator[HttpsStore]:
    async with HttpsStore(tls) as running:
        running.files |= {"vedtak.pdf": PDF, "tall.csv": CSV}
        yield running


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The store's exact name is allow-listed, as an operator would allow an internal object store; a suffix too.
    return Settings(
        data_dir=tmp_path / "var",
        attachments={"allowed_hosts": ["localhost", "*.store.example"], "max_bytes_per_email": 1024 * 1024},
        # One failure would open the breaker: a store's failure must not count as the provider's.
        email={"guard": {"failure_threshold": 1}},
    )


class Resolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers[host]


Make = Callable[..., Varsel]


@pytest.fixture
async def make(settings: Settings, database: Database, clock: FrozenClock, tls: TlsFiles) -> AsyncIterator[Make]:
    made: list[Varsel] = []

    def services(email_provider: EmailProvider | None = None, resolver: Resolver | None = None) -> Varsel:
        fetcher = AttachmentFetcher(settings.attachments, resolver=resolver, verify=tls.client_context())
        made.append(build(settings, clock=clock, database=database, email_provider=email_provider, attachments=fetcher))
        return made[-1]

    yield services
    for varsel in made:
        await varsel.workers.email_provider.close()
        await varsel.http.aclose()


async def order(varsel: Varsel, *attachments: tuple[str, str, str]) -> uuid.UUID:
    main = OrderDraft(
        channel=NotificationChannel.EMAIL,
        requested_send_time=NOW,
        recipients=(RecipientSpec(email_address="kari.nordmann@example.no"),),
        email_template=EmailTemplateSpec(
            "noreply@varsel.example.no", "Vedtak", "Hei Kari,\nse vedlegg.\n", EmailContentType.PLAIN
        ),
        order_type=OrderType.COMPOSED,
        attachments=tuple(AttachmentSpec(name, mime_type, url) for name, mime_type, url in attachments),
    )
    draft = ChainDraft(idempotency_id=uuid.uuid4().hex, main=main)
    registered = await varsel.chains.register("ttd", draft, IdempotencyFamily.COMPOSED)
    return registered.receipt.main.order_id


async def notification(varsel: Varsel) -> Any:
    async with varsel.database.read() as conn:
        [row] = (await conn.execute(select(email_notifications))).all()
        return row


async def order_status(varsel: Varsel, order_id: uuid.UUID) -> str:
    async with varsel.database.read() as conn:
        return str((await conn.execute(select(orders.c.status).where(orders.c.id == order_id))).scalar_one())


def outbox(settings: Settings) -> list[bytes]:
    return [path.read_bytes() for path in (settings.data_dir / "outbox" / "email").glob("*.eml")]


def parse(raw: bytes) -> ParsedMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, ParsedMessage)
    return parsed


def attachments_of(raw: bytes) -> list[tuple[str | None, str, bytes]]:
    parsed = parse(raw)
    assert parsed.get_content_type() == "multipart/mixed"
    return [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in parsed.iter_attachments()]


def both(store: HttpsStore) -> list[tuple[str, str, str]]:
    return [
        ("vedtak.pdf", "application/pdf", store.url(f"/files/vedtak.pdf{SAS}")),
        ("Beløp 2025.csv", "text/csv", store.url(f"/files/tall.csv{SAS}")),
    ]


EXPECTED = [("vedtak.pdf", "application/pdf", PDF), ("Beløp 2025.csv", "text/csv", CSV)]


async def test_the_outbox_eml_carries_the_attachments(make: Make, store: HttpsStore, settings: Settings) -> None:
    varsel = make()
    order_id = await order(varsel, *both(store))
    assert store.requests == []  # nothing is fetched at intake
    await varsel.workers.drain()
    [raw] = outbox(settings)
    assert attachments_of(raw) == EXPECTED
    assert (await notification(varsel)).status == "Delivered"
    assert await order_status(varsel, order_id) == "Completed"


class Relay:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: ServerSession, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.received.append(envelope.content)
        return "250 2.0.0 queued"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


async def test_the_smtp_relay_receives_the_attachments(make: Make, store: HttpsStore, relay: tuple[Relay, int]) -> None:
    smtp = SmtpEmailProvider(
        SmtpSettings(host="127.0.0.1", port=relay[1], security="none", timeout_seconds=5, local_hostname="varsel.test")
    )
    varsel = make(email_provider=smtp)
    await order(varsel, *both(store))
    await varsel.workers.drain()
    [raw] = relay[0].received
    assert attachments_of(raw) == EXPECTED
    assert (await notification(varsel)).status == "Succeeded"


async def test_acs_receives_the_attachments(make: Make, store: HttpsStore) -> None:
    async with AcsPeer() as peer:
        settings = AcsSettings(
            connection_string=SecretStr(peer.connection_string), poll_interval_seconds=0.01, poll_max_seconds=2
        )
        # ACS checks its request's date against the real time: the adapter signs with the system clock.
        varsel = make(email_provider=AcsEmailProvider(settings, SystemClock()))
        await order(varsel, *both(store))
        await varsel.workers.drain()
        [sent] = peer.emails
    assert [
        (a["name"], a["contentType"], base64.b64decode(a["contentInBase64"])) for a in sent.body["attachments"]
    ] == EXPECTED
    assert (await notification(varsel)).status == "Succeeded"


async def test_a_404_from_the_store_fails_the_email_as_an_invalid_sas_url(
    make: Make, store: HttpsStore, settings: Settings
) -> None:
    varsel = make()
    order_id = await order(
        varsel, both(store)[0], ("borte.pdf", "application/pdf", store.url(f"/files/borte.pdf{SAS}"))
    )
    await varsel.workers.drain()
    row = await notification(varsel)
    assert row.status == "Failed_InvalidSasUrl"
    assert "'borte.pdf'" in row.status_detail
    assert "HTTP 404" in row.status_detail
    assert "S3CRET" not in row.status_detail
    assert "sig=" not in row.status_detail
    assert outbox(settings) == []
    assert await order_status(varsel, order_id) == "Completed"


async def test_attachments_over_the_cap_fail_the_email_without_reading_it_all(
    make: Make, store: HttpsStore, settings: Settings
) -> None:
    varsel = make()
    await order(varsel, ("stor.pdf", "application/pdf", store.url(f"/stream{SAS}")))
    await varsel.workers.drain()
    row = await notification(varsel)
    assert row.status == "Failed_PayloadTooLarge"
    assert "S3CRET" not in row.status_detail
    # 1 MiB allowed, 64 MiB offered: the store got to write only what the socket buffers took before the client left.
    assert store.stream_written * CHUNK < 16 * 1024 * 1024
    assert outbox(settings) == []


async def test_a_503_is_retried_after_the_retry_delay_and_then_sent(
    make: Make, store: HttpsStore, settings: Settings, clock: FrozenClock
) -> None:
    varsel = make()
    store.fail_first["vedtak.pdf"] = 1
    await order(varsel, *both(store))
    await varsel.workers.drain()
    row = await notification(varsel)
    assert row.status == "New"
    assert "HTTP 503" in row.status_detail
    assert "S3CRET" not in row.status_detail
    assert row.send_after > clock.now()
    assert outbox(settings) == []
    # The store's failure is not the provider's: the breaker (opened by one failure here) stays closed.
    assert varsel.workers.email_provider.blocked_for() == 0
    fetched = len(store.requests)
    await varsel.workers.drain()  # not due yet: nothing is fetched again
    assert len(store.requests) == fetched
    clock.set(row.send_after + timedelta(seconds=1))
    await varsel.workers.drain()
    [raw] = outbox(settings)
    assert attachments_of(raw) == EXPECTED
    assert (await notification(varsel)).status == "Delivered"


async def test_a_store_host_resolving_to_a_private_address_is_refused(
    make: Make, store: HttpsStore, settings: Settings
) -> None:
    resolver = Resolver({"files.store.example": ["10.20.30.40"], "konto.blob.core.windows.net": ["127.0.0.1"]})
    varsel = make(resolver=resolver)
    await order(varsel, ("vedtak.pdf", "application/pdf", f"https://konto.blob.core.windows.net/c/vedtak.pdf{SAS}"))
    await varsel.workers.drain()
    row = await notification(varsel)
    assert row.status == "Failed_InvalidSasUrl"
    assert "not public" in row.status_detail
    assert "S3CRET" not in row.status_detail
    assert resolver.asked == ["konto.blob.core.windows.net"]
    assert outbox(settings) == []


async def test_a_redirect_to_a_private_address_is_refused(make: Make, store: HttpsStore, settings: Settings) -> None:
    resolver = Resolver({"files.store.example": ["10.20.30.40"]})
    varsel = make(resolver=resolver)
    target = "https://files.store.example/internal/secret.pdf"
    await order(varsel, ("vedtak.pdf", "application/pdf", store.url(f"/redirect?to={target}")))
    await varsel.workers.drain()
    row = await notification(varsel)
    assert row.status == "Failed_InvalidSasUrl"
    assert resolver.asked == ["files.store.example"]
    assert [path for path, _ in store.requests] == [f"/redirect?to={target}"]


class CountingProvider:
    """An email provider that takes its time and notes how many emails with attachments it held at once."""

    name = "counting"

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.holding = 0
        self.most = 0
        self.plain_at_once = 0
        self._plain = 0

    async def send(self, message: Any) -> Any:
        with_attachments = bool(message.attachments)
        if with_attachments:
            self.holding += 1
            self.most = max(self.most, self.holding)
        else:
            self._plain += 1
            self.plain_at_once = max(self.plain_at_once, self._plain)
        try:
            await asyncio.sleep(self.delay)
        finally:
            if with_attachments:
                self.holding -= 1
            else:
                self._plain -= 1
        return Accepted(reference=str(message.notification_id))

    async def close(self) -> None:
        pass


async def test_only_so_many_emails_hold_their_attachments_at_once(
    settings: Settings, database: Database, clock: FrozenClock, tls: TlsFiles, store: HttpsStore
) -> None:
    """A sender's concurrency (50) times 10 MiB of attachments each would be half a gigabyte held: emails with
    attachments take turns by settings.attachments.max_concurrent_emails; plain ones do not wait for them."""
    limited = settings.model_copy(
        update={"attachments": settings.attachments.model_copy(update={"max_concurrent_emails": 2})}
    )
    provider = CountingProvider()
    fetcher = AttachmentFetcher(limited.attachments, verify=tls.client_context())
    varsel = build(limited, clock=clock, database=database, email_provider=provider, attachments=fetcher)
    try:
        for _ in range(6):
            await order(varsel, *both(store))
        for _ in range(6):
            await order(varsel)
        await varsel.workers.drain()
        assert provider.most == 2
        assert provider.plain_at_once > 2
        async with varsel.database.read() as conn:
            statuses = (await conn.execute(select(email_notifications.c.status))).scalars().all()
        assert sorted(set(statuses)) == ["Succeeded"]
    finally:
        await varsel.http.aclose()


def test_an_attachment_fetch_ends_within_half_the_senders_lease() -> None:
    # A fetch outlasting the lease would let another worker take the email over and send it a second time.
    assert AttachmentFetcher(AttachmentSettings(timeout_seconds=60), lease_seconds=10).timeout == 5
    assert AttachmentFetcher(AttachmentSettings(timeout_seconds=30), lease_seconds=120).timeout == 30


async def test_an_email_that_finds_no_room_within_a_quarter_of_its_lease_is_given_back_unsent(
    settings: Settings, database: Database, clock: FrozenClock, tls: TlsFiles, store: HttpsStore
) -> None:
    """Waiting for room longer than its lease would let another worker take the email over and send it twice: it
    goes back to New, unsent and uncounted, and the next round sends it."""
    limited = settings.model_copy(
        update={
            "attachments": settings.attachments.model_copy(update={"max_concurrent_emails": 1}),
            "dispatch": settings.dispatch.model_copy(update={"lease_seconds": 2}),
        }
    )
    provider = CountingProvider(delay=1.0)
    fetcher = AttachmentFetcher(limited.attachments, verify=tls.client_context())
    varsel = build(limited, clock=clock, database=database, email_provider=provider, attachments=fetcher)
    try:
        for _ in range(2):
            await order(varsel, *both(store))
        assert await varsel.workers.processor.run_once() == 2
        assert await varsel.workers.email.run_once() == 2
        async with varsel.database.read() as conn:
            rows = (await conn.execute(select(email_notifications))).all()
        assert sorted((row.status, row.attempts) for row in rows) == [("New", 0), ("Succeeded", 1)]
        assert await varsel.workers.email.run_once() == 1
        async with varsel.database.read() as conn:
            statuses = (await conn.execute(select(email_notifications.c.status))).scalars().all()
        assert statuses == ["Succeeded", "Succeeded"]
        assert provider.most == 1
    finally:
        await varsel.http.aclose()
