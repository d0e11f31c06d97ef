"""The rules an order must pass before it is accepted; each broken rule names its field and the reason.

Messages follow the reference service's wording where it has one, so clients that show them to people keep
making sense. All errors of a request are reported together, not the first one only.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from varsel.api.v1.models import (
    EmailNotificationOrderRequest,
    NotificationOrderRequest,
    OrderRequestBase,
    RecipientRequest,
    SmsNotificationOrderRequest,
)
from varsel.clock import Clock
from varsel.orders.addresses import (
    condition_endpoint_problem,
    mobile_number_hint,
    normalize_email_address,
    normalize_mobile_number,
    normalize_sender_address,
)
from varsel.orders.drafts import EmailTemplateSpec, OrderDraft, RecipientSpec, SmsTemplateSpec
from varsel.orders.text import has_control_in_body, has_control_in_subject, is_sms_sender, stored_subject
from varsel.orders.vocabulary import EmailContentType, NotificationChannel
from varsel.problems import ValidationProblem, hinted
from varsel.settings import Limits, OrderDefaults

# How far in the past a requested send time may lie (clock skew and slow clients), as the reference allows.
SEND_TIME_TOLERANCE = timedelta(minutes=5)


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


class OrderValidator:
    def __init__(
        self, clock: Clock, limits: Limits, defaults: OrderDefaults, condition_allowed_hosts: frozenset[str]
    ) -> None:
        self._clock = clock
        self._limits = limits
        self._defaults = defaults
        self._allowed_hosts = condition_allowed_hosts

    # ------------------------------------------------------------ the three order shapes

    def order(self, request: NotificationOrderRequest) -> OrderDraft:
        errors: dict[str, list[str]] = defaultdict(list)
        channel = request.notification_channel
        if channel is None:
            errors["NotificationChannel"].append("A notification channel must be defined.")
        email_template = sms_template = None
        if channel is not None and channel.uses_email:
            if request.email_template is None:
                errors["EmailTemplate"].append("An email template is required for the selected notification channel.")
            else:
                t = request.email_template
                email_template = self._email_template(
                    errors, "EmailTemplate.", t.from_address, t.subject, t.body, t.content_type, "email template"
                )
        if channel is not None and channel.uses_sms:
            if request.sms_template is None:
                errors["SmsTemplate"].append("An SMS template is required for the selected notification channel.")
            else:
                t2 = request.sms_template
                sms_template = self._sms_template(errors, "SmsTemplate.", t2.sender_number, t2.body, "SMS template")
        return self._finish(errors, request, channel, email_template, sms_template)

    def email_order(self, request: EmailNotificationOrderRequest) -> OrderDraft:
        errors: dict[str, list[str]] = defaultdict(list)
        template = self._email_template(
            errors, "", request.from_address, request.subject, request.body, request.content_type, "email"
        )
        return self._finish(errors, request, NotificationChannel.EMAIL, template, None)

    def sms_order(self, request: SmsNotificationOrderRequest) -> OrderDraft:
        errors: dict[str, list[str]] = defaultdict(list)
        template = self._sms_template(errors, "", request.sender_number, request.body, "SMS")
        return self._finish(errors, request, NotificationChannel.SMS, None, template)

    # ------------------------------------------------------------ shared parts

    def _finish(
        self,
        errors: dict[str, list[str]],
        request: OrderRequestBase,
        channel: NotificationChannel | None,
        email_template: EmailTemplateSpec | None,
        sms_template: SmsTemplateSpec | None,
    ) -> OrderDraft:
        send_time = self._send_time(errors, request.requested_send_time)
        condition = self._condition_endpoint(errors, request.condition_endpoint)
        limits = self._limits
        self._max_length(errors, "SendersReference", request.senders_reference, limits.max_senders_reference_chars)
        self._max_length(errors, "ResourceId", request.resource_id, limits.max_resource_id_chars)
        self._max_length(errors, "ResourceAction", request.resource_action, 100)
        self._identifier(errors, "ResourceId", request.resource_id)
        self._identifier(errors, "ResourceAction", request.resource_action)
        resource_id = None if _blank(request.resource_id) else (request.resource_id or "").strip()
        resource_action = None if _blank(request.resource_action) else (request.resource_action or "").strip()
        if request.resource_action:
            # The reference's two rules, with its words: any action needs a resource, and one given for a resource
            # must say something (an action of blanks would be authorised as no action at all).
            if resource_id is None:
                errors["ResourceAction"].append("ResourceAction cannot be specified without a ResourceId.")
            elif resource_action is None:
                errors["ResourceAction"].append("ResourceAction cannot be blank or whitespace.")
        recipients = self._recipients(errors, request.recipients, channel)
        if errors or channel is None or send_time is None:
            raise ValidationProblem(dict(errors))
        return OrderDraft(
            channel=channel,
            requested_send_time=send_time,
            recipients=recipients,
            senders_reference=request.senders_reference,
            condition_endpoint=condition,
            ignore_reservation=request.ignore_reservation,
            resource_id=resource_id,
            resource_action=resource_action,
            email_template=email_template,
            sms_template=sms_template,
            fallback_after_minutes=request.fallback_after_minutes,
        )

    def _send_time(self, errors: dict[str, list[str]], value: datetime | None) -> datetime | None:
        now = self._clock.now()
        if value is None:
            return now
        if value.tzinfo is None or value.utcoffset() is None:
            errors["RequestedSendTime"].append("The requested send time value must have specified a time zone.")
            return None
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            errors["RequestedSendTime"].append("The requested send time is out of range.")
            return None
        if utc < now - SEND_TIME_TOLERANCE:
            errors["RequestedSendTime"].append("Send time must be in the future. Leave blank to send immediately.")
            return None
        return utc

    def _condition_endpoint(self, errors: dict[str, list[str]], value: str | None) -> str | None:
        if _blank(value):
            return None
        url = (value or "").strip()
        if len(url) > self._limits.max_url_chars:
            errors["ConditionEndpoint"].append(
                f"The condition endpoint must be at most {self._limits.max_url_chars} characters long."
            )
            return None
        problem = condition_endpoint_problem(url, self._allowed_hosts)
        if problem:
            errors["ConditionEndpoint"].append(problem)
            return None
        return url

    def _email_template(
        self,
        errors: dict[str, list[str]],
        prefix: str,
        from_address: str | None,
        subject: str | None,
        body: str | None,
        content_type: EmailContentType | None,
        noun: str,
    ) -> EmailTemplateSpec | None:
        before = len(errors)
        sender = self._defaults.email_from_address
        if not _blank(from_address):
            normalized = normalize_sender_address(from_address or "")
            if normalized is None:
                errors[f"{prefix}FromAddress"].append("Invalid email address format.")
            else:
                sender = normalized
        # A line break in a subject would start a new header: fold it to a space instead.
        folded = stored_subject(subject) if subject is not None else None
        if _blank(folded):
            errors[f"{prefix}Subject"].append(f"The {noun} subject must not be empty.")
        else:
            self._max_length(errors, f"{prefix}Subject", folded, self._limits.max_subject_chars)
            if has_control_in_subject(folded or ""):
                errors[f"{prefix}Subject"].append(f"The {noun} subject must not contain control characters.")
        if _blank(body):
            errors[f"{prefix}Body"].append(f"The {noun} body must not be empty.")
        else:
            self._max_length(errors, f"{prefix}Body", body, self._limits.max_email_body_chars)
            self._text(errors, f"{prefix}Body", body, noun)
        if len(errors) != before or folded is None or body is None:
            return None
        return EmailTemplateSpec(sender, folded.strip(), body, content_type or EmailContentType.PLAIN)

    def _sms_template(
        self, errors: dict[str, list[str]], prefix: str, sender: str | None, body: str | None, noun: str
    ) -> SmsTemplateSpec | None:
        before = len(errors)
        chosen = self._defaults.sms_sender
        if not _blank(sender):
            candidate = (sender or "").strip()
            if is_sms_sender(candidate):
                chosen = candidate
            else:
                errors[f"{prefix}SenderNumber"].append(
                    "The sender must be a number of at most 15 digits or a name of at most 11 letters, digits, "
                    "spaces, dots or hyphens."
                )
        if _blank(body):
            errors[f"{prefix}Body"].append(f"The {noun} body must not be empty.")
        else:
            self._max_length(errors, f"{prefix}Body", body, self._limits.max_sms_body_chars)
            self._text(errors, f"{prefix}Body", body, noun)
        if len(errors) != before or body is None:
            return None
        return SmsTemplateSpec(chosen, body)

    def _recipients(
        self,
        errors: dict[str, list[str]],
        recipients: list[RecipientRequest] | None,
        channel: NotificationChannel | None,
    ) -> tuple[RecipientSpec, ...]:
        if not recipients:
            errors["Recipients"].append("One or more recipient is required.")
            return ()
        if len(recipients) > self._limits.max_recipients:
            errors["Recipients"].append(f"An order can have at most {self._limits.max_recipients} recipients.")
            return ()
        uses_email = channel is None or channel.uses_email
        uses_sms = channel is None or channel.uses_sms
        specs: list[RecipientSpec] = []
        for index, recipient in enumerate(recipients):
            field = f"Recipients[{index}]"
            # An address the channel cannot use is ignored, as the reference does, not refused.
            email = None if not uses_email or _blank(recipient.email_address) else recipient.email_address
            mobile = None if not uses_sms or _blank(recipient.mobile_number) else recipient.mobile_number
            nin = None if _blank(recipient.national_identity_number) else recipient.national_identity_number
            org = None if _blank(recipient.organization_number) else recipient.organization_number
            if email is None and mobile is None and nin is None and org is None:
                errors[field].append(_missing_identifier_message(channel))
                continue
            if email is not None:
                normalized_email = normalize_email_address(email)
                if normalized_email is None:
                    errors[f"{field}.EmailAddress"].append("Invalid email address format.")
                email = normalized_email
            if mobile is not None:
                normalized_mobile = normalize_mobile_number(mobile)
                if normalized_mobile is None:
                    # The words are the reference's, which clients may match; the hint goes into the detail.
                    errors[f"{field}.MobileNumber"].append(
                        hinted("Invalid mobile number format.", mobile_number_hint(mobile))
                    )
                mobile = normalized_mobile
            if nin is not None and not (len(nin) == 11 and nin.isascii() and nin.isdigit()):
                errors[f"{field}.NationalIdentityNumber"].append("National identity number must be 11 digits long.")
            if org is not None and not (len(org) == 9 and org.isascii() and org.isdigit()):
                errors[f"{field}.OrganizationNumber"].append("Organization number must be 9 digits long.")
            # Identity numbers stand alone on their recipient whatever the channel, so an address the channel would
            # ignore still counts here; a blank one counts as absent, as it does everywhere else.
            has_address = not _blank(recipient.email_address) or not _blank(recipient.mobile_number)
            if nin is not None and (org is not None or has_address):
                errors[field].append(
                    "National identity number cannot be combined with email address, mobile number, or "
                    "organization number."
                )
            elif org is not None and has_address:
                errors[field].append(
                    "Organization number cannot be combined with email address, mobile number, or national "
                    "identity number."
                )
            specs.append(RecipientSpec(email, mobile, nin, org))
        return tuple(specs)

    @staticmethod
    def _max_length(errors: dict[str, list[str]], field: str, value: str | None, limit: int) -> None:
        if value is not None and len(value) > limit:
            errors[field].append(f"Must be at most {limit} characters long; it is {len(value)}.")

    @staticmethod
    def _text(errors: dict[str, list[str]], field: str, value: str | None, noun: str) -> None:
        if value is not None and has_control_in_body(value):
            message = f"The {noun} body must not contain control characters other than tabs and line breaks."
            errors[field].append(message)

    @staticmethod
    def _identifier(errors: dict[str, list[str]], field: str, value: str | None) -> None:
        # Resource ids and actions name things (app_ttd_x, read) and are matched against the registry's
        # authorisations: a control character, or a format character such as a right-to-left override that makes
        # the id display as another, cannot be part of one.
        if value is not None and any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
            errors[field].append("Must not contain control or formatting characters.")


def _missing_identifier_message(channel: NotificationChannel | None) -> str:
    if channel is NotificationChannel.EMAIL:
        return (
            "Either a valid email address, organization number, or national identity number must be provided "
            "for each recipient."
        )
    if channel is NotificationChannel.SMS:
        return (
            "Either a valid mobile number starting with country code, organization number, or national identity "
            "number must be provided for each recipient."
        )
    return (
        "Either a valid email address, mobile number starting with country code, organization number, or national "
        "identity number must be provided for each recipient."
    )
