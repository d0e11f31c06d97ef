"""Email through an SMTP relay, over a small pool of reused connections.

Delivery is at least once, never at most once. When the connection drops after we sent DATA and the message, or
the relay's final reply never arrives within the timeout, we cannot know whether the relay queued the message:
it may have written it to disk and lost the connection before its "250" reached us. We still report that as a
transient failure, so the message is sent again later and may arrive twice. A duplicate is a nuisance; a lost
notification (a deadline, a decision, a one-time code) is a real harm, and a receiver that cares can recognise the
copy by its Message-ID, which is derived from the notification id and so stays the same on every attempt.

A connection the relay closed while it sat idle in the pool is not a failure: when the first command on a reused
connection finds it gone (or gets the relay's "421 idle timeout"), nothing of the message has been sent yet, so the
message goes out once more on a fresh connection, within the same call.
"""

from __future__ import annotations

import asyncio
import binascii
import re
import socket
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from html.parser import HTMLParser
from typing import Literal, NoReturn

import aiosmtplib
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from varsel.notifications.statuses import EmailStatus
from varsel.orders.vocabulary import EmailContentType
from varsel.providers import mime
from varsel.providers.base import Accepted, EmailMessage, EmailRefused, PermanentEmailError, TransientProviderError
from varsel.providers.outbox import message_id


class SmtpSettings(BaseModel):
    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    # "tls" is implicit TLS from the first byte (usually port 465); "starttls" upgrades a plain connection and
    # refuses to go on if the relay does not offer it, so a misconfigured relay never gets passwords in clear.
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = Field(default=30, gt=0)
    # The most SMTP sessions open at once; each carries many messages, one after another.
    connections: int = Field(default=10, ge=1)
    validate_certs: bool = True
    # Trusted in addition to the system's CAs, for a relay with a private CA.
    ca_file: str | None = None
    local_hostname: str | None = None

    @field_validator("local_hostname")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        # It goes on the EHLO line: anything that could end that line or add a parameter is refused up front.
        if value is not None and (
            not value.strip() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value.strip())
        ):
            raise ValueError("local_hostname must be a single host name")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password for SMTP AUTH, or neither")
        return self


class SmtpEmailProvider:
    """Sends each message as its own SMTP transaction (one recipient) on a pooled connection.

    `send` returns `Accepted(reference=<the Message-ID without its angle brackets>, delivered=False)`: the relay took
    the message, and SMTP says no more than that. Raises TransientProviderError or PermanentEmailError as the module
    documentation and `_raise_mapped` describe; a message that cannot even be written (an unparseable address) is a
    PermanentEmailError before any connection is made.
    """

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        # Built once here: a bad ca_file stops the service at startup, not at the first send.
        self._tls_context = _tls_context(settings) if settings.security != "none" else None
        self._slots = asyncio.Semaphore(settings.connections)
        # Only connections nobody is using. Together with those in use they never outnumber the slots, because a
        # new connection is made only by a slot holder who found this list empty.
        self._idle: list[aiosmtplib.SMTP] = []
        self._local_hostname = settings.local_hostname
        self._closed = False

    async def send(self, message: EmailMessage) -> Accepted:
        if self._closed:
            raise TransientProviderError("the SMTP provider is closed")
        # Encoding megabytes of attachments takes milliseconds: off the event loop.
        envelope = await asyncio.to_thread(_envelope, message) if message.attachments else _envelope(message)
        async with self._slots:
            client = self._take_idle()
            if client is not None:
                try:
                    await self._transaction(client, envelope, reused=True)
                except _StaleConnection:
                    pass
                else:
                    return envelope.accepted
            client = await self._connect()
            await self._transaction(client, envelope, reused=False)
            return envelope.accepted

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(client) for client in idle))

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            # The most recently used first: the likeliest to be still open, and the rest may time out unused.
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return None

    def _put_back(self, client: aiosmtplib.SMTP) -> None:
        if self._closed or not client.is_connected:
            client.close()
        else:
            self._idle.append(client)

    async def _connect(self) -> aiosmtplib.SMTP:
        settings = self._settings
        if self._local_hostname is None:
            # aiosmtplib would look this up for every connection; one lookup is enough.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password is not None else None,
            local_hostname=self._local_hostname,
            timeout=settings.timeout_seconds,
            use_tls=settings.security == "tls",
            start_tls=settings.security == "starttls",
            tls_context=self._tls_context,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                # The MAIL options depend on the extensions the relay lists in its EHLO answer.
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except BaseException as error:
            client.close()
            if isinstance(error, aiosmtplib.SMTPException | OSError):
                _raise_mapped(error, _Stage.CONNECT, self._settings)
            raise
        return client

    async def _transaction(self, client: aiosmtplib.SMTP, envelope: _Envelope, *, reused: bool) -> None:
        stage = _Stage.MAIL
        keep = False
        try:
            options = _mail_options(client, envelope)
            await client.mail(envelope.sender, options=options, encoding=envelope.encoding)
            stage = _Stage.RCPT
            await client.rcpt(envelope.recipient, encoding=envelope.encoding)
            stage = _Stage.DATA
            await client.data(envelope.payload)
            keep = True
        except (aiosmtplib.SMTPException, OSError, ValueError) as error:
            if reused and stage is _Stage.MAIL and _is_stale(error):
                raise _StaleConnection from error
            if isinstance(error, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPNotSupported | ValueError):
                # A refusal leaves the session in step; RSET clears the envelope so the next message starts clean.
                keep = await _reset(client)
            _raise_mapped(error, stage, self._settings, envelope.attachments)
        finally:
            # Also on cancellation: a session interrupted mid-command is out of step and must not be reused.
            if keep:
                self._put_back(client)
            else:
                client.close()


