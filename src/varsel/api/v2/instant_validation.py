"""The rules of the v2 instant routes, keyed and worded as the reference's two layers word them (reference 0.6, 2.2).

Layer 1 (framework_errors): a member that must be present and is not (key `$`, plus the body parameter `request`),
then [Required] members that are null or blank (`The X field is required.`, keyed by the C# property path: the JSON
`recipient` of the deprecated route is `InstantNotificationRecipient`, its `recipientSms` is
`ShortMessageDeliveryDetails`, an instant `smsSettings` is `ShortMessageContent`, `/instant/email`'s
`recipientEmail` is `InstantEmailDetails`). Layer 2 (InstantValidator): every rule, every failure reported together.

On top of the reference's rules, varsel's own where it needs them, as for chains: the lengths the database holds,
no control characters in subjects and bodies, an SMS sender a gateway can show. Addresses are normalised as
everywhere in varsel (varsel.orders.addresses): an email address as email-validator writes it, a mobile number in
E.164. The subject is stored as given, line breaks included (the reference does not fold an instant subject, unlike
a chain's); every provider sends it as one header line (varsel.providers.mime), so a line break in it is a space in
the sent message and never a header of its own.
"""

from __future__ import annotations

from collections import defaultdict

from varsel.api.v2.instant_models import (
    InstantEmailDetailsExt,
    InstantEmailNotificationOrderRequestExt,
    InstantNotificationOrderRequestExt,
    InstantRequest,
    InstantSmsNotificationOrderRequestExt,
    ShortMessageDeliveryDetailsExt,
)
from varsel.api.v2.validation import (
    Errors,
    blank,
    max_length,
    missing_member_errors,
    required_object,
    required_text,
)
from varsel.orders.addresses import (
    mobile_number_hint,
    normalize_email_address,
    normalize_mobile_number,
    normalize_sender_address,
)
from varsel.orders.drafts import EmailTemplateSpec, InstantDraft, InstantEmail, InstantSms, SmsTemplateSpec
from varsel.orders.text import has_control_in_body, has_control_in_subject, is_sms_sender, stored_subject
from varsel.orders.vocabulary import EmailContentType
from varsel.problems import hinted
from varsel.settings import Limits, OrderDefaults

BODY_PARAMETER = "request"
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 172_800

# The C# paths of the SMS details on each SMS route.
SMS_KEY = "RecipientSms"
DEPRECATED_KEY = "InstantNotificationRecipient.ShortMessageDeliveryDetails"
EMAIL_KEY = "InstantEmailDetails"


# ---------------------------------------------------------------- layer 1: the framework


def _required_delivery(errors: Errors, key: str, details: ShortMessageDeliveryDetailsExt | None) -> None:
    if details is None:
        return
    required_text(errors, f"{key}.PhoneNumber", details.phone_number, "PhoneNumber")
    required_object(errors, f"{key}.ShortMessageContent", details.sms_settings, "ShortMessageContent")
    if details.sms_settings is not None:
        required_text(errors, f"{key}.ShortMessageContent.Body", details.sms_settings.body, "Body")


def _required_email(errors: Errors, details: InstantEmailDetailsExt | None) -> None:
    if details is None:
        return
    required_text(errors, f"{EMAIL_KEY}.EmailAddress", details.email_address, "EmailAddress")
    required_object(errors, f"{EMAIL_KEY}.EmailSettings", details.email_settings, "EmailSettings")
    if (settings := details.email_settings) is not None:
        required_text(errors, f"{EMAIL_KEY}.EmailSettings.Subject", settings.subject, "Subject")
        required_text(errors, f"{EMAIL_KEY}.EmailSettings.Body", settings.body, "Body")


def framework_errors(request: InstantRequest) -> Errors:
    """What ASP.NET refuses before Altinn's own validators run; empty when the request gets that far."""
    missing = missing_member_errors(request, BODY_PARAMETER)
    if missing:
        return missing
    errors: Errors = defaultdict(list)
    required_text(errors, "IdempotencyId", request.idempotency_id, "IdempotencyId")
    if isinstance(request, InstantSmsNotificationOrderRequestExt):
        required_object(errors, SMS_KEY, request.recipient_sms, SMS_KEY)
        _required_delivery(errors, SMS_KEY, request.recipient_sms)
    elif isinstance(request, InstantNotificationOrderRequestExt):
        recipient = request.recipient
        required_object(errors, "InstantNotificationRecipient", recipient, "InstantNotificationRecipient")
        if recipient is not None:
            required_object(errors, DEPRECATED_KEY, recipient.recipient_sms, "ShortMessageDeliveryDetails")
            _required_delivery(errors, DEPRECATED_KEY, recipient.recipient_sms)
    else:
        required_object(errors, EMAIL_KEY, request.recipient_email, EMAIL_KEY)
        _required_email(errors, request.recipient_email)
    return dict(errors)


# ---------------------------------------------------------------- layer 2: the rules


