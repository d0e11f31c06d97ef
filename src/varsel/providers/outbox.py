"""Development providers: each email becomes an .eml file and each SMS a JSON line in the outbox folder.

A newcomer sees real messages without any account. They report every message delivered at once, so an order
runs its whole course to Completed.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime
from pathlib import Path
from uuid import UUID

from varsel.orders.models import EmailContentType
from varsel.providers.base import Accepted, EmailMessage, SmsMessage


def message_id(notification_id: UUID) -> str:
    return f"<{notification_id}@varsel>"


def render_eml(message: EmailMessage, sent: datetime | None = None) -> bytes:
    mime = MimeMessage()
    mime["From"] = message.from_address
    mime["To"] = message.to_address
    mime["Subject"] = message.subject
    mime["Message-ID"] = message_id(message.notification_id)
    if sent is not None:
        mime["Date"] = format_datetime(sent)
    subtype = "html" if message.content_type is EmailContentType.HTML else "plain"
    mime.set_content(message.body, subtype=subtype)
    return bytes(mime)


class OutboxEmailProvider:
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self._folder = folder / "email"

    async def send(self, message: EmailMessage) -> Accepted:
        await asyncio.to_thread(self._write, message)
        return Accepted(reference=str(message.notification_id), delivered=True)

    def _write(self, message: EmailMessage) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        target = self._folder / f"{message.notification_id}.eml"
        # Write then rename: a reader of the outbox never sees half a message.
        partial = target.with_suffix(".eml.partial")
        partial.write_bytes(render_eml(message))
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
