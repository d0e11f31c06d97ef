"""The v2 rules for POST /future/orders, keyed and worded as the reference's two layers word them (reference 0.6, 1.2).

Layer 1 (framework_errors) is what ASP.NET answers before Altinn's validators run: a member that must be present in
the JSON and is not (key `$`, plus `notificationOrderRequest`), then [Required] members that are null or blank (`The
X field is required.`, keyed by the C# property path). Layer 2 (ChainValidator.chain) runs every rule and reports
every failure together; on top of the reference's rules it applies varsel's own where varsel needs them (condition
endpoints only on public DNS names, the lengths the database holds, no control characters in subjects and bodies).
The addresses are normalised as everywhere in varsel: an email address as email-validator writes it, a mobile
number in E.164 (the reference stores the number as given; varsel's pipeline sends to E.164 numbers).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel

from varsel.api.v2.models import (
    EmailSendingOptionsExt,
    NotificationOrderChainRequestExt,
    NotificationRecipientExt,
    RecipientBaseExt,
    RecipientEmailExt,
    RecipientExternalIdentityExt,
    RecipientOrganizationExt,
    RecipientPersonExt,
    SmsSendingOptionsExt,
    V2Model,
)
from varsel.clock import Clock
from varsel.orders.addresses import (
    condition_endpoint_problem,
    mobile_number_hint,
    normalize_email_address,
    normalize_mobile_number,
    normalize_sender_address,
)
from varsel.orders.drafts import ChainDraft, EmailTemplateSpec, OrderDraft, RecipientSpec, SmsTemplateSpec
from varsel.orders.text import has_control_in_body, has_control_in_subject, is_sms_sender, stored_subject
from varsel.orders.vocabulary import EmailContentType, NotificationChannel, OrderType, SendingTimePolicy
from varsel.problems import hinted
from varsel.recipients.identities import MAX_IDENTITY_LENGTH, RESOURCE_URN_PREFIX, parse_external_identity
from varsel.settings import Limits, OrderDefaults

Errors = dict[str, list[str]]

BODY_PARAMETER = "notificationOrderRequest"
# Columns' widths: what the database holds (the reference has no limits at all).
MAX_RESOURCE_ACTION_CHARS = 100

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_BLANK_OR_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]")
_CHANNELS = dict(enumerate(NotificationChannel))
_CONTENT_TYPES = dict(enumerate(EmailContentType))
_POLICIES = {1: SendingTimePolicy.ANYTIME, 2: SendingTimePolicy.DAYTIME}

# Each recipient kind: its JSON member and the C# property naming it in keys.
_KINDS = (
    ("recipient_email", "RecipientEmail"),
    ("recipient_sms", "RecipientSms"),
    ("recipient_person", "RecipientPerson"),
    ("recipient_organization", "RecipientOrganization"),
    ("recipient_external_identity", "RecipientExternalIdentity"),
)


def blank(value: str | None) -> bool:
    return value is None or not value.strip()


def max_length(errors: Errors, key: str, value: str | None, limit: int) -> None:
    """varsel's own length rule (the reference has none): what the database's columns and the providers take."""
    if value is not None and len(value) > limit:
        errors[key].append(f"Must be at most {limit} characters long; it is {len(value)}.")


def _member(enum_value: Any, numbers: dict[int, Any]) -> Any:
    """The enum member a parsed value stands for, or None for an undeclared one."""
    if isinstance(enum_value, int) and not isinstance(enum_value, bool) and not hasattr(enum_value, "value"):
        return numbers.get(enum_value)
    return enum_value


# ---------------------------------------------------------------- layer 1: the framework


def _missing_members(model: BaseModel) -> tuple[str, list[str]] | None:
    """The first object, as System.Text.Json finishes them (inner objects first, in document order), that lacks
    members it must have: its .NET type and the JSON names missing."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, BaseModel):
                found = _missing_members(child)
                if found is not None:
                    return found
    if isinstance(model, V2Model):
        fields = type(model).model_fields
        missing = [fields[name].alias or name for name in model.required_members if name not in model.model_fields_set]
        if missing:
            return model.dotnet_type, missing
    return None


def required_text(errors: Errors, key: str, value: str | None, name: str) -> None:
    if blank(value):
        errors[key].append(f"The {name} field is required.")


def required_object(errors: Errors, key: str, value: object, name: str) -> None:
    if value is None:
        errors[key].append(f"The {name} field is required.")


