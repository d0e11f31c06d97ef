"""The JSON shapes of the v2 order API (POST /future/orders and its receipt), as Altinn's clients send and read them.

Members the reference marks "required (presence)" are optional here: their absence is found after parsing (see
varsel.api.v2.validation.framework_errors) and answered as ASP.NET's deserialiser answers it. Enum members take any
integer, as System.Text.Json reads them; a validator then refuses the undeclared ones with the reference's words.
"""

from __future__ import annotations

from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from varsel.api.v2.shipments import NotificationDeliveryManifestExt
from varsel.api_types import ApiModel, RequestDateTime, Text, lenient_enum
from varsel.orders.vocabulary import EmailContentType, NotificationChannel, SendingTimePolicy
from varsel.settings import FALLBACK_WINDOW_MINUTES

# .NET's integer values: the channel and content type in declaration order from 0; the policy from 1.
ChannelSchemaField = Annotated[NotificationChannel | int, lenient_enum(NotificationChannel)]
ContentTypeField = Annotated[EmailContentType | int, lenient_enum(EmailContentType)]
PolicyField = Annotated[
    SendingTimePolicy | int,
    lenient_enum(SendingTimePolicy, {1: SendingTimePolicy.ANYTIME, 2: SendingTimePolicy.DAYTIME}),
]
# An Int32, as .NET reads it (a number in a string included).
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class V2Model(ApiModel):
    """A v2 request model: which members must be present in the JSON, and the .NET type named when one is not."""

    dotnet_type: ClassVar[str] = ""
    required_members: ClassVar[tuple[str, ...]] = ()


_NS = "Altinn.Notifications.Models"


class EmailSendingOptionsExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_NS}.EmailSendingOptionsExt"
    required_members: ClassVar[tuple[str, ...]] = ("subject", "body")

    sender_email_address: Text | None = Field(default=None, description="Default: the configured sender address.")
    subject: Text | None = Field(default=None, description="Required. Line breaks become spaces.")
    body: Text | None = Field(
        default=None, description="Required. $recipientName$ and $recipientNumber$ are filled in."
    )
    content_type: ContentTypeField = Field(default=EmailContentType.PLAIN, description="Plain (default) or Html.")
    sending_time_policy: PolicyField = Field(
        default=SendingTimePolicy.ANYTIME, description="Only Anytime (1) is allowed for email."
    )


class SmsSendingOptionsExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_NS}.SmsSendingOptionsExt"
    required_members: ClassVar[tuple[str, ...]] = ("body",)

    sender: Text | None = Field(default=None, description="Default: the configured sender.")
    body: Text | None = Field(default=None, description="Required.")
    sending_time_policy: PolicyField = Field(
        default=SendingTimePolicy.DAYTIME,
        description="Daytime (2, default): sent between 09:00 and 17:00 Oslo time; Anytime (1): at once.",
    )


class RecipientEmailExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_NS}.RecipientEmailExt"
    required_members: ClassVar[tuple[str, ...]] = ("email_address", "email_settings")

    email_address: Text | None = None
    email_settings: EmailSendingOptionsExt | None = None


class RecipientSmsExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_NS}.RecipientSmsExt"
    required_members: ClassVar[tuple[str, ...]] = ("phone_number", "sms_settings")

    phone_number: Text | None = Field(default=None, description="With country code: +47… or 0047….")
    sms_settings: SmsSendingOptionsExt | None = None


class RecipientBaseExt(V2Model):
    channel_schema: ChannelSchemaField | None = Field(
        default=None, description="Required: Email, Sms, EmailPreferred, SmsPreferred or EmailAndSms (0-4)."
    )
    email_settings: EmailSendingOptionsExt | None = None
    sms_settings: SmsSendingOptionsExt | None = None
    resource_id: Text | None = Field(default=None, description="urn:altinn:resource:…")
    resource_action: Text | None = Field(default=None, description="Default read; needs a resourceId.")


class RecipientPersonExt(RecipientBaseExt):
    dotnet_type: ClassVar[str] = f"{_NS}.RecipientPersonExt"
    required_members: ClassVar[tuple[str, ...]] = ("national_identity_number", "channel_schema")

    national_identity_number: Text | None = Field(default=None, description="11 digits.")
    ignore_reservation: bool = False
    use_stale_contact_information: bool = Field(
        default=False, description="Use contact details last confirmed over 18 months ago."
    )


class RecipientOrganizationExt(RecipientBaseExt):
    dotnet_type: ClassVar[str] = f"{_NS}.RecipientOrganizationExt"
    required_members: ClassVar[tuple[str, ...]] = ("org_number", "channel_schema")

    org_number: Text | None = Field(default=None, description="9 digits.")


class RecipientExternalIdentityExt(RecipientBaseExt):
    dotnet_type: ClassVar[str] = f"{_NS}.RecipientExternalIdentityExt"
    required_members: ClassVar[tuple[str, ...]] = ("external_identity", "channel_schema")

    external_identity: Text | None = Field(
        default=None,
        description=(
            "urn:altinn:person:idporten-email:{email}, urn:altinn:party:username:{name}, urn:altinn:username:{name} "
            "or urn:altinn:person:legacy-selfidentified:{name}."
        ),
    )