# ---------------------------------------------------------------- the message


@dataclass(frozen=True)
class _Envelope:
    sender: str
    recipient: str
    payload: bytes
    # SMTPUTF8 is needed only for a non-ASCII local part; non-ASCII domains travel as IDNA (xn--…).
    utf8: bool
    accepted: Accepted
    # A relay's "too big" ends an email with attachments as Failed_PayloadTooLarge, whose description speaks of them.
    attachments: bool = False

    @property
    def encoding(self) -> str:
        return "utf-8" if self.utf8 else "ascii"


def _envelope(message: EmailMessage) -> _Envelope:
    """The message as it goes on the wire: varsel's header block (providers.mime) and a 7-bit body.

    Composed directly rather than by the email package, whose header machinery costs over a millisecond a message
    (more than everything else in sending one) and decodes encoded words in what it is given; test_smtp compares
    what a mail client reads from it with the email package's own composition.
    """
    sender = mime.mailbox(message.from_address, "from", EmailStatus.FAILED)
    recipient = mime.mailbox(message.to_address, "to", EmailStatus.FAILED_INVALID_EMAIL_FORMAT)
    ident = message_id(message.notification_id)
    head = mime.header_block(
        sender=sender,
        recipient=recipient,
        subject=message.subject,
        message_id=ident,
        date=datetime.now(UTC),
    )
    try:
        body = mime.with_attachments(_body(message), message.attachments)
    except UnicodeEncodeError as error:
        raise EmailRefused(f"the body cannot be written as UTF-8: {error}") from error
    return _Envelope(
        sender=sender.addr_spec,
        recipient=recipient.addr_spec,
        payload=head + body,
        utf8=sender.utf8 or recipient.utf8,
        accepted=Accepted(reference=ident.strip("<>"), delivered=False),
        attachments=bool(message.attachments),
    )


