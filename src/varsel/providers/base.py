"""What the senders hand to a provider, what comes back, and how failures are told apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.vocabulary import EmailContentType


@dataclass(frozen=True)
class Attachment:
    """An attachment as fetched at send time: its name, MIME type and content."""

    filename: str
    mime_type: str
    content: bytes


@dataclass(frozen=True)
class EmailMessage:
    notification_id: UUID
    from_address: str
    to_address: str
    subject: str
    body: str
    content_type: EmailContentType
    attachments: tuple[Attachment, ...] = ()


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


@dataclass(frozen=True)
class DeliveryReport:
    """What a provider's delivery report says about one message, before it is matched to a notification.

    `notification_id` is the id we gave the provider with the message (as text: a report may carry anything, and
    one that matches nothing is kept as a dead report, not dropped). `provider_reference` is the provider's own id
    for the message, when the report names it. `occurred` is when the provider says the event happened.
    """

    notification_id: str
    status: EmailStatus | SmsStatus
    provider_reference: str | None = None
    detail: str | None = None
    occurred: datetime | None = None


class ReportFormatError(ValueError):
    """A delivery-report body that is not what the provider documents: answered 400, nothing stored."""


class TooManyReports(ReportFormatError):
    """A delivery-report body with more reports than one request may carry: answered 413, nothing stored."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"A request may carry at most {limit} delivery reports; this one has {count}.")


class TransientProviderError(Exception):
    """Try again later: timeouts, 4xx SMTP replies, 5xx and 429 HTTP answers. Never marks a notification failed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderUnavailable(TransientProviderError):
    """varsel's own guard refused the call (the provider is paused after a 429, or its breaker is open): the
    provider never saw the message, so it is no attempt; `retry_after` says when the guard lets calls through."""


class PermanentEmailError(Exception):
    def __init__(self, message: str, status: EmailStatus = EmailStatus.FAILED) -> None:
        super().__init__(message)
        self.status = status


class EmailRefused(PermanentEmailError):
    """The adapter refused the message before any call to the provider (an address or text it will not write): the
    message's own failure, and no word at all on the provider's health, so not even a half-open trial's verdict."""


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
