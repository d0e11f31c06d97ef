"""Development providers: each email becomes an .eml file and each SMS a JSON line in the outbox folder.

A newcomer sees real messages without any account. They report every message delivered at once, so an order
runs its whole course to Completed.
"""

from __future__ import annotations

import asyncio
import email.errors
import email.policy
import json
import os
from datetime import datetime
from email.message import MIMEPart
from pathlib import Path
from uuid import UUID

from varsel.notifications.statuses import EmailStatus
from varsel.orders.vocabulary import EmailContentType
from varsel.providers import mime
from varsel.providers.base import Accepted, EmailMessage, EmailRefused, SmsMessage

_BODY_POLICY = email.policy.default.clone(linesep="\r\n")


def message_id(notification_id: UUID) -> str:
    return f"<{notification_id}@varsel>"


def render_eml(message: EmailMessage, sent: datetime | None = None) -> bytes:
    """The message as an .eml file: varsel's header block (providers.mime), and the body as the email package writes
    a text part (8-bit UTF-8 where it can, so the file reads as the message), in multipart/mixed with its attachments
    when it has any. Raw UTF-8 in From or To (RFC 6532) only for a non-ASCII local part. Anything in the message that
    cannot be written is its PermanentEmailError."""
    head = mime.header_block(
        sender=mime.mailbox(message.from_address, "from", EmailStatus.FAILED),
        recipient=mime.mailbox(message.to_address, "to", EmailStatus.FAILED_INVALID_EMAIL_FORMAT),
        subject=message.subject,
        message_id=message_id(message.notification_id),
        date=sent,
    )
    # A bare part, not a message: its only headers are Content-Type and Content-Transfer-Encoding, none of them
    # from the caller's text.
    body = MIMEPart(policy=_BODY_POLICY)
    subtype = "html" if message.content_type is EmailContentType.HTML else "plain"
    try:
        body.set_content(message.body, subtype=subtype)
        return head + mime.with_attachments(body.as_bytes(), message.attachments)
    except UnicodeEncodeError as error:
        raise EmailRefused(f"the body cannot be written as UTF-8: {error}") from error
    except (ValueError, email.errors.MessageError) as error:
        raise EmailRefused(f"the body cannot be written: {error}") from error


class OutboxEmailProvider:
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self._folder = folder / "email"

    async def send(self, message: EmailMessage) -> Accepted:
        await asyncio.to_thread(self._write, message)
        return Accepted(reference=str(message.notification_id), delivered=True)

    def _write(self, message: EmailMessage) -> None:
        content = render_eml(message)
        self._folder.mkdir(parents=True, exist_ok=True)
        target = self._folder / f"{message.notification_id}.eml"
        # Write then rename: a reader of the outbox never sees half a message.
        partial = target.with_suffix(".eml.partial")
        partial.write_bytes(content)
        os.replace(partial, target)

    async def close(self) -> None:
        return None


class OutboxSmsProvider:
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self._file = folder / "sms.jsonl"

    async def send(self, message: SmsMessage) -> Accepted:
        await asyncio.to_thread(self._append, message)
        return Accepted(reference=str(message.notification_id), delivered=True)

    def _append(self, message: SmsMessage) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {
                "id": str(message.notification_id),
                "from": message.sender,
                "to": message.to_number,
                "body": message.body,
                "expiry": message.expiry.isoformat(),
            },
            ensure_ascii=False,
        )
        # One write of a whole line to a file opened for appending: lines from several workers never interleave.
        fd = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    async def close(self) -> None:
        return None
