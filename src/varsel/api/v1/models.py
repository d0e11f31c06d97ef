"""The JSON shapes of the v1 order API, as service owners written for Altinn Notifications send and read them.

The domain vocabulary they use (channels, content types) lives in varsel.orders.vocabulary, below both APIs.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, Strict, ValidationInfo, ValidatorFunctionWrapHandler, WrapValidator

from varsel.api_types import ApiModel, RequestDateTime, Text, UtcTimestamp, lenient_enum
from varsel.orders.vocabulary import EmailContentType, NotificationChannel, RecipientLookupStatus
from varsel.settings import FALLBACK_WINDOW_MINUTES

# varsel's own order property (Altinn ignores it): a whole number of minutes, as a JSON integer, in range.
FallbackMinutes = Annotated[int, Strict(), Field(ge=FALLBACK_WINDOW_MINUTES[0], le=FALLBACK_WINDOW_MINUTES[1])]
FALLBACK_DESCRIPTION = (
    "varsel only (Altinn ignores it): for EmailPreferred and SmsPreferred, send the other channel to the same "
    "recipient, once, if the first notification fails without reaching the person or has no delivery report within "
    "this many minutes (1-2880), even when VARSEL_FALLBACK__ENABLED is off. Ignored for other channels."
)

ChannelField = Annotated[NotificationChannel, lenient_enum(NotificationChannel)]
ContentTypeField = Annotated[EmailContentType, lenient_enum(EmailContentType)]


# ---------------------------------------------------------------- requests


class RecipientRequest(ApiModel):
    """One recipient: an address, or an identity number / organisation number to look up."""

    email_address: Text | None = None
    mobile_number: Text | None = Field(default=None, description="With country code: +47… or 0047….")
    national_identity_number: Text | None = Field(default=None, description="11 digits.")
    organization_number: Text | None = Field(default=None, description="9 digits.")


class EmailTemplateRequest(ApiModel):
    from_address: Text | None = Field(default=None, description="Defaults to the configured sender address.")
    subject: Text | None = None
    body: Text | None = None
    content_type: ContentTypeField | None = Field(default=None, description="Plain (default) or Html.")


class SmsTemplateRequest(ApiModel):
    sender_number: Text | None = Field(default=None, description="Defaults to the configured sender.")
    body: Text | None = None


def _one_past_the_recipient_limit(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """Recipients past the limit + 1 are not read: an order over the limit is refused anyway (by OrderValidator,
    with the order's other errors), and reading them all let a 2 MB body of 700,000 `{}` become 700,000 objects,
    hundreds of megabytes, before the refusal. The limits come from the validation context (see json_body)."""
    limits = (info.context or {}).get("limits")
    limit = getattr(limits, "max_recipients", None)
    if isinstance(value, list) and isinstance(limit, int) and len(value) > limit + 1:
        value = value[: limit + 1]
    return handler(value)


class OrderRequestBase(ApiModel):
    senders_reference: Text | None = Field(
        default=None, description="The service owner's own reference, e.g. a case number."
    )
    requested_send_time: RequestDateTime | None = Field(
        default=None, description="With a UTC offset; default now; not more than 5 minutes in the past."
    )
    condition_endpoint: Text | None = Field(
        default=None,
        description='Absolute http(s) URL answering {"sendNotification": true|false} at send time.',
    )
    ignore_reservation: bool | None = Field(
        default=None, description="Send to persons who have reserved themselves against digital contact."
    )
    resource_id: Text | None = Field(default=None, description="Resource the notification concerns, e.g. app_ttd_x.")
    resource_action: Text | None = Field(
        default=None, description="Action users must be authorised for on the resource (default read)."
    )
    recipients: Annotated[list[RecipientRequest] | None, WrapValidator(_one_past_the_recipient_limit)] = None
    fallback_after_minutes: FallbackMinutes | None = Field(default=None, description=FALLBACK_DESCRIPTION)


class NotificationOrderRequest(OrderRequestBase):
    """POST /orders: any channel, with the templates that channel needs."""

    notification_channel: ChannelField | None = None
    email_template: EmailTemplateRequest | None = None
    sms_template: SmsTemplateRequest | None = None


class EmailNotificationOrderRequest(OrderRequestBase):
    """POST /orders/email: an email order with the template's fields at the top level."""

    from_address: Text | None = None
    subject: Text | None = None
    body: Text | None = None
    content_type: ContentTypeField | None = None


class SmsNotificationOrderRequest(OrderRequestBase):
    """POST /orders/sms: an SMS order with the template's fields at the top level."""

    sender_number: Text | None = None
    body: Text | None = None


# ---------------------------------------------------------------- responses


class RecipientLookupResult(ApiModel):
    status: RecipientLookupStatus
    is_reserved: list[str] = Field(default_factory=list)
    missing_contact: list[str] = Field(default_factory=list)


class OrderAccepted(ApiModel):
    """202: the order is stored and will be processed at its requested send time."""

    order_id: UUID
    recipient_lookup: RecipientLookupResult | None = None


class Recipient(ApiModel):
    email_address: str | None = None
    mobile_number: str | None = None
    national_identity_number: str | None = None
    organization_number: str | None = None
    is_reserved: bool | None = None


class EmailTemplate(ApiModel):
    from_address: str
    subject: str
    body: str
    content_type: EmailContentType


class SmsTemplate(ApiModel):
    sender_number: str
    body: str


class OrderLinks(ApiModel):
    self: str
    status: str


class NotificationOrder(ApiModel):
    """An order as it was registered."""

    id: UUID
    creator: str
    senders_reference: str | None = None
    requested_send_time: UtcTimestamp
    created: UtcTimestamp
    notification_channel: NotificationChannel
    ignore_reservation: bool | None = None
    resource_id: str | None = None
    resource_action: str | None = None
    condition_endpoint: str | None = None
    recipients: list[Recipient]
    email_template: EmailTemplate | None = None
    sms_template: SmsTemplate | None = None
    links: OrderLinks


class NotificationOrderList(ApiModel):
    count: int
    orders: list[NotificationOrder]


class ProcessingStatus(ApiModel):
    status: str
    description: str
    last_update: UtcTimestamp


class SummaryLinks(ApiModel):
    self: str


class ChannelSummary(ApiModel):
    links: SummaryLinks
    generated: int
    succeeded: int


class NotificationsStatusSummary(ApiModel):
    email: ChannelSummary | None = None
    sms: ChannelSummary | None = None


class NotificationOrderWithStatus(ApiModel):
    """An order with where its processing stands and how many of its notifications succeeded."""

    id: UUID
    senders_reference: str | None = None
    requested_send_time: UtcTimestamp
    creator: str
    created: UtcTimestamp
    notification_channel: NotificationChannel
    ignore_reservation: bool | None = None
    resource_id: str | None = None
    resource_action: str | None = None
    condition_endpoint: str | None = None
    processing_status: ProcessingStatus
    notifications_status_summary: NotificationsStatusSummary | None = None


class SendStatus(ApiModel):
    status: str
    description: str
    last_update: UtcTimestamp


class FallbackFor(ApiModel):
    """varsel only: why a notification exists that the order did not ask for directly (receipt-driven fallback)."""

    notification_id: UUID = Field(description="The first notification, on the other channel, that did not reach.")
    channel: str = Field(description="The first notification's channel: Email or Sms.")
    reason: str = Field(
        examples=["Failed_Bounced", "NoDeliveryReport"],
        description="The first notification's failed status, or NoDeliveryReport: none within the window.",
    )


class NotificationWithResult(ApiModel):
    id: UUID
    succeeded: bool
    recipient: Recipient
    send_status: SendStatus
    fallback_for: FallbackFor | None = Field(
        default=None,
        description="varsel only, and only on a notification sent by receipt-driven fallback (an EmailPreferred or "
        "SmsPreferred order whose first notification did not reach the recipient): which one it follows, and why.",
    )


class NotificationSummary(ApiModel):
    """The notifications generated for an order on one channel, with their send status."""

    order_id: UUID
    senders_reference: str | None = None
    generated: int
    succeeded: int
    notifications: list[NotificationWithResult]


# ---------------------------------------------------------------- preview (varsel's own; not in the reference)


class PreviewNotification(ApiModel):
    """One notification the order would create, with its content rendered for the recipient."""

    channel: str = Field(description="Email or Sms.")
    address: str
    user_id: str | None = Field(default=None, description="Set when the address is a user's contact point.")
    subject: str | None = None
    body: str


class PreviewUnreached(ApiModel):
    reason: str = Field(description="Reserved, NotFound, NoContact, NotAuthorised, InvalidAddress or Duplicate.")
    detail: str
    address: str | None = None
    user_id: str | None = None


class PreviewRecipient(ApiModel):
    recipient: Recipient
    outcome: str = Field(description="Addressed, Found, Reserved or MissingContact.")
    name: str | None = None
    notifications: list[PreviewNotification]
    unreached: list[PreviewUnreached] = Field(default_factory=list)


class PreviewWarning(ApiModel):
    """Something in the order the sender may want to change before placing it: the order would be taken as it is."""

    field: str = Field(
        description='The template field, as the request names it: "EmailTemplate.Subject", "EmailTemplate.Body" or '
        '"SmsTemplate.Body".'
    )
    keyword: str = Field(description="The keyword that renders empty: $recipientName$ or $recipientNumber$.")
    recipients: list[int] = Field(description="The indexes, in `recipients`, of those whose text shows it empty.")
    message: str


class OrderPreview(ApiModel):
    """What an order would do if it were placed now: nothing is stored."""

    notification_channel: NotificationChannel
    requested_send_time: UtcTimestamp
    recipient_lookup: RecipientLookupResult | None = None
    recipients: list[PreviewRecipient]
    warnings: list[PreviewWarning] | None = Field(
        default=None,
        description="A template keyword that would render empty for some recipients (a name for a recipient given "
        "by address, which has none), and so on; absent when there is nothing to say.",
    )
