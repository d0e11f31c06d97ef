"""The JSON shapes of the v2 instant order API (reference 2.1 and 2.4), as Altinn's clients send and read them.

As in varsel.api.v2.models: members the reference marks "required (presence)" are optional here and their absence
is answered after parsing as ASP.NET's deserialiser answers it (varsel.api.v2.validation.missing_member_errors);
names match in any case; the content type takes its name in any case or its integer value; the time to live takes a
number or a number in a string, and null is a conversion error (a .NET int cannot be null).
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import ConfigDict, Field

from varsel.api.v2.models import ContentTypeField, Int32, NotificationOrderChainShipmentExt, V2Model
from varsel.api_types import ApiModel, Text
from varsel.orders.vocabulary import EmailContentType

_ORDERS = "Altinn.Notifications.Models.Orders"
_SMS = "Altinn.Notifications.Models.Sms"
_EMAIL = "Altinn.Notifications.Models.Email"
_RECIPIENT = "Altinn.Notifications.Models.Recipient"

TTL_DESCRIPTION = (
    "Required. 60 to 172800 (48 hours): how long the gateway may keep trying to deliver the SMS, and the "
    "notification's expiry."
)


def _no_default(schema: dict[str, Any]) -> None:
    # The 0 stands for "absent", which is refused: no default to document.
    schema.pop("default", None)


# ---------------------------------------------------------------- SMS


class ShortMessageContentExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_SMS}.ShortMessageContentExt"
    required_members: ClassVar[tuple[str, ...]] = ("body",)

    sender: Text | None = Field(default=None, description="Default (null or blank): the configured sender.")
    body: Text | None = Field(default=None, description="Required.")


class ShortMessageDeliveryDetailsExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_SMS}.ShortMessageDeliveryDetailsExt"
    required_members: ClassVar[tuple[str, ...]] = ("phone_number", "time_to_live_in_seconds", "sms_settings")

    phone_number: Text | None = Field(default=None, description="Required. With country code: +47… or 0047….")
    # Absent is the framework's refusal (required_members); null, as for a .NET int, does not convert.
    time_to_live_in_seconds: Int32 = Field(default=0, description=TTL_DESCRIPTION, json_schema_extra=_no_default)
    sms_settings: ShortMessageContentExt | None = Field(default=None, description="Required.")


class InstantSmsNotificationOrderRequestExt(V2Model):
    """POST /future/orders/instant/sms: one SMS, handed to the gateway while the caller waits."""

    dotnet_type: ClassVar[str] = f"{_ORDERS}.InstantSmsNotificationOrderRequestExt"
    required_members: ClassVar[tuple[str, ...]] = ("idempotency_id", "recipient_sms")

    idempotency_id: Text | None = Field(
        default=None,
        description=(
            "Required. The same key again (on any of the three instant routes) answers 200 with the first "
            "request's receipt and sends nothing."
        ),
    )
    senders_reference: Text | None = None
    recipient_sms: ShortMessageDeliveryDetailsExt | None = Field(default=None, description="Required.")


class InstantNotificationRecipientExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_RECIPIENT}.InstantNotificationRecipientExt"
    required_members: ClassVar[tuple[str, ...]] = ("recipient_sms",)

    recipient_sms: ShortMessageDeliveryDetailsExt | None = Field(default=None, description="Required.")


class InstantNotificationOrderRequestExt(V2Model):
    """POST /future/orders/instant (deprecated: use /instant/sms): the same SMS, one level deeper."""

    dotnet_type: ClassVar[str] = f"{_ORDERS}.InstantNotificationOrderRequestExt"
    required_members: ClassVar[tuple[str, ...]] = ("idempotency_id", "recipient")

    idempotency_id: Text | None = Field(
        default=None, description="Required. Shared with /instant/sms and /instant/email."
    )
    senders_reference: Text | None = None
    recipient: InstantNotificationRecipientExt | None = Field(default=None, description="Required.")


# ---------------------------------------------------------------- email


class InstantEmailContentExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_EMAIL}.InstantEmailContentExt"
    required_members: ClassVar[tuple[str, ...]] = ("subject", "body")

    subject: Text | None = Field(
        default=None, description="Required. Sent as one header line: line breaks in it are sent as spaces."
    )
    body: Text | None = Field(default=None, description="Required.")
    sender_email_address: Text | None = Field(default=None, description="Default (null): the configured sender.")
    content_type: ContentTypeField = Field(
        default=EmailContentType.PLAIN, description="Plain (0, default) or Html (1)."
    )


class InstantEmailDetailsExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_EMAIL}.InstantEmailDetailsExt"
    required_members: ClassVar[tuple[str, ...]] = ("email_address", "email_settings")

    email_address: Text | None = Field(default=None, description="Required.")
    email_settings: InstantEmailContentExt | None = Field(default=None, description="Required.")


class InstantEmailNotificationOrderRequestExt(V2Model):
    """POST /future/orders/instant/email: one email, handed to the provider while the caller waits."""

    dotnet_type: ClassVar[str] = f"{_ORDERS}.InstantEmailNotificationOrderRequestExt"
    required_members: ClassVar[tuple[str, ...]] = ("idempotency_id", "recipient_email")

    idempotency_id: Text | None = Field(
        default=None, description="Required. Shared with /instant/sms and the deprecated /instant."
    )
    senders_reference: Text | None = None
    recipient_email: InstantEmailDetailsExt | None = Field(default=None, description="Required.")


InstantRequest = (
    InstantSmsNotificationOrderRequestExt | InstantNotificationOrderRequestExt | InstantEmailNotificationOrderRequestExt
)


# ---------------------------------------------------------------- the receipt


class InstantNotificationOrderResponseExt(ApiModel):
    """201 (stored and handed to the provider) or 200 (a replay of the same idempotencyId): the receipt. Never has
    reminders."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "notificationOrderId": "01a241c2-aef4-7f62-86f3-a5f2ef035915",
                    "notification": {"shipmentId": "01a241c2-aef4-7e19-bc59-e499c0db66c0", "sendersReference": "otp-1"},
                }
            ]
        }
    )

    notification_order_id: UUID = Field(description="The order chain's id (the Location's).")
    notification: NotificationOrderChainShipmentExt = Field(
        description="The shipment: GET /future/shipment/{shipmentId} shows its delivery (type Instant)."
    )
