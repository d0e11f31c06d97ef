"""Every email provider sends a composed email's attachments: SMTP (to aiosmtpd) and the outbox as MIME parts of a
multipart/mixed message, ACS in its documented JSON. Each is parsed back here as a mail client (or ACS) reads it."""

from __future__ import annotations

import base64
import email
import email.policy
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage as ParsedMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as ServerSession
from aiosmtpd.smtp import Envelope, Session
from pydantic import SecretStr

from tests.providers.acs_peer import AcsPeer
from varsel.clock import SystemClock
from varsel.notifications.statuses import EmailStatus
from varsel.orders.vocabulary import EmailContentType
from varsel.providers import mime
from varsel.providers.acs import AcsEmailProvider, AcsSettings
from varsel.providers.base import Attachment, EmailMessage, EmailRefused, PermanentEmailError
from varsel.providers.outbox import OutboxEmailProvider, render_eml
from varsel.providers.smtp import SmtpEmailProvider, SmtpSettings

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 300
ATTACHMENTS = (
    Attachment("vedtak.pdf", "application/pdf", PDF),
    Attachment("Årsoppgjør 2025 – «endelig».xlsx", "application/vnd.ms-excel", b"PK\x03\x04" + bytes(5000)),  # noqa: RUF001
    # A name that tries to end the header line and add one of its own.
    Attachment('x.txt"\r\nBcc: victim@example.com\r\nX: "', "text/plain", b"plain text\r\n"),
    Attachment("n" * 200 + ".csv", "text/csv", b"a;b\r\n1;2\r\n"),
    Attachment("empty.txt", "text/plain", b""),
)


def composed(*attachments: Attachment, content_type: EmailContentType = EmailContentType.PLAIN) -> EmailMessage:
    return EmailMessage(
        notification_id=uuid.uuid4(),
        from_address="noreply@varsel.example.no",
        to_address="kari.nordmann@example.no",
        subject="Vedtak i saken din",
        body="Hei Kari,\n\nvedtaket ligger vedlagt.\n" if content_type is EmailContentType.PLAIN else "<p>Hei</p>",
        content_type=content_type,
        attachments=attachments,
    )


def parse(raw: bytes) -> ParsedMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, ParsedMessage)
    return parsed


def assert_carries(parsed: ParsedMessage, attachments: tuple[Attachment, ...], body: str) -> None:
    assert parsed.get_content_type() == "multipart/mixed"
    assert parsed.defects == []
    assert "Bcc" not in parsed
    main = parsed.get_body(preferencelist=("plain",))
    assert main is not None
    assert main.get_content().replace("\r\n", "\n") == body
    found = list(parsed.iter_attachments())
    assert [(part.get_filename(), part.get_content_type()) for part in found] == [
        (a.filename, a.mime_type) for a in attachments
    ]
    for part, attachment in zip(found, attachments, strict=True):
        assert part.get_content_disposition() == "attachment"
        assert part.get_payload(decode=True) == attachment.content
        assert "Bcc" not in part


# ---------------------------------------------------------------- SMTP


class Relay:
    def __init__(self, data_reply: str | None = None) -> None:
        self.data_reply = data_reply
        self.received: list[bytes] = []

    async def handle_DATA(self, server: ServerSession, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        assert isinstance(envelope.content, bytes)
        self.received.append(envelope.content)
        return "250 2.0.0 queued"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=50 * 1024 * 1024)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
async def smtp(relay: tuple[Relay, int]) -> AsyncIterator[SmtpEmailProvider]:
    provider = SmtpEmailProvider(
        SmtpSettings(host="127.0.0.1", port=relay[1], security="none", timeout_seconds=5, local_hostname="varsel.test")
    )
    yield provider
    await provider.close()


async def test_smtp_sends_the_attachments_as_mime_parts(relay: tuple[Relay, int], smtp: SmtpEmailProvider) -> None:
    message = composed(*ATTACHMENTS)
    await smtp.send(message)
    [raw] = relay[0].received
    assert raw.isascii()  # 7-bit all through: base64 parts and encoded filenames
    assert_carries(parse(raw), ATTACHMENTS, message.body)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


async def test_smtp_html_with_attachments_keeps_its_alternative_inside_the_mixed(
    relay: tuple[Relay, int], smtp: SmtpEmailProvider
) -> None:
    await smtp.send(composed(ATTACHMENTS[0], content_type=EmailContentType.HTML))
    parsed = parse(relay[0].received[0])
    assert [part.get_content_type() for part in parsed.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]
    [part] = parsed.iter_attachments()
    assert part.get_payload(decode=True) == PDF


async def test_smtp_without_attachments_stays_a_single_part(relay: tuple[Relay, int], smtp: SmtpEmailProvider) -> None:
    await smtp.send(composed())
    parsed = parse(relay[0].received[0])
    assert parsed.get_content_type() == "text/plain"
    assert b"multipart" not in relay[0].received[0]


