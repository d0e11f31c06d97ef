"""The JSON shapes of POST /future/orders/composed-email (reference 3.1): one email to one address, with attachments
the sender fetches when the email goes out. The receipt is the chain's (reference 1.4), without reminders.

As in varsel.api.v2.models, members the reference's model requires to be present are optional here and their
absence is answered after parsing, as ASP.NET's deserialiser answers it (varsel.api.v2.validation).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from varsel.api.v2.models import DialogportenAssociationExt, EmailSendingOptionsExt, V2Model
from varsel.api_types import RequestDateTime, Text

_NS = "Altinn.Notifications.Models"


class SasFileReferenceExt(V2Model):
    """An attachment: where the sender fetches it, and what it is called and is."""

    dotnet_type: ClassVar[str] = f"{_NS}.Files.SasFileReferenceExt"
    required_members: ClassVar[tuple[str, ...]] = ("filename", "mime_type", "sas_url")

    filename: Text | None = Field(default=None, description="Required: a name with an extension, no path.")
    mime_type: Text | None = Field(
        default=None, description="Required: one of the 61 MIME types Azure Communication Services accepts."
    )
    sas_url: Text | None = Field(
        default=None,
        description=(
            "Required: an https URL on *.blob.core.windows.net with a blob SAS (se, sp with r, sr=b, sig) valid until "
            "15 minutes after the send time, or on a host the operator allows (VARSEL_ATTACHMENTS__ALLOWED_HOSTS)."
        ),
    )


class ComposedEmailSendingOptionsExt(EmailSendingOptionsExt):
    dotnet_type: ClassVar[str] = f"{_NS}.Email.ComposedEmailSendingOptionsExt"

    # An item may be null in the JSON: the rules name it (`Attachment item must not be null.`).
    attachments: list[SasFileReferenceExt | None] | None = Field(
        default=None, description="Fetched when the email is sent, never at ordering."
    )


class RecipientComposedEmailExt(V2Model):
    dotnet_type: ClassVar[str] = f"{_NS}.Recipient.RecipientComposedEmailExt"
    required_members: ClassVar[tuple[str, ...]] = ("email_address", "email_settings")

    email_address: Text | None = Field(default=None, description="Required: one address.")
    email_settings: ComposedEmailSendingOptionsExt | None = None


class ComposedEmailRequestExt(V2Model):
    """POST /future/orders/composed-email: one email with attachments, created once per idempotencyId."""

    dotnet_type: ClassVar[str] = f"{_NS}.ComposedEmailRequestExt"
    required_members: ClassVar[tuple[str, ...]] = ("idempotency_id", "recipient")

    idempotency_id: Text | None = Field(
        default=None, description="Required. The same key again answers 200 with the first request's receipt."
    )
    senders_reference: Text | None = None
    requested_send_time: RequestDateTime | None = Field(
        default=None, description="With a UTC offset, not in the past; default now."
    )
    condition_endpoint: Text | None = Field(
        default=None, description='http(s) URL answering {"sendNotification": true|false}.'
    )
    dialogporten_association: DialogportenAssociationExt | None = None
    recipient: RecipientComposedEmailExt | None = None