def required_email_settings(errors: Errors, key: str, settings: EmailSendingOptionsExt | None) -> None:
    if settings is not None:
        required_text(errors, f"{key}.Subject", settings.subject, "Subject")
        required_text(errors, f"{key}.Body", settings.body, "Body")


def _required_sms_settings(errors: Errors, key: str, settings: SmsSendingOptionsExt | None) -> None:
    if settings is not None:
        required_text(errors, f"{key}.Body", settings.body, "Body")


def _required_in_recipient(errors: Errors, key: str, recipient: NotificationRecipientExt | None) -> None:
    if recipient is None:
        return
    if (email := recipient.recipient_email) is not None:
        required_object(errors, f"{key}.RecipientEmail.Settings", email.email_settings, "Settings")
        required_email_settings(errors, f"{key}.RecipientEmail.Settings", email.email_settings)
    if (sms := recipient.recipient_sms) is not None:
        required_text(errors, f"{key}.RecipientSms.PhoneNumber", sms.phone_number, "PhoneNumber")
        required_object(errors, f"{key}.RecipientSms.Settings", sms.sms_settings, "Settings")
        _required_sms_settings(errors, f"{key}.RecipientSms.Settings", sms.sms_settings)
    looked_up: list[tuple[RecipientBaseExt, str, str | None, str]] = []
    if (person := recipient.recipient_person) is not None:
        looked_up.append((person, "RecipientPerson", person.national_identity_number, "NationalIdentityNumber"))
    if (org := recipient.recipient_organization) is not None:
        looked_up.append((org, "RecipientOrganization", org.org_number, "OrgNumber"))
    if (external := recipient.recipient_external_identity) is not None:
        looked_up.append((external, "RecipientExternalIdentity", external.external_identity, "ExternalIdentity"))
    for kind, name, identifier, identifier_name in looked_up:
        required_text(errors, f"{key}.{name}.{identifier_name}", identifier, identifier_name)
        required_email_settings(errors, f"{key}.{name}.EmailSettings", kind.email_settings)
        _required_sms_settings(errors, f"{key}.{name}.SmsSettings", kind.sms_settings)


def missing_member_errors(request: V2Model, parameter: str) -> Errors:
    """System.Text.Json's refusal of a body lacking a member it must have (with the entry ASP.NET adds for the body
    parameter), or nothing."""
    missing = _missing_members(request)
    if missing is None:
        return {}
    dotnet_type, names = missing
    listed = ", ".join(f"'{name}'" for name in names)
    return {
        "$": [f"JSON deserialization for type '{dotnet_type}' was missing required properties including: {listed}."],
        parameter: [f"The {parameter} field is required."],
    }


def framework_errors(request: NotificationOrderChainRequestExt) -> Errors:
    """What ASP.NET refuses before Altinn's own validators run; empty when the request gets that far."""
    missing = missing_member_errors(request, BODY_PARAMETER)
    if missing:
        return missing
    errors: Errors = defaultdict(list)
    required_text(errors, "IdempotencyId", request.idempotency_id, "IdempotencyId")
    required_object(errors, "Recipient", request.recipient, "Recipient")
    _required_in_recipient(errors, "Recipient", request.recipient)
    for index, reminder in enumerate(request.reminders or []):
        required_object(errors, f"Reminders[{index}].Recipient", reminder.recipient, "Recipient")
        _required_in_recipient(errors, f"Reminders[{index}].Recipient", reminder.recipient)
    return dict(errors)


def conversion_errors(errors: Errors, parameter: str = BODY_PARAMETER) -> Errors:
    """Pydantic's errors for a body that does not parse, keyed as System.Text.Json paths (`$.recipient.…`), with
    the body parameter's entry ASP.NET adds."""
    keyed: Errors = {}
    for key, messages in errors.items():
        path = "$" if key == "$" else "$." + re.sub(r"(^|\.)([A-Z])", lambda m: m[1] + m[2].lower(), key)
        keyed.setdefault(path, []).extend(messages)
    keyed[parameter] = [f"The {parameter} field is required."]
    return keyed


# ---------------------------------------------------------------- layer 2: the rules


