"""What every email provider sends carries exactly varsel's headers, whatever the subject, the registry's names and
the sender hold (#19): no caller text becomes a header, an encoded word or a line break. Outbox (.eml file), SMTP
against aiosmtpd with and without SMTPUTF8, and ACS (the request body its loopback peer received)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.providers.acs_peer import AcsPeer
from tests.providers.test_acs import settings_for
from tests.providers.test_smtp import Relay, free_port, parse
from tests.recipients.registry_data import load
from varsel.app import Varsel
from varsel.clock import FrozenClock, SystemClock
from varsel.db.tables import email_notifications
from varsel.notifications.statuses import EmailStatus
from varsel.orders.vocabulary import EmailContentType
from varsel.providers.acs import AcsEmailProvider
from varsel.providers.base import EmailMessage, PermanentEmailError
from varsel.providers.outbox import OutboxEmailProvider
from varsel.providers.smtp import SmtpEmailProvider, SmtpSettings
from varsel.recipients.keywords import render_subject
from varsel.settings import Settings

# Read by a mail client as "Hi", a line break and "Bcc: victim@evil.example", had varsel written it out raw.
ENCODED_SUBJECT = "=?utf-8?q?Hi=0D=0ABcc:_victim@evil.example?="
# A registry name, rendered into a subject by $recipientName$.
ENCODED_NAME = "=?utf-8?q?Kari=0D=0AX-Injected:_x?="
# Every line boundary str.splitlines() knows, U+2028 and U+2029 among them.
LINE_BOUNDARIES = "Hei\r\ndu\rder\nog\x0bså\x0cher\x1cog\x1dder\x1eog\x85så\u2028linje\u2029avsnitt"
SENDER = "noreply@varsel.example"
RECIPIENT = "kari@example.no"

# Each message varsel writes as MIME: its headers and nothing else (SMTP adds Date; a text part is quoted-printable
# over SMTP, 8-bit in the outbox).
MIME_HEADERS = ["From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
ACS_REQUEST = {"senderAddress", "content", "recipients", "userEngagementTrackingDisabled"}


def folded(subject: str) -> str:
    """The subject as every provider sends it: its lines joined by single spaces."""
    return " ".join(subject.splitlines())


def message(subject: str, *, sender: str = SENDER, to: str = RECIPIENT) -> EmailMessage:
    return EmailMessage(uuid.uuid4(), sender, to, subject, "Hei,\ndu har fått et brev.\n", EmailContentType.PLAIN)


@dataclass(frozen=True)
class Sent:
    """What a provider sent, as the receiving end reads it."""

    headers: list[str]
    subject: str
    sender: list[tuple[str, str]]  # (display name, address) of each From mailbox
    recipient: list[tuple[str, str]]
    # The SMTP envelope: MAIL FROM, RCPT TO, and whether SMTPUTF8 was asked for.
    envelope: tuple[str, list[str], bool] | None = None


def read_mime(raw: bytes) -> Sent:
    mime = parse(raw)
    assert not mime.defects
    return Sent(
        headers=list(mime.keys()),
        subject=str(mime["Subject"]),
        sender=[(a.display_name, a.addr_spec) for a in mime["From"].addresses],
        recipient=[(a.display_name, a.addr_spec) for a in mime["To"].addresses],
    )


Send = Callable[[EmailMessage], Awaitable[Sent]]


@dataclass
class Provider:
    name: str
    send: Send
    # Whether it sent anything (an attempt that failed before sending must leave no trace).
    anything_sent: Callable[[], bool]
    headers: list[str]


@pytest.fixture(params=["outbox", "smtp", "smtp-without-smtputf8", "acs"])
async def provider(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Provider]:
    name: str = request.param
    if name == "outbox":
        outbox = OutboxEmailProvider(tmp_path)

        async def send_outbox(email: EmailMessage) -> Sent:
            await outbox.send(email)
            return read_mime((tmp_path / "email" / f"{email.notification_id}.eml").read_bytes())

        yield Provider(name, send_outbox, lambda: any(tmp_path.rglob("*.eml*")), MIME_HEADERS)
        return
    if name.startswith("smtp"):
        relay = Relay()
        controller = Controller(relay, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=name == "smtp")
        controller.start()
        smtp = SmtpEmailProvider(
            SmtpSettings(
                host="127.0.0.1", port=controller.port, security="none", timeout_seconds=3, local_hostname="varsel.test"
            )
        )

        async def send_smtp(email: EmailMessage) -> Sent:
            await smtp.send(email)
            received = relay.received[-1]
            # aiosmtpd hands over non-ASCII command arguments as surrogate escapes of the UTF-8 bytes.
            unescaped = [r.encode("utf-8", "surrogateescape").decode() for r in received.rcpt_tos]
            envelope = (received.mail_from, unescaped, "SMTPUTF8" in received.mail_options)
            sent = read_mime(received.content)
            return Sent(sent.headers, sent.subject, sent.sender, sent.recipient, envelope)

        headers = [*MIME_HEADERS[:3], "Date", *MIME_HEADERS[3:]]
        try:
            yield Provider(name, send_smtp, lambda: relay.connection_count() > 0, headers)
        finally:
            await smtp.close()
            controller.stop()
        return
    async with AcsPeer() as peer:
        acs = AcsEmailProvider(settings_for(peer), SystemClock())

        async def send_acs(email: EmailMessage) -> Sent:
            await acs.send(email)
            body: dict[str, Any] = peer.emails[-1].body
            assert set(body["content"]) == {"subject", "plainText"}
            assert body["content"]["plainText"] == email.body
            [to] = body["recipients"]["to"]
            assert set(to) <= {"address", "displayName"}
            return Sent(
                headers=sorted(body),
                subject=body["content"]["subject"],
                sender=[("", body["senderAddress"])],
                recipient=[(to.get("displayName", ""), to["address"])],
            )

        try:
            yield Provider(name, send_acs, lambda: bool(peer.requests), sorted(ACS_REQUEST))
        finally:
            await acs.close()


@pytest.mark.parametrize(
    "subject",
    [
        ENCODED_SUBJECT,
        render_subject("Til $recipientName$", name=ENCODED_NAME, number=None),
        render_subject("Til $recipientName$", name=f"Kari\u2028{ENCODED_NAME}\u2029Nordmann", number=None),
        LINE_BOUNDARIES,
        "Påminnelse: =?iso-8859-1?b?QmNjOiB4QGV2aWwuZXhhbXBsZQ==?= " * 4,
    ],
    ids=["encoded-subject", "encoded-name", "name-with-separators", "line-boundaries", "long-non-ascii"],
)
async def test_a_subject_arrives_as_the_text_given_with_only_varsels_headers(provider: Provider, subject: str) -> None:
    sent = await provider.send(message(subject))

    assert sorted(sent.headers) == sorted(provider.headers)
    assert sent.subject == folded(subject)
    assert sent.sender == [("", SENDER)]
    assert sent.recipient == [("", RECIPIENT)]
    if sent.envelope is not None:
        assert sent.envelope == (SENDER, [RECIPIENT], False)


async def test_a_senders_display_name_arrives_as_the_text_given(provider: Provider) -> None:
    # Only an operator's configured sender has a display name; whatever it holds, it stays a name.
    name = "=?utf-8?q?Varsel=0D=0ABcc:_victim@evil.example?="
    sent = await provider.send(message("Hei", sender=f'"{name}" <{SENDER}>'))

    assert sorted(sent.headers) == sorted(provider.headers)
    # ACS takes no sender name with the message: it is set on the MailFrom address in Azure.
    assert sent.sender == [("" if provider.name == "acs" else name, SENDER)]
    assert sent.recipient == [("", RECIPIENT)]


@pytest.mark.parametrize("role", ["sender", "recipient"])
async def test_an_address_holding_an_encoded_word_is_refused_before_anything_is_sent(
    provider: Provider, role: str
) -> None:
    # A valid dot-atom, but readers decode it (Python's email package to "a\r\nBcc: x@evil.example", and then
    # refuses the header): it is this message's permanent failure, never the provider's.
    address = "=?utf-8?q?a=0D=0ABcc=3A_x=40evil.example?=@example.com"
    email = message("Hei", **({"sender": address} if role == "sender" else {"to": address}))

    with pytest.raises(PermanentEmailError) as raised:
        await provider.send(email)

    expected = EmailStatus.FAILED if role == "sender" else EmailStatus.FAILED_INVALID_EMAIL_FORMAT
    assert raised.value.status is expected
    assert "encoded-word" in str(raised.value)
    assert not provider.anything_sent()


@pytest.mark.parametrize("part", ["subject", "body"])
async def test_text_with_no_utf8_fails_as_the_messages_own_fault(provider: Provider, part: str) -> None:
    # A lone surrogate has no UTF-8. Intake cannot take one (JSON "\\ud800" is refused), but should a message
    # hold one, it fails for good as that message's fault: no exception the sender would retry, or count against
    # the provider.
    email = message("Hei \ud800") if part == "subject" else replace(message("Hei"), body="Hallo \udfff")

    with pytest.raises(PermanentEmailError) as raised:
        await provider.send(email)

    assert "UTF-8" in str(raised.value)
    assert not provider.anything_sent()


@pytest.mark.parametrize(
    ("to", "written", "needs_smtputf8"),
    [
        # A non-ASCII local part travels as it is: raw UTF-8 in To (RFC 6532), SMTPUTF8 on the wire.
        ("øyvind@example.no", "øyvind@example.no", True),
        # A non-ASCII domain travels as IDNA, so any relay takes it.
        ("smtp-idn@exämple.com", "smtp-idn@xn--exmple-cua.com", False),
        ("post@straße.de", "post@xn--strae-oqa.de", False),  # IDNA 2008, as intake reads it, not strasse.de
    ],
)
async def test_non_ascii_addresses(provider: Provider, to: str, written: str, needs_smtputf8: bool) -> None:
    email = message("Hei æøå", to=to)
    if provider.name == "smtp-without-smtputf8" and needs_smtputf8:
        with pytest.raises(PermanentEmailError) as raised:
            await provider.send(email)
        assert raised.value.status is EmailStatus.FAILED
        assert "SMTPUTF8" in str(raised.value)
        return

    sent = await provider.send(email)

    assert sent.recipient == [("", written)]
    assert sent.subject == "Hei æøå"
    if sent.envelope is not None:
        assert sent.envelope == (SENDER, [written], needs_smtputf8)


async def test_an_outbox_file_with_a_non_ascii_local_part_is_utf8_and_has_no_encoded_word_in_an_address(
    tmp_path: Path,
) -> None:
    email = message("Hei", to="øyvind@example.no")
    await OutboxEmailProvider(tmp_path).send(email)

    raw = (tmp_path / "email" / f"{email.notification_id}.eml").read_bytes()
    assert "To: øyvind@example.no\r\n".encode() in raw
    assert b"=?" not in raw.split(b"\r\nSubject:")[0]


# ---------------------------------------------------------------- through the API and the pipeline

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]


def _outbox(settings: Settings) -> list[Sent]:
    return [read_mime(path.read_bytes()) for path in (settings.data_dir / "outbox" / "email").glob("*.eml")]


async def test_an_accepted_subject_with_line_and_paragraph_separators_is_sent(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    # Accepted (202), then the outbox raised on every attempt until the notification expired, and v1 showed the
    # order Completed. Now every provider sends the subject on one line.
    await load(varsel.database, clock, [
        {"kind": "person", "nationalIdentityNumber": "01017012345", "name": f"Kari\u2028{ENCODED_NAME}",
         "emailAddress": "kari@example.com"},
    ])  # fmt: skip
    orders = [
        {"subject": "Hei\u2028du\u2029der", "body": "Hallo", "recipients": [{"emailAddress": "ola@example.com"}]},
        {
            "subject": f"{ENCODED_SUBJECT} til $recipientName$",
            "body": "Hallo $recipientName$",
            "recipients": [{"nationalIdentityNumber": "01017012345"}],
        },
    ]
    ids = []
    for order in orders:
        response = await client.post(f"{V1}/orders/email", json=order, headers=auth())
        assert response.status_code == 202, response.text
        ids.append(response.json()["orderId"])

    await varsel.workers.drain()

    async with varsel.database.read() as conn:
        statuses = sorted(
            (await conn.execute(email_notifications.select())).mappings(), key=lambda r: r["email_address"]
        )
    assert [(row["email_address"], row["status"]) for row in statuses] == [
        ("kari@example.com", "Delivered"),
        ("ola@example.com", "Delivered"),
    ]
    sent = sorted(_outbox(settings), key=lambda s: s.recipient)
    assert [(s.recipient, s.subject) for s in sent] == [
        ([("", "kari@example.com")], f"{ENCODED_SUBJECT} til Kari {ENCODED_NAME}"),
        ([("", "ola@example.com")], "Hei du der"),
    ]
    assert all(sorted(s.headers) == sorted(MIME_HEADERS) for s in sent)
    for order_id in ids:
        status = (await client.get(f"{V1}/orders/{order_id}/status", headers=auth())).json()
        assert status["processingStatus"]["status"] == "Completed"


@pytest.mark.parametrize(
    ("order", "field"),
    [
        ({"fromAddress": "=?utf-8?q?a=0D=0ABcc=3A_x=40evil.example?=@example.com"}, "FromAddress"),
        (
            {"recipients": [{"emailAddress": "=?utf-8?q?a=0D=0ABcc=3A_x=40evil.example?=@example.com"}]},
            "Recipients[0].EmailAddress",
        ),
    ],
)
async def test_an_address_holding_an_encoded_word_is_refused_at_intake(
    client: httpx.AsyncClient, auth: Auth, order: dict[str, Any], field: str
) -> None:
    body = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": "ola@example.com"}], **order}

    response = await client.post(f"{V1}/orders/email", json=body, headers=auth())

    assert response.status_code == 400, response.text
    assert response.json()["errors"] == {field: ["Invalid email address format."]}
