"""The header block of every email varsel sends, written by varsel itself from the caller's text.

Python's email package decodes encoded words (RFC 2047, ``=?utf-8?q?…?=``) when a header is set, and writes the
decoded text out raw: a subject or a registry name reading ``=?utf-8?q?Hi=0D=0ABcc:_x@evil.example?=`` became a real
``Bcc`` line. Here no caller text is ever parsed as a header. A subject is one line (``subject_line``) and is written
as it is only when it is short printable ASCII that no reader can take for an encoded word; anything else is encoded
here, so that a reader decodes it to exactly the text given. An address is written as its addr-spec, with the domain
in IDNA (``xn--``) form; its local part as it is (raw UTF-8 when not ASCII, as RFC 6532 allows and SMTPUTF8
carries), never as an encoded word, which RFC 2047 forbids there. A display name (only an operator's configured
sender has one) is plain words, a quoted string, or (non-ASCII in an ASCII message) encoded words.

The SMTP and outbox providers take their headers from ``header_block``; ACS, which builds the message itself, gets
the same one-line subject and addresses (``subject_line``, ``mailbox``). A message that cannot be written this way
fails as that message's own PermanentEmailError, before any provider is called.

A composed email's attachments (``with_attachments``) make the body multipart/mixed: the body part as it was, then one
part per attachment, its Content-Type the MIME type given (only if it is a plain ``type/subtype`` of tokens), its
Content-Disposition ``attachment`` with the filename as a quoted string when it is short printable ASCII, else in
RFC 2231's encoding (UTF-8, percent-escaped, split into numbered sections on lines of their own), so no filename can
end a header line or be read as an encoded word; the content in base64. Without attachments nothing changes.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

import idna

from varsel.notifications.statuses import EmailStatus
from varsel.orders.text import has_encoded_word, subject_line
from varsel.providers.base import Attachment, EmailRefused

# A bare ASCII dot-atom address, nearly every address varsel sends to or from: taken without further parsing.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_%+=-]+(?:\.[A-Za-z0-9_%+=-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# RFC 5322's atext, and any non-ASCII character (RFC 6532; which ones are printable is checked separately).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_ASCII_DOMAIN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
# Words a display name may be written as without encoding (atoms separated by single spaces).
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/^_`{|}~-]+)*")
# Nothing an address may hold anywhere: control characters, line and paragraph separators, lone surrogates.
_NOT_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Printable ASCII, no blank at either end (a reader would drop a leading one), short enough to stay on the header's
# line: written as it is. Anything else is encoded.
_PLAIN_SUBJECT = re.compile(r"(?:[!-~](?:[ -~]{0,67}[!-~])?)?")
# RFC 2045's token: a MIME type is written only as token/token.
_TOKEN = r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]+"
_MIME_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")
# A filename written as a quoted string: printable ASCII without quote or backslash, short enough for its line.
_PLAIN_FILENAME = re.compile(r"[ !#-\[\]-~]{1,60}")
# What RFC 2231's encoding leaves unescaped (attribute-char, minus "*", "'" and "%").
_RFC2231_SAFE = frozenset(b"!#$&+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class Mailbox:
    local_part: str
    # ASCII: an internationalised domain in its IDNA (xn--) form.
    domain: str
    display_name: str = ""

    @property
    def addr_spec(self) -> str:
        return f"{self.local_part}@{self.domain}"

    @property
    def utf8(self) -> bool:
        """A non-ASCII local part, which only SMTPUTF8 (and RFC 6532 headers) can carry."""
        return not self.local_part.isascii()


def mailbox(value: str, role: str, status: EmailStatus) -> Mailbox:
    """The address as varsel will write it: ``addr-spec`` or ``display name <addr-spec>``.

    Raises PermanentEmailError (with `status`) for anything else, and for a local part that holds an encoded word:
    RFC 2047 forbids them there, yet readers (Python's email package among them) decode them, into another address
    or into line breaks and headers of their own, so such an address is refused rather than written.
    """
    if _PLAIN_ADDRESS.fullmatch(value):
        local_part, _, domain = value.rpartition("@")
        return Mailbox(local_part, domain)
    if _NOT_IN_ADDRESS.search(value):
        raise EmailRefused(f"the {role} address {value!r} contains a control character or line break", status)
    text = value.strip()
    display_name = ""
    if text.endswith(">") and "<" in text:
        display_name, _, text = text[:-1].rpartition("<")
        display_name = _unquoted(display_name.strip())
    local_part, at, domain = text.rpartition("@")
    if not at or not _DOT_ATOM.fullmatch(local_part) or not all(c.isascii() or c.isprintable() for c in local_part):
        raise EmailRefused(f"the {role} address {value!r} is not a valid mailbox", status)
    if has_encoded_word(local_part):
        raise EmailRefused(
            f"the {role} address {value!r} holds encoded-word syntax (=?…?=), which mail readers may decode into "
            "another address or into headers of its own",
            status,
        )
    ascii_domain = _ascii_domain(domain)
    if ascii_domain is None:
        raise EmailRefused(f"the domain of the {role} address {value!r} is not a valid name", status)
    return Mailbox(local_part, ascii_domain, display_name)


def header_block(*, sender: Mailbox, recipient: Mailbox, subject: str, message_id: str, date: datetime | None) -> bytes:
    """From, To, Subject, Date (when given), Message-ID and MIME-Version, each line ending in CRLF.

    UTF-8 only where an address's local part is not ASCII (then the message needs SMTPUTF8); ASCII otherwise.
    """
    utf8 = sender.utf8 or recipient.utf8
    lines = [
        f"From: {_address(sender, 'From', utf8)}",
        f"To: {_address(recipient, 'To', utf8)}",
        f"Subject: {_subject(subject_line(subject))}",
    ]
    if date is not None:
        lines.append(f"Date: {format_datetime(date)}")
    lines += [f"Message-ID: {message_id}", "MIME-Version: 1.0", ""]
    return "\r\n".join(lines).encode("utf-8")


def _subject(line: str) -> str:
    if _PLAIN_SUBJECT.fullmatch(line) and "=?" not in line:
        return line
    return _encoded_words(line, "Subject", "subject")


def _address(box: Mailbox, header_name: str, utf8: bool) -> str:
    if not box.display_name:
        return box.addr_spec
    name = box.display_name
    if _PLAIN_PHRASE.fullmatch(name):
        phrase = name
    elif utf8 or name.isascii():
        # A quoted string, raw UTF-8 in a message that is UTF-8 anyway (RFC 6532). Each "=" is escaped, so no "=?"
        # stands in it for a reader to decode as an encoded word (Python's email package does so even in quotes).
        phrase = '"' + re.sub(r'([\\"=])', r"\\\1", name) + '"'
    else:
        phrase = _encoded_words(name, header_name, f"display name of the {header_name} address")
    return f"{phrase} <{box.addr_spec}>"


def _encoded_words(text: str, header_name: str, what: str) -> str:
    # Whatever the text holds ("=?", quotes, control characters) is inside the encoding: a reader decodes it back
    # to the text, never to syntax. Split into words of at most 75 characters on lines of at most 76.
    try:
        return Header(text, "utf-8", header_name=header_name).encode(linesep="\r\n")
    except UnicodeEncodeError as error:
        raise EmailRefused(f"the {what} cannot be written as UTF-8: {error}") from error


def _unquoted(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def _ascii_domain(domain: str) -> str | None:
    if domain.isascii():
        return domain if _ASCII_DOMAIN.fullmatch(domain) else None
    try:
        # IDNA 2008 with the UTS #46 mapping, as email-validator reads the domain at intake (IDNA 2003, Python's
        # own codec, would send straße.de to strasse.de).
        return idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError among them
        return None


# ---------------------------------------------------------------- attachments


def with_attachments(body: bytes, attachments: Sequence[Attachment]) -> bytes:
    """`body` (a part: its Content-Type and other headers, a blank line, its content) as it is without attachments;
    with them, a multipart/mixed part holding it first and then each attachment, in the order given."""
    if not attachments:
        return body
    # "=_" cannot occur in base64 or quoted-printable text, and the rest is random: no part contains the boundary.
    boundary = f"=_varsel_mixed_{uuid.uuid4().hex}"
    pieces = [f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n--{boundary}\r\n'.encode("ascii"), body]
    for attachment in attachments:
        pieces += [f"\r\n--{boundary}\r\n".encode("ascii"), attachment_part(attachment)]
    pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(pieces)


def attachment_part(attachment: Attachment) -> bytes:
    """One attachment as a MIME part: Content-Type, Content-Disposition, base64 content in lines of 76."""
    if not _MIME_TYPE.fullmatch(attachment.mime_type):
        raise EmailRefused(f"the attachment {attachment.filename!r} has a MIME type that is not type/subtype")
    if not attachment.filename:
        raise EmailRefused("an attachment has no filename")
    encoded = base64.b64encode(attachment.content)
    lines = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    head = (
        f"Content-Type: {attachment.mime_type.lower()}\r\n"
        f"Content-Disposition: attachment;{_filename_parameter(attachment.filename)}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("ascii") + lines + (b"\r\n" if lines else b"")


def _filename_parameter(name: str) -> str:
    """The filename parameter, beginning with its folding blank: quoted, or in RFC 2231 sections."""
    if _PLAIN_FILENAME.fullmatch(name) and "=?" not in name and name.strip() == name:
        return f' filename="{name}"'
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate
        raise EmailRefused(f"the attachment's filename cannot be written as UTF-8: {error}") from error
    escaped = [chr(byte) if byte in _RFC2231_SAFE else f"%{byte:02X}" for byte in raw]
    # Sections of at most 60 characters, never splitting an escape, each on a line of its own.
    sections: list[str] = []
    current = ""
    for piece in escaped:
        if len(current) + len(piece) > 60:
            sections.append(current)
            current = ""
        current += piece
    sections.append(current)
    if len(sections) == 1:
        return f"\r\n filename*=utf-8''{sections[0]}"
    written = [f"filename*{i}*={'utf-8' + chr(39) * 2 if i == 0 else ''}{text}" for i, text in enumerate(sections)]
    return "\r\n " + ";\r\n ".join(written)
