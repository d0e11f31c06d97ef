"""Orders as the domain knows them before they are stored: what either API dialect's validation produces, and what
the order service, the repositories and the look-ups take. Nothing here knows which API an order came from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from varsel.orders.vocabulary import EmailContentType, NotificationChannel, OrderType, SendingTimePolicy


@dataclass(frozen=True)
class RecipientSpec:
    """One recipient as ordered: an address, or an identity to look up (a national identity number, an organisation
    number, or an external identity: a self-identified user or an ID-porten email identity, as a URN)."""

    email_address: str | None = None
    mobile_number: str | None = None
    national_identity_number: str | None = None
    organization_number: str | None = None
    external_identity: str | None = None


@dataclass(frozen=True)
class EmailTemplateSpec:
    from_address: str
    subject: str
    body: str
    content_type: EmailContentType


@dataclass(frozen=True)
class SmsTemplateSpec:
    sender: str
    body: str


@dataclass(frozen=True)
class AttachmentSpec:
    """A composed email's attachment as ordered: a name, a MIME type, and where the sender fetches it when the email
    goes out (an Azure Blob SAS URL, or a URL on an object store the operator allow-listed)."""

    filename: str
    mime_type: str
    url: str


@dataclass(frozen=True)
class OrderDraft:
    """A valid order, normalised, ready to be stored."""

    channel: NotificationChannel
    requested_send_time: datetime
    recipients: tuple[RecipientSpec, ...]
    senders_reference: str | None = None
    condition_endpoint: str | None = None
    ignore_reservation: bool | None = None
    resource_id: str | None = None
    resource_action: str | None = None
    email_template: EmailTemplateSpec | None = None
    sms_template: SmsTemplateSpec | None = None
    order_type: OrderType = OrderType.NOTIFICATION
    # Every v1 order is Daytime; a v2 order takes its SMS settings' policy.
    sms_sending_time_policy: SendingTimePolicy = SendingTimePolicy.DAYTIME
    # Contact details a person last confirmed over 18 months ago count as absent unless this is set (v2).
    use_stale_contact_information: bool = False
    # A composed email's attachments (order type Composed); fetched at send time.
    attachments: tuple[AttachmentSpec, ...] = ()
    # varsel's own (ignored by Altinn): fall back to the other channel of a Preferred order after this many minutes
    # without a delivery report, or at once when the first notification fails (varsel.dispatch.fallback).
    fallback_after_minutes: int | None = None


@dataclass(frozen=True)
class InstantEmail:
    address: str
    template: EmailTemplateSpec


@dataclass(frozen=True)
class InstantSms:
    mobile_number: str
    template: SmsTemplateSpec
    # How long the message may still be delivered: the notification's expiry, and the gateway's validity period.
    time_to_live_seconds: int


@dataclass(frozen=True)
class InstantDraft:
    """A v2 instant order: one message to one address, handed to the provider while the caller waits."""

    idempotency_id: str
    message: InstantEmail | InstantSms
    senders_reference: str | None = None


@dataclass(frozen=True)
class ChainDraft:
    """A v2 order chain: the main order and its reminders, each an ordinary order, under one idempotency key."""

    idempotency_id: str
    main: OrderDraft
    reminders: tuple[OrderDraft, ...] = ()
    # Stored as given (dialogId, transmissionId); the reference returns it nowhere.
    dialogporten_association: dict[str, Any] | None = None