class InstantValidator:
    def __init__(self, limits: Limits, defaults: OrderDefaults) -> None:
        self._limits = limits
        self._defaults = defaults

    def sms(self, request: InstantSmsNotificationOrderRequestExt) -> InstantDraft | Errors:
        """POST /instant/sms: the draft to send, or every rule it breaks (a request that passed framework_errors)."""
        return self._sms(request.idempotency_id, request.senders_reference, SMS_KEY, request.recipient_sms)

    def deprecated(self, request: InstantNotificationOrderRequestExt) -> InstantDraft | Errors:
        """POST /instant (deprecated): as /instant/sms, keyed by the deprecated shape's C# path."""
        details = request.recipient.recipient_sms if request.recipient is not None else None
        return self._sms(request.idempotency_id, request.senders_reference, DEPRECATED_KEY, details)

    def email(self, request: InstantEmailNotificationOrderRequestExt) -> InstantDraft | Errors:
        """POST /instant/email: the draft to send, or every rule it breaks (a request that passed framework_errors)."""
        errors: Errors = defaultdict(list)
        self._senders_reference(errors, request.senders_reference)
        details = request.recipient_email
        if details is None:  # refused by framework_errors; the rule layer's words, should it get here
            errors[EMAIL_KEY].append("Email details cannot be null.")
            return dict(errors)
        address = normalize_email_address(details.email_address or "")
        if address is None:
            errors[f"{EMAIL_KEY}.EmailAddress"].append("Invalid email address format.")
        settings = details.email_settings
        if settings is None:
            errors[f"{EMAIL_KEY}.EmailSettings"].append("Email settings cannot be null.")
            return dict(errors)
        key = f"{EMAIL_KEY}.EmailSettings"
        sender = self._defaults.email_from_address
        if settings.sender_email_address is not None:
            # Present is checked, "" included (the reference's rule); only an absent or null one takes the default.
            normalized = normalize_sender_address(settings.sender_email_address)
            if normalized is None:
                errors[f"{key}.SenderEmailAddress"].append("Invalid email address format.")
            else:
                sender = normalized
        subject, body = settings.subject or "", settings.body or ""
        # The reference's rule-layer words for an empty subject and body; framework_errors refuses both first.
        if blank(subject):
            errors[f"{key}.Subject"].append("The email subject cannot be empty.")
        max_length(errors, f"{key}.Subject", subject, self._limits.max_subject_chars)
        # Line breaks are let through (see the module's docstring); any other control character is a mistake.
        if has_control_in_subject(stored_subject(subject)):
            errors[f"{key}.Subject"].append("The email subject must not contain control characters.")
        if blank(body):
            errors[f"{key}.Body"].append("The email body cannot be empty.")
        max_length(errors, f"{key}.Body", body, self._limits.max_email_body_chars)
        if has_control_in_body(body):
            errors[f"{key}.Body"].append(
                "The email body must not contain control characters other than tabs and line breaks."
            )
        # Plain and Html arrive as members, by name or number (lenient_enum); another number stays an int.
        content_type = settings.content_type
        if not isinstance(content_type, EmailContentType):
            errors[f"{key}.ContentType"].append("Email content type must be either Plain or HTML.")
        if errors or address is None or not isinstance(content_type, EmailContentType):
            return dict(errors)
        return InstantDraft(
            idempotency_id=request.idempotency_id or "",
            message=InstantEmail(address, EmailTemplateSpec(sender, subject, body, content_type)),
            senders_reference=request.senders_reference,
        )

    def _sms(
        self,
        idempotency_id: str | None,
        senders_reference: str | None,
        key: str,
        details: ShortMessageDeliveryDetailsExt | None,
    ) -> InstantDraft | Errors:
        errors: Errors = defaultdict(list)
        self._senders_reference(errors, senders_reference)
        if details is None:  # refused by framework_errors; the rule layer's words, should it get here
            errors[key].append("SMS details cannot be null.")
            return dict(errors)
        mobile = normalize_mobile_number(details.phone_number or "")
        if mobile is None:
            message = "Recipient phone number is not a valid mobile number."  # the reference's words: the hint is apart
            errors[f"{key}.PhoneNumber"].append(hinted(message, mobile_number_hint(details.phone_number or "")))
        ttl = details.time_to_live_in_seconds
        if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            errors[f"{key}.TimeToLiveInSeconds"].append(
                "Time-to-live must be between 60 and 172800 seconds (48 hours)."
            )
        settings = details.sms_settings
        sender, body = self._defaults.sms_sender, ""
        if settings is not None:
            body = settings.body or ""
            if not blank(settings.sender):
                # Trimmed, as a chain's sender is (the reference keeps an instant sender as given); then varsel's
                # rule, which the reference does not have: what an SMS gateway can show as the sender.
                sender = (settings.sender or "").strip()
                if not is_sms_sender(sender):
                    errors[f"{key}.ShortMessageContent.Sender"].append(
                        "The sender must be a number of at most 15 digits or a name of at most 11 letters, digits, "
                        "spaces, dots or hyphens."
                    )
            max_length(errors, f"{key}.ShortMessageContent.Body", body, self._limits.max_sms_body_chars)
            if has_control_in_body(body):
                errors[f"{key}.ShortMessageContent.Body"].append(
                    "The SMS body must not contain control characters other than tabs and line breaks."
                )
        if errors or mobile is None or settings is None or blank(body):
            return dict(errors)
        return InstantDraft(
            idempotency_id=idempotency_id or "",
            message=InstantSms(mobile, SmsTemplateSpec(sender, body), ttl),
            senders_reference=senders_reference,
        )

    def _senders_reference(self, errors: Errors, value: str | None) -> None:
        max_length(errors, "SendersReference", value, self._limits.max_senders_reference_chars)
