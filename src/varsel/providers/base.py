"""What the senders hand to a provider, what comes back, and how failures are told apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.models import EmailContentType


@dataclass(frozen=True)
class EmailMessage:
    notification_id: UUID
    from_address: str
    to_address: str
    subject: str
    body: str
    content_type: EmailContentType


@dataclass(frozen=True)
class SmsMessage:
    notification_id: UUID
    sender: str
    to_number: str
    body: str
    # The gateway may drop the message after this (its time to live).
    expiry: datetime


@dataclass(frozen=True)
class Accepted:
    """The provider took the message. `delivered` when it also knows the message arrived (the outbox does)."""

    reference: str
    delivered: bool = False


class TransientProviderError(Exception):
    """Try again later: timeouts, 4xx SMTP replies, 5xx and 429 HTTP answers. Never marks a notification failed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentEmailError(Exception):
    def __init__(self, message: str, status: EmailStatus = EmailStatus.FAILED) -> None:
        super().__init__(message)
        self.status = status


class PermanentSmsError(Exception):
    def __init__(self, message: str, status: SmsStatus = SmsStatus.FAILED) -> None:
        super().__init__(message)
        self.status = status


class EmailProvider(Protocol):
    name: str

    async def send(self, message: EmailMessage) -> Accepted: ...

    async def close(self) -> None: ...


class SmsProvider(Protocol):
    name: str

    async def send(self, message: SmsMessage) -> Accepted: ...

    async def close(self) -> None: ...