@dataclass(frozen=True)
class _Shipment:
    """One order of the chain as its recipient makes it, before its send time is known."""

    channel: NotificationChannel
    recipient: RecipientSpec
    email_template: EmailTemplateSpec | None
    sms_template: SmsTemplateSpec | None
    sms_policy: SendingTimePolicy
    ignore_reservation: bool | None = None
    resource_id: str | None = None
    resource_action: str | None = None
    use_stale_contact_information: bool = False


class OrderHead(Protocol):
    """The top level of a v2 order request (a chain's, a composed email's)."""

    @property
    def requested_send_time(self) -> datetime | None: ...
    @property
    def condition_endpoint(self) -> str | None: ...
    @property
    def senders_reference(self) -> str | None: ...


class ChainValidator:
    def __init__(
        self, clock: Clock, limits: Limits, defaults: OrderDefaults, condition_allowed_hosts: frozenset[str]
    ) -> None:
        self._clock = clock
        self._limits = limits
        self._defaults = defaults
        self._allowed_hosts = condition_allowed_hosts

    def order_head(self, errors: Errors, request: OrderHead, now: datetime) -> tuple[datetime | None, str | None]:
        """The rules of a v2 order's top level that chains and composed emails share: the send time (None when
        refused) and the condition endpoint; the sender's reference is bounded."""
        send_time = self._send_time(
            errors,
            "RequestedSendTime",
            request.requested_send_time,
            now,
            "The requested send time value must have specified a time zone.",
            "RequestedSendTime must be greater than or equal to now.",
        )
        condition = self._condition(errors, "ConditionEndpoint", request.condition_endpoint)
        self._max_length(
            errors, "SendersReference", request.senders_reference, self._limits.max_senders_reference_chars
        )
        return send_time, condition

    def chain(self, request: NotificationOrderChainRequestExt) -> ChainDraft | Errors:
        """The chain to store, or every rule it breaks (a request that passed framework_errors)."""
        now = self._clock.now()
        errors: Errors = defaultdict(list)
        send_time, condition = self.order_head(errors, request, now)
        main = self._recipient(errors, "Recipient", request.recipient)
        main_time = send_time or now
        reminders: list[tuple[_Shipment | None, datetime | None, str | None, str | None]] = []
        for index, reminder in enumerate(request.reminders or []):
            key = f"Reminders[{index}]"
            delay, explicit = reminder.delay_days, reminder.requested_send_time
            if (delay is None) == (explicit is None):
                errors[key].append("Either DelayDays or RequestedSendTime must be defined, but not both.")
            if delay is not None and delay < 1:
                errors[f"{key}.DelayDays"].append("DelayDays must be greater than or equal to 1 day.")
            if delay is not None and explicit is not None:
                errors[f"{key}.RequestedSendTime"].append("RequestedSendTime must be null when DelayDays is set.")
                errors[f"{key}.DelayDays"].append("DelayDays must be null when RequestedSendTime is set.")
            reminder_time = self._send_time(
                errors,
                f"{key}.RequestedSendTime",
                explicit,
                now,
                "The RequestedSendTime must have specified a time zone.",
                "RequestedSendTime must be greater than or equal to the current UTC time.",
            )
            if explicit is None:
                reminder_time = None
                if delay is not None and delay >= 1:
                    try:
                        reminder_time = main_time + timedelta(days=delay)
                    except OverflowError:
                        errors[f"{key}.DelayDays"].append("The reminder's send time would be out of range.")
            reminder_condition = self._condition(errors, f"{key}.ConditionEndpoint", reminder.condition_endpoint)
            self._max_length(
                errors, f"{key}.SendersReference", reminder.senders_reference, self._limits.max_senders_reference_chars
            )
            shipment = self._recipient(errors, f"{key}.Recipient", reminder.recipient)
            reminders.append((shipment, reminder_time, reminder_condition, reminder.senders_reference))
        if errors or main is None or send_time is None or request.idempotency_id is None:
            return dict(errors)
        association = None
        if request.dialogporten_association is not None:
            association = request.dialogporten_association.model_dump(by_alias=True, exclude_none=True)
        drafts = []
        for shipment, reminder_time, reminder_condition, reference in reminders:
            if shipment is None or reminder_time is None:
                return dict(errors)  # not reached: such a reminder has errors
            drafts.append(_draft(shipment, reminder_time, OrderType.REMINDER, reference, reminder_condition))
        # varsel's fallbackAfterMinutes (Altinn ignores it) applies to every order of the chain.
        fallback = request.fallback_after_minutes
        main_draft = _draft(main, send_time, OrderType.NOTIFICATION, request.senders_reference, condition)
        return ChainDraft(
            idempotency_id=request.idempotency_id,
            main=replace(main_draft, fallback_after_minutes=fallback),
            reminders=tuple(replace(draft, fallback_after_minutes=fallback) for draft in drafts),
            dialogporten_association=association,
        )

    # ------------------------------------------------------------ times and endpoints

    @staticmethod
    def _send_time(
        errors: Errors, key: str, value: datetime | None, now: datetime, zone_message: str, past_message: str
    ) -> datetime | None:
        if value is None:
            return now
        naive = value.tzinfo is None or value.utcoffset() is None
        if naive:
            errors[key].append(zone_message)
        try:
            utc = value.replace(tzinfo=UTC) if naive else value.astimezone(UTC)
        except OverflowError:
            errors[key].append("The requested send time is out of range.")
            return None
        if utc < now:
            errors[key].append(past_message)
        return None if naive or utc < now else utc

    def _condition(self, errors: Errors, key: str, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip()
        if len(url) > self._limits.max_url_chars:
            errors[key].append(f"Must be at most {self._limits.max_url_chars} characters long; it is {len(url)}.")
            return None
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError:
            parts = None
        if parts is None or not _SCHEME.match(url) or _BLANK_OR_CONTROL.search(url):
            errors[key].append("ConditionEndpoint must be a valid absolute URI or null.")
            return None
        scheme = parts.scheme.lower()
        if scheme in ("http", "https") and not parts.hostname:
            errors[key].append("ConditionEndpoint must be a valid absolute URI or null.")
            return None
        if scheme not in ("http", "https"):
            errors[key].append("ConditionEndpoint must use http or https scheme.")
            return None
        # varsel's own rule on top: it calls the endpoint from inside, so only public DNS names (unless allowed).
        problem = condition_endpoint_problem(url, self._allowed_hosts)
        if problem:
            errors[key].append(problem)
            return None
        return url

    # ------------------------------------------------------------ recipients

    def _recipient(self, errors: Errors, key: str, recipient: NotificationRecipientExt | None) -> _Shipment | None:
        if recipient is None:
            return None  # refused by framework_errors
        given = [(getattr(recipient, member), name) for member, name in _KINDS if getattr(recipient, member)]
        if len(given) != 1:
            errors[key].append("Must have exactly one recipient.")
        shipments = [self._kind(errors, f"{key}.{name}", kind) for kind, name in given]
        return shipments[0] if len(shipments) == 1 else None

    def _kind(self, errors: Errors, key: str, kind: Any) -> _Shipment | None:
        before = sum(len(v) for v in errors.values())
        if isinstance(kind, RecipientPersonExt | RecipientOrganizationExt | RecipientExternalIdentityExt):
            shipment = self._looked_up(errors, key, kind)
        elif isinstance(kind, RecipientEmailExt):
            normalized = self._email_address(errors, f"{key}.EmailAddress", kind.email_address)
            template = self._email_settings(errors, f"{key}.Settings", kind.email_settings)
            shipment = None
            if normalized is not None and template is not None:
                shipment = _Shipment(
                    NotificationChannel.EMAIL,
                    RecipientSpec(email_address=normalized),
                    template,
                    None,
                    SendingTimePolicy.ANYTIME,
                )
        else:
            mobile = normalize_mobile_number(kind.phone_number or "")
            if mobile is None:
                message = (
                    "Recipient phone number is not a valid mobile number."  # the reference's words: the hint is apart
                )
                errors[f"{key}.PhoneNumber"].append(hinted(message, mobile_number_hint(kind.phone_number or "")))
            sms = self._sms_settings(errors, f"{key}.Settings", kind.sms_settings)
            shipment = None
            if mobile is not None and sms is not None:
                shipment = _Shipment(NotificationChannel.SMS, RecipientSpec(mobile_number=mobile), None, *sms)
        return shipment if sum(len(v) for v in errors.values()) == before else None

    @staticmethod
    def _email_address(errors: Errors, key: str, address: str | None) -> str | None:
        """A recipient's address as stored, or None with the rule it breaks."""
        if blank(address):
            errors[key].append("'Email Address' must not be empty.")
            errors[key].append("Invalid email address format.")
            return None
        normalized = normalize_email_address(address or "")
        if normalized is None:
            errors[key].append("Invalid email address format.")
        return normalized

    def _looked_up(
        self,
        errors: Errors,
        key: str,
        kind: RecipientPersonExt | RecipientOrganizationExt | RecipientExternalIdentityExt,
    ) -> _Shipment | None:
        channel = _member(kind.channel_schema, _CHANNELS)
        if not isinstance(channel, NotificationChannel):
            errors[f"{key}.ChannelSchema"].append("Invalid channel scheme value.")
            channel = None
        email_missing, sms_missing = kind.email_settings is None, kind.sms_settings is None
        if channel is NotificationChannel.EMAIL_AND_SMS:
            if email_missing:
                errors[f"{key}.EmailSettings"].append("EmailSettings must be set when ChannelSchema is EmailAndSms")
            if sms_missing:
                errors[f"{key}.SmsSettings"].append("SmsSettings must be set when ChannelSchema is EmailAndSms")
        elif channel in (NotificationChannel.EMAIL_PREFERRED, NotificationChannel.SMS_PREFERRED):
            if email_missing:
                errors[f"{key}.EmailSettings"].append(
                    "EmailSettings must be set when ChannelSchema is SmsPreferred or EmailPreferred"
                )
            if sms_missing:
                errors[f"{key}.SmsSettings"].append(
                    "SmsSettings must be set when ChannelSchema is SmsPreferred or EmailPreferred"
                )
        elif channel is NotificationChannel.SMS and sms_missing:
            errors[f"{key}.SmsSettings"].append("SmsSettings must be set when ChannelSchema is Sms")
        elif channel is NotificationChannel.EMAIL and email_missing:
            errors[f"{key}.EmailSettings"].append("EmailSettings must be set when ChannelSchema is Email")
        email = self._email_settings(errors, f"{key}.EmailSettings", kind.email_settings) if not email_missing else None
        sms = self._sms_settings(errors, f"{key}.SmsSettings", kind.sms_settings) if not sms_missing else None
        resource_id, resource_action = kind.resource_id, kind.resource_action
        if resource_id is not None and not (
            resource_id.startswith(RESOURCE_URN_PREFIX) and len(resource_id) > len(RESOURCE_URN_PREFIX)
        ):
            errors[f"{key}.ResourceId"].append("ResourceId must have a valid syntax.")
        self._max_length(errors, f"{key}.ResourceId", resource_id, self._limits.max_resource_id_chars)
        if resource_action:
            if blank(resource_id):
                errors[f"{key}.ResourceAction"].append("ResourceAction cannot be specified without a ResourceId.")
            elif blank(resource_action):
                errors[f"{key}.ResourceAction"].append("ResourceAction cannot be blank or whitespace.")
        self._max_length(errors, f"{key}.ResourceAction", resource_action, MAX_RESOURCE_ACTION_CHARS)
        spec, ignore_reservation, use_stale = self._identity(errors, key, kind)
        if channel is None or spec is None:
            return None
        return _Shipment(
            channel,
            spec,
            email,
            sms[0] if sms else None,
            sms[1] if sms else SendingTimePolicy.DAYTIME,
            ignore_reservation,
            None if blank(resource_id) else resource_id,
            None if blank(resource_action) else (resource_action or "").strip(),
            use_stale,
        )

    @staticmethod
    def _identity(
        errors: Errors, key: str, kind: RecipientPersonExt | RecipientOrganizationExt | RecipientExternalIdentityExt
    ) -> tuple[RecipientSpec | None, bool | None, bool]:
        if isinstance(kind, RecipientPersonExt):
            number = kind.national_identity_number or ""
            if not (len(number) == 11 and number.isascii() and number.isdigit()):
                errors[f"{key}.NationalIdentityNumber"].append("National identity number must be 11 digits long.")
                return None, None, False
            spec = RecipientSpec(national_identity_number=number)
            return spec, kind.ignore_reservation, kind.use_stale_contact_information
        if isinstance(kind, RecipientOrganizationExt):
            number = kind.org_number or ""
            if not (len(number) == 9 and number.isascii() and number.isdigit()):
                errors[f"{key}.OrgNumber"].append("Organization number must be 9 digits long.")
                return None, None, False
            return RecipientSpec(organization_number=number), None, False
        identity = kind.external_identity or ""
        if len(identity) > MAX_IDENTITY_LENGTH:
            errors[f"{key}.ExternalIdentity"].append(
                f"Must be at most {MAX_IDENTITY_LENGTH} characters long; it is {len(identity)}."
            )
            return None, None, False
        # The registry's own reading of the URN: what validation accepts, the look-up can resolve.
        if parse_external_identity(identity) is None:
            errors[f"{key}.ExternalIdentity"].append("Invalid external identity URN format.")
            return None, None, False
        return RecipientSpec(external_identity=identity), None, False

    # ------------------------------------------------------------ settings

    def _email_settings(
        self, errors: Errors, key: str, settings: EmailSendingOptionsExt | None
    ) -> EmailTemplateSpec | None:
        if settings is None:
            return None  # refused by framework_errors where it must be given
        before = sum(len(v) for v in errors.values())
        sender = self._defaults.email_from_address
        if settings.sender_email_address is not None:
            normalized = normalize_sender_address(settings.sender_email_address)
            if normalized is None:
                errors[f"{key}.SenderEmailAddress"].append("The sender email address is not valid.")
            else:
                sender = normalized
        # Each CR LF, CR or LF becomes one space (reference 1.6): a subject is one header line.
        subject = stored_subject(settings.subject or "")
        self._max_length(errors, f"{key}.Subject", subject, self._limits.max_subject_chars)
        if has_control_in_subject(subject):
            errors[f"{key}.Subject"].append("The email subject must not contain control characters.")
        body = settings.body or ""
        self._max_length(errors, f"{key}.Body", body, self._limits.max_email_body_chars)
        if has_control_in_body(body):
            errors[f"{key}.Body"].append(
                "The email body must not contain control characters other than tabs and line breaks."
            )
        if _member(settings.sending_time_policy, _POLICIES) is not SendingTimePolicy.ANYTIME:
            errors[f"{key}.SendingTimePolicy"].append("Email only supports send time anytime")
        content_type = _member(settings.content_type, _CONTENT_TYPES)
        if not isinstance(content_type, EmailContentType):
            errors[f"{key}.ContentType"].append("Email content type must be either Plain or HTML.")
        if sum(len(v) for v in errors.values()) != before or not isinstance(content_type, EmailContentType):
            return None
        return EmailTemplateSpec(sender, subject, body, content_type)

    def _sms_settings(
        self, errors: Errors, key: str, settings: SmsSendingOptionsExt | None
    ) -> tuple[SmsTemplateSpec, SendingTimePolicy] | None:
        if settings is None:
            return None  # refused by framework_errors where it must be given
        before = sum(len(v) for v in errors.values())
        sender = self._defaults.sms_sender
        if not blank(settings.sender):
            candidate = (settings.sender or "").strip()
            # varsel's rule (the reference has none): what an SMS gateway can show as the sender.
            if is_sms_sender(candidate):
                sender = candidate
            else:
                errors[f"{key}.Sender"].append(
                    "The sender must be a number of at most 15 digits or a name of at most 11 letters, digits, "
                    "spaces, dots or hyphens."
                )
        body = settings.body or ""
        self._max_length(errors, f"{key}.Body", body, self._limits.max_sms_body_chars)
        if has_control_in_body(body):
            errors[f"{key}.Body"].append(
                "The SMS body must not contain control characters other than tabs and line breaks."
            )
        policy = _member(settings.sending_time_policy, _POLICIES)
        if not isinstance(policy, SendingTimePolicy):
            errors[f"{key}.SendingTimePolicy"].append("SMS only supports send time daytime and anytime")
        if sum(len(v) for v in errors.values()) != before or not isinstance(policy, SendingTimePolicy):
            return None
        return SmsTemplateSpec(sender, body), policy

    _max_length = staticmethod(max_length)


def _draft(
    shipment: _Shipment,
    send_time: datetime,
    order_type: OrderType,
    senders_reference: str | None,
    condition: str | None,
) -> OrderDraft:
    return OrderDraft(
        channel=shipment.channel,
        requested_send_time=send_time,
        recipients=(shipment.recipient,),
        senders_reference=senders_reference,
        condition_endpoint=condition,
        ignore_reservation=shipment.ignore_reservation,
        resource_id=shipment.resource_id,
        resource_action=shipment.resource_action,
        email_template=shipment.email_template,
        sms_template=shipment.sms_template,
        order_type=order_type,
        sms_sending_time_policy=shipment.sms_policy,
        use_stale_contact_information=shipment.use_stale_contact_information,
    )