def _body(message: EmailMessage) -> bytes:
    if message.content_type is not EmailContentType.HTML:
        return _text_part(message.body, "plain")
    boundary = f"=_varsel_{uuid.uuid4().hex}"
    return b"".join(
        (
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii"),
            f"--{boundary}\r\n".encode("ascii"),
            _text_part(html_to_text(message.body), "plain"),
            f"\r\n--{boundary}\r\n".encode("ascii"),
            _text_part(message.body, "html"),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )


def _text_part(text: str, subtype: str) -> bytes:
    """Headers and quoted-printable body of one text part: 7-bit, so any relay takes it, lines within 76."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    if not lines.endswith("\n"):
        lines += "\n"
    encoded = binascii.b2a_qp(lines.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    ).encode("ascii") + encoded


def _mail_options(client: aiosmtplib.SMTP, envelope: _Envelope) -> list[str]:
    options = []
    if client.supports_extension("size"):
        options.append(f"SIZE={len(envelope.payload)}")
    if envelope.utf8:
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported(
                f"the relay does not support SMTPUTF8, needed for {envelope.sender} → {envelope.recipient}"
            )
        options.append("SMTPUTF8")
        if client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
    return options


# ---------------------------------------------------------------- HTML to text


class _TextExtractor(HTMLParser):
    # The line breaks around each block, before and after: 2 leaves a blank line, as between paragraphs.
    _BLOCKS: dict[str, int] = {
        **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre"), 2),
        **dict.fromkeys(("div", "li", "tr", "section", "article", "header", "footer", "hr", "dl", "dt", "dd"), 1),
    }
    _SKIPPED = frozenset({"script", "style", "title", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._pending_newlines = 0
        self._skip_depth = 0
        self._pre_depth = 0
        self._links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skip_depth += 1
        elif self._skip_depth:
            return
        elif tag == "br":
            self._out.append("\n")
        elif tag in self._BLOCKS:
            self._break(self._BLOCKS[tag])
            if tag == "pre":
                self._pre_depth += 1
            elif tag == "li":
                self._text("- ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self._out)))
        elif tag in ("td", "th"):
            self._text(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif self._skip_depth:
            return
        elif tag in self._BLOCKS:
            self._break(self._BLOCKS[tag])
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            # A plain-text reader cannot click; keep where the link goes unless the text already says it.
            if href and href.startswith(("http://", "https://")) and href not in "".join(self._out[start:]):
                self._text(f" ({href})")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self._text(data)
            return
        # Outside <pre>, HTML renders any run of whitespace (line breaks too) as one space, and none at a line start.
        collapsed = re.sub(r"[ \t\r\n\f]+", " ", data)
        if self._pending_newlines or not self._out or self._out[-1].endswith((" ", "\n")):
            collapsed = collapsed.lstrip(" ")
        if collapsed:
            self._text(collapsed)

    def _break(self, newlines: int) -> None:
        if self._out:
            self._pending_newlines = max(self._pending_newlines, newlines)

    def _text(self, text: str) -> None:
        if self._pending_newlines:
            self._out.append("\n" * self._pending_newlines)
            self._pending_newlines = 0
        self._out.append(text)

    def text(self) -> str:
        lines = (line.rstrip() for line in "".join(self._out).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def html_to_text(html: str) -> str:
    """The text/plain alternative of an HTML body: what a reader would see, without markup, scripts or styles."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


# ---------------------------------------------------------------- errors


class _Stage(StrEnum):
    CONNECT = "connect"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"


class _StaleConnection(Exception):
    """The pooled connection was gone before the relay took anything: send again on a new one."""


_CONFIGURATION_REPLIES = frozenset({530, 534, 535, 538})
_ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


def _is_stale(error: BaseException) -> bool:
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return error.code == 421
    return isinstance(error, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError | ConnectionError)


async def _reset(client: aiosmtplib.SMTP) -> bool:
    if not client.is_connected:
        return False
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit(timeout=min(5.0, client.timeout or 5.0))
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


def _raise_mapped(error: BaseException, stage: _Stage, settings: SmtpSettings, attachments: bool = False) -> NoReturn:
    relay = f"{settings.host}:{settings.port}"
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused) and error.recipients:
        # One recipient per message: the first refusal is the one.
        error, stage = error.recipients[0], _Stage.RCPT
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        # The operator's credentials, not the recipient: nothing may be marked failed while they are fixed.
        raise TransientProviderError(
            f"the SMTP relay {relay} refused our login ({error.code} {error.message}): "
            "check the SMTP username and password"
        ) from error
    if isinstance(error, aiosmtplib.SMTPResponseException) and error.code in _CONFIGURATION_REPLIES:
        # 530 (authentication or STARTTLS required), 534, 538: the relay wants other settings, whatever the message.
        raise TransientProviderError(
            f"the SMTP relay {relay} requires other security or login settings at {stage}: "
            f"{error.code} {error.message}; check the SMTP security, username and password"
        ) from error
    if isinstance(error, aiosmtplib.SMTPResponseException):
        reply = f"{error.code} {error.message}".strip()
        if stage is _Stage.CONNECT:
            # Refused before any message was named (greeting, EHLO, STARTTLS): about the relay, not this message.
            raise TransientProviderError(f"the SMTP relay {relay} refused the session: {reply}") from error
        if 500 <= error.code < 600:
            status = EmailStatus.FAILED
            if _names_bad_recipient(error.message, stage):
                status = EmailStatus.FAILED_INVALID_EMAIL_FORMAT
            elif attachments and _names_too_large(error.code, error.message, stage):
                status = EmailStatus.FAILED_PAYLOAD_TOO_LARGE
            raise PermanentEmailError(f"the SMTP relay rejected the message at {stage}: {reply}", status) from error
        if 400 <= error.code < 500:
            raise TransientProviderError(f"the SMTP relay deferred the message at {stage}: {reply}") from error
        raise TransientProviderError(f"unexpected reply from the SMTP relay at {stage}: {reply}") from error
    # Before ValueError: a certificate that fails verification is one (ssl.SSLCertVerificationError). Only at
    # connect, where the handshake happens; later a TLS error is just how a dropped connection shows.
    tls_error = _tls_cause(error) if stage is _Stage.CONNECT else None
    if tls_error is not None:
        hint = " (trust its CA with ca_file)" if isinstance(tls_error, ssl.SSLCertVerificationError) else ""
        raise TransientProviderError(f"TLS with the SMTP relay {relay} failed{hint}: {tls_error}") from error
    if isinstance(error, ValueError):
        status = EmailStatus.FAILED_INVALID_EMAIL_FORMAT if stage is _Stage.RCPT else EmailStatus.FAILED
        raise PermanentEmailError(f"the address cannot be sent at {stage}: {error}", status) from error
    if isinstance(error, aiosmtplib.SMTPNotSupported) and stage is not _Stage.CONNECT:
        raise PermanentEmailError(str(error), EmailStatus.FAILED) from error
    if stage is _Stage.DATA and isinstance(error, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPTimeoutError):
        raise TransientProviderError(
            f"the SMTP relay {relay} went away during DATA ({error}): it may have taken the message, "
            "so a retry may deliver it twice"
        ) from error
    if isinstance(error, aiosmtplib.SMTPTimeoutError | TimeoutError):
        raise TransientProviderError(
            f"the SMTP relay {relay} did not answer within {settings.timeout_seconds:g}s at {stage}: {error}"
        ) from error
    if isinstance(error, aiosmtplib.SMTPServerDisconnected):
        raise TransientProviderError(f"the SMTP relay {relay} closed the connection at {stage}: {error}") from error
    if isinstance(error, aiosmtplib.SMTPConnectError):
        raise TransientProviderError(f"could not connect to the SMTP relay: {error}") from error
    raise TransientProviderError(f"SMTP with {relay} failed at {stage}: {error}") from error


def _names_bad_recipient(text: str, stage: _Stage) -> bool:
    match = _ENHANCED_STATUS.match(text.strip())
    if match is None or match[1] != "5" or match[2] != "1":
        return False
    # 5.1.7 and 5.1.8 are about the sender's address; after RCPT the recipient is the only address in question.
    return stage is _Stage.RCPT or (stage is _Stage.DATA and match[3] not in ("7", "8"))


def _names_too_large(code: int, text: str, stage: _Stage) -> bool:
    # 5.3.4 "message too big for system", 5.2.3 "message length exceeds administrative limit" (RFC 3463); a bare
    # 552 to MAIL is the relay refusing the SIZE we declared (RFC 1870).
    match = _ENHANCED_STATUS.match(text.strip())
    if match is not None:
        return match[1] == "5" and (match[2], match[3]) in (("3", "4"), ("2", "3"))
    return code == 552 and stage is _Stage.MAIL


def _tls_cause(error: BaseException) -> ssl.SSLError | None:
    # aiosmtplib wraps a failed implicit-TLS handshake in SMTPConnectError but lets a failed STARTTLS one through.
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=settings.ca_file)
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