class NotificationRecipientExt(V2Model):
    """Exactly one of the five kinds."""

    dotnet_type: ClassVar[str] = f"{_NS}.NotificationRecipientExt"

    recipient_email: RecipientEmailExt | None = None
    recipient_sms: RecipientSmsExt | None = None
    recipient_person: RecipientPersonExt | None = None
    recipient_organization: RecipientOrganizationExt | None = None
    recipient_external_identity: RecipientExternalIdentityExt | None = None


class DialogportenAssociationExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_NS}.DialogportenIdentifiersExt"

    dialog_id: Text | None = None
    transmission_id: Text | None = None


class NotificationReminderExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_NS}.NotificationReminderExt"
    required_members: ClassVar[tuple[str, ...]] = ("recipient",)

    senders_reference: Text | None = Field(default=None, description="The reminder's own; not inherited.")
    condition_endpoint: Text | None = Field(default=None, description="The reminder's own; not inherited.")
    delay_days: Int32 | None = Field(
        default=None, description="Send this many days after the main notification's requested send time."
    )
    requested_send_time: RequestDateTime | None = Field(
        default=None, description="With a UTC offset; give either this or delayDays."
    )
    recipient: NotificationRecipientExt | None = None


class NotificationOrderChainRequestExt(V2Model):
    """POST /future/orders: a main notification and its reminders, created once per idempotencyId."""

    dotnet_type: ClassVar[str] = f"{_NS}.NotificationOrderChainRequestExt"
    required_members: ClassVar[tuple[str, ...]] = ("idempotency_id", "recipient")

    idempotency_id: Text | None = Field(
        default=None, description="Required. The same key again answers 200 with the first request's receipt."
    )
    senders_reference: Text | None = None
    requested_send_time: RequestDateTime | None = Field(
        default=None, description="With a UTC offset, not in the past; default now."
    )
    condition_endpoint: Text | None = Field(
        default=None, description='http(s) URL answering {"sendNotification": true|false}; the main order only.'
    )
    dialogporten_association: DialogportenAssociationExt | None = None
    recipient: NotificationRecipientExt | None = None
    reminders: list[NotificationReminderExt] | None = None
    fallback_after_minutes: (
        Annotated[int, Field(ge=FALLBACK_WINDOW_MINUTES[0], le=FALLBACK_WINDOW_MINUTES[1])] | None
    ) = Field(
        default=None,
        description=(
            "varsel only (Altinn ignores it): for EmailPreferred and SmsPreferred recipients, send the other channel "
            "to the same recipient, once, if the first notification fails without reaching the person or has no "
            "delivery report within this many minutes (1-2880), even when VARSEL_FALLBACK__ENABLED is off. For the "
            "main notification and its reminders; ignored for other channels."
        ),
    )


# ---------------------------------------------------------------- responses


class NotificationOrderChainShipmentExt(ApiModel):
    shipment_id: UUID = Field(description="An order id: readable through v1 GET /orders/{id} too.")
    senders_reference: str | None = None


class NotificationOrderChainReceiptExt(NotificationOrderChainShipmentExt):
    reminders: list[NotificationOrderChainShipmentExt] | None = Field(
        default=None, description="In request order; absent when there are none."
    )


class NotificationOrderChainResponseExt(ApiModel):
    """201 (stored) or 200 (a replay of the same idempotencyId): the chain's receipt."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "notificationOrderId": "01a241c2-aef4-7f62-86f3-a5f2ef035915",
                    "notification": {
                        "shipmentId": "01a241c2-aef4-7e19-bc59-e499c0db66c0",
                        "sendersReference": "case-42",
                        "reminders": [
                            {"shipmentId": "01a241c2-aef4-75c3-9799-3906c24168f1", "sendersReference": "case-42-r1"}
                        ],
                    },
                }
            ]
        }
    )

    notification_order_id: UUID = Field(description="The chain's id (GET /notifications/api/v1/orders/chain/{id}).")
    notification: NotificationOrderChainReceiptExt


class OrderChainShipmentExt(NotificationOrderChainShipmentExt):
    manifest: NotificationDeliveryManifestExt = Field(description="As GET /future/shipment/{shipmentId} answers it.")


class OrderChainMainShipmentExt(OrderChainShipmentExt):
    reminders: list[OrderChainShipmentExt] | None = Field(default=None, description="Absent when there are none.")


class OrderChainExt(ApiModel):
    """GET /orders/chain/{id}: the chain's receipt, each shipment with its delivery manifest."""

    notification_order_id: UUID
    notification: OrderChainMainShipmentExt


class AltinnProblemDetails(BaseModel):
    """A problem with an Altinn error code (NOT-0000X), in Altinn's shape: no detail."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["urn:altinn:error:NOT-00001"])
    title: str = Field(examples=["Missing contact information for recipient(s)"])
    status: int = Field(examples=[422])
    code: str = Field(examples=["NOT-00001"])
    traceId: str
    statusDescription: str = Field(examples=["Unprocessable Entity"])