@pytest.mark.parametrize("reply", ["552 5.3.4 Message size exceeds fixed limit", "552 5.2.3 Message too long"])
async def test_a_relay_refusing_the_size_fails_the_email_as_too_large(
    relay: tuple[Relay, int], smtp: SmtpEmailProvider, reply: str
) -> None:
    relay[0].data_reply = reply
    with pytest.raises(PermanentEmailError) as raised:
        await smtp.send(composed(*ATTACHMENTS))
    assert raised.value.status is EmailStatus.FAILED_PAYLOAD_TOO_LARGE


async def test_a_relay_refusing_the_size_of_an_email_without_attachments_is_plain_failed(
    relay: tuple[Relay, int], smtp: SmtpEmailProvider
) -> None:
    relay[0].data_reply = "552 5.3.4 Message size exceeds fixed limit"
    with pytest.raises(PermanentEmailError) as raised:
        await smtp.send(composed())
    assert raised.value.status is EmailStatus.FAILED


async def test_a_relay_refusing_for_another_reason_is_still_failed(
    relay: tuple[Relay, int], smtp: SmtpEmailProvider
) -> None:
    relay[0].data_reply = "554 5.7.1 Rejected by policy"
    with pytest.raises(PermanentEmailError) as raised:
        await smtp.send(composed(*ATTACHMENTS))
    assert raised.value.status is EmailStatus.FAILED


# ---------------------------------------------------------------- the outbox


async def test_the_outbox_eml_shows_the_attachments(tmp_path: Path) -> None:
    message = composed(*ATTACHMENTS)
    await OutboxEmailProvider(tmp_path).send(message)
    raw = (tmp_path / "email" / f"{message.notification_id}.eml").read_bytes()
    assert_carries(parse(raw), ATTACHMENTS, message.body)


def test_the_outbox_without_attachments_is_as_before() -> None:
    assert b"multipart" not in render_eml(composed())


# ---------------------------------------------------------------- ACS


@pytest.fixture
async def acs() -> AsyncIterator[tuple[AcsPeer, AcsEmailProvider]]:
    async with AcsPeer() as peer:
        settings: dict[str, Any] = {
            "connection_string": SecretStr(peer.connection_string),
            "timeout_seconds": 5.0,
            "poll_interval_seconds": 0.01,
            "poll_max_seconds": 2.0,
        }
        provider = AcsEmailProvider(AcsSettings(**settings), SystemClock())
        yield peer, provider
        await provider.close()


async def test_acs_gets_the_attachments_in_its_json(acs: tuple[AcsPeer, AcsEmailProvider]) -> None:
    peer, provider = acs
    await provider.send(composed(*ATTACHMENTS))
    [sent] = peer.emails
    assert [{**a, "contentInBase64": base64.b64decode(a["contentInBase64"])} for a in sent.body["attachments"]] == [
        {"name": a.filename, "contentType": a.mime_type, "contentInBase64": a.content} for a in ATTACHMENTS
    ]


async def test_acs_without_attachments_sends_no_attachments_field(acs: tuple[AcsPeer, AcsEmailProvider]) -> None:
    peer, provider = acs
    await provider.send(composed())
    assert "attachments" not in peer.emails[0].body


async def test_acs_413_fails_an_email_with_attachments_as_too_large(acs: tuple[AcsPeer, AcsEmailProvider]) -> None:
    peer, provider = acs
    peer.answer_next(413, code="RequestEntityTooLarge", message="The request is too large.")
    with pytest.raises(PermanentEmailError) as raised:
        await provider.send(composed(*ATTACHMENTS))
    assert raised.value.status is EmailStatus.FAILED_PAYLOAD_TOO_LARGE


# ---------------------------------------------------------------- the parts themselves


@pytest.mark.parametrize("mime_type", ["application/pdf\r\nBcc: x@example.com", "pdf", "text/plain; charset=x", ""])
def test_a_mime_type_that_is_not_type_slash_subtype_is_refused(mime_type: str) -> None:
    with pytest.raises(EmailRefused):
        mime.attachment_part(Attachment("a.pdf", mime_type, b"x"))


@pytest.mark.parametrize(
    "filename",
    [
        "plain.pdf",
        "=?utf-8?q?other=2Epdf?=",  # plain ASCII, but a reader would decode it as an encoded word
        'quote"and\\backslash.txt',
        "tab\tand\x00nul.txt",
        "日本語のファイル名" * 8 + ".txt",
        "\ud800lone-surrogate.txt",
    ],
)
def test_filenames_come_back_as_given(filename: str) -> None:
    attachment = Attachment(filename, "text/plain", b"x")
    if not filename.isascii() and any("\ud800" <= c <= "\udfff" for c in filename):
        with pytest.raises(EmailRefused):
            mime.attachment_part(attachment)
        return
    raw = render_eml(composed(attachment))
    [part] = parse(raw).iter_attachments()
    assert part.get_filename() == filename
