"""Every validation rule of the v1 order API, proved through HTTP.

Field names (`Recipients[0].EmailAddress`, `EmailTemplate.Subject`, `$` for the body itself) and messages are part
of the wire contract: clients parse the one and show the other to people. So refusals are compared exactly, as
the whole `errors` object, which also proves that nothing else was reported.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from varsel.settings import ConditionSettings, Limits, Settings

V1 = "/notifications/api/v1"
ORDERS = f"{V1}/orders"
EMAIL_ORDERS = f"{V1}/orders/email"
SMS_ORDERS = f"{V1}/orders/sms"

Body = dict[str, Any]
Errors = dict[str, list[str]]

VALIDATION_TITLE = "One or more validation errors occurred."
BAD_REQUEST_TYPE = "https://tools.ietf.org/html/rfc9110#section-15.5.1"
PROBLEM_JSON = "application/problem+json"
TRACE_ID = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00")

CHANNEL_REQUIRED = "A notification channel must be defined."
CHANNEL_UNKNOWN = "Input should be 'Email', 'Sms', 'EmailPreferred', 'SmsPreferred' or 'EmailAndSms'."
EMAIL_TEMPLATE_REQUIRED = "An email template is required for the selected notification channel."
SMS_TEMPLATE_REQUIRED = "An SMS template is required for the selected notification channel."
RECIPIENT_REQUIRED = "One or more recipient is required."
MISSING_FOR_EMAIL = (
    "Either a valid email address, organization number, or national identity number must be provided for each "
    "recipient."
)
MISSING_FOR_SMS = (
    "Either a valid mobile number starting with country code, organization number, or national identity number "
    "must be provided for each recipient."
)
MISSING_FOR_ANY = (
    "Either a valid email address, mobile number starting with country code, organization number, or national "
    "identity number must be provided for each recipient."
)
INVALID_EMAIL = "Invalid email address format."
INVALID_MOBILE = "Invalid mobile number format."
INVALID_NIN = "National identity number must be 11 digits long."
INVALID_ORG = "Organization number must be 9 digits long."
NIN_COMBINED = "National identity number cannot be combined with email address, mobile number, or organization number."
ORG_COMBINED = "Organization number cannot be combined with email address, mobile number, or national identity number."
SENDER_INVALID = (
    "The sender must be a number of at most 15 digits or a name of at most 11 letters, digits, spaces, dots or hyphens."
)
NO_TIME_ZONE = "The requested send time value must have specified a time zone."
IN_THE_PAST = "Send time must be in the future. Leave blank to send immediately."
OUT_OF_RANGE = "The requested send time is out of range."
NOT_A_DATE = "Value error, must be a date and time in ISO 8601 format with a UTC offset."
NOT_ABSOLUTE = "The condition endpoint must be a valid absolute http or https URL."
NOT_A_URL = "The condition endpoint must be a valid URL."
IP_LITERAL = (
    "The condition endpoint must name its host by a DNS name, not an IP address"
    " (unless the operator of this service lists the host in VARSEL_CONDITIONS__ALLOWED_HOSTS)."
)
NOT_PUBLIC = (
    "The condition endpoint's host must be a public DNS name with a top-level domain"
    " (unless the operator of this service lists the host in VARSEL_CONDITIONS__ALLOWED_HOSTS)."
)
ACTION_WITHOUT_RESOURCE = "ResourceAction cannot be specified without a ResourceId."
BLANK_ACTION = "ResourceAction cannot be blank or whitespace."
NUL_REFUSED = "Value error, must not contain NUL characters."

EMAIL = "a@example.com"
MOBILE = "+4740000000"
NIN = "12345678901"
ORG = "311000179"


def too_long(limit: int, actual: int) -> str:
    return f"Must be at most {limit} characters long; it is {actual}."


# ---------------------------------------------------------------- request bodies and endpoints


def order(channel: str = "Email", **fields: Any) -> Body:
    """A valid POST /orders body: both templates (an unused one is ignored) and a recipient usable on `channel`."""
    usable: Body = {"emailAddress": EMAIL, "mobileNumber": MOBILE}
    if channel == "Email":
        usable = {"emailAddress": EMAIL}
    elif channel == "Sms":
        usable = {"mobileNumber": MOBILE}
    body: Body = {
        "notificationChannel": channel,
        "emailTemplate": {"subject": "Subject", "body": "Email body"},
        "smsTemplate": {"body": "SMS body"},
        "recipients": [usable],
    }
    return body | fields


def email_order(**fields: Any) -> Body:
    """A valid POST /orders/email body."""
    return {"subject": "Subject", "body": "Email body", "recipients": [{"emailAddress": EMAIL}]} | fields


def sms_order(**fields: Any) -> Body:
    """A valid POST /orders/sms body."""
    return {"body": "SMS body", "recipients": [{"mobileNumber": MOBILE}]} | fields


@dataclass(frozen=True)
class Shape:
    """One way to order: an endpoint, and for /orders a channel. `uses` is what the recipients' addresses may be."""

    name: str
    path: str
    make: Callable[..., Body]
    uses: str  # "email", "sms" or "any"

    def __str__(self) -> str:
        return self.name


def _order_on(channel: str) -> Callable[..., Body]:
    def make(**fields: Any) -> Body:
        return order(channel, **fields)

    return make


SHAPES = [
    Shape("orders-Email", ORDERS, _order_on("Email"), "email"),
    Shape("orders-Sms", ORDERS, _order_on("Sms"), "sms"),
    Shape("orders-EmailPreferred", ORDERS, _order_on("EmailPreferred"), "any"),
    Shape("orders-SmsPreferred", ORDERS, _order_on("SmsPreferred"), "any"),
    Shape("orders-EmailAndSms", ORDERS, _order_on("EmailAndSms"), "any"),
    Shape("email", EMAIL_ORDERS, email_order, "email"),
    Shape("sms", SMS_ORDERS, sms_order, "sms"),
]
EMAIL_SHAPES = [s for s in SHAPES if s.uses in ("email", "any")]
SMS_SHAPES = [s for s in SHAPES if s.uses in ("sms", "any")]
# One shape per endpoint, for rules that do not depend on the channel.
ENDPOINTS = [SHAPES[0], SHAPES[5], SHAPES[6]]
MISSING_MESSAGE = {"email": MISSING_FOR_EMAIL, "sms": MISSING_FOR_SMS, "any": MISSING_FOR_ANY}


def one_recipient(shape: Shape, recipient: Body, **fields: Any) -> Body:
    return shape.make(recipients=[recipient], **fields)


# ---------------------------------------------------------------- talking to the API


def problem_errors(response: httpx.Response) -> Errors:
    """The `errors` of a 400 validation problem, after checking every other part of its shape."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    # The reference's shape; `detail` (ASP.NET's ValidationProblemDetails has it too) only when varsel has a hint
    # for the person reading it (a mobile number without its country code, tests/test_first_hour_errors.py).
    assert set(problem) - {"detail"} == {"type", "title", "status", "errors", "traceId"}, problem
    assert problem["type"] == BAD_REQUEST_TYPE
    assert problem["title"] == VALIDATION_TITLE
    assert problem["status"] == 400
    assert TRACE_ID.fullmatch(problem["traceId"]), problem["traceId"]
    errors = problem["errors"]
    assert isinstance(errors, dict)
    assert errors, "a validation problem names at least one field"
    for field, messages in errors.items():
        assert isinstance(field, str)
        assert isinstance(messages, list)
        assert messages
        assert all(isinstance(m, str) and m for m in messages)
    return errors


class Api:
    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.headers)

    async def post_raw(
        self, path: str, content: bytes, content_type: str | None = "application/json"
    ) -> httpx.Response:
        headers = dict(self.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return await self.client.post(path, content=content, headers=headers)

    async def refused(self, path: str, body: Any) -> Errors:
        return problem_errors(await self.post(path, body))

    async def accepted(self, path: str, body: Any) -> Body:
        """Posts an order that must be accepted, and answers the order as GET /orders/{id} reads it back."""
        response = await self.post(path, body)
        assert response.status_code == 202, response.text
        order_id = response.json()["orderId"]
        read = await self.client.get(f"{ORDERS}/{order_id}", headers=self.headers)
        assert read.status_code == 200, read.text
        stored: Body = read.json()
        return stored


@pytest.fixture
def api(client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]) -> Api:
    return Api(client, auth())


# ---------------------------------------------------------------- the problem document


async def test_problem_document_has_the_reference_shape(api: Api) -> None:
    body = order()
    del body["notificationChannel"]
    response = await api.post(ORDERS, body)
    # The 400 example of spec 003, field for field (traceId differs per request).
    assert problem_errors(response) == {"NotificationChannel": [CHANNEL_REQUIRED]}


async def test_trace_id_continues_the_callers_trace(api: Api) -> None:
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    headers = api.headers | {"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"}
    response = await api.client.post(ORDERS, json={}, headers=headers)
    problem_errors(response)
    assert response.json()["traceId"].startswith(f"00-{caller_trace}-")


async def test_every_request_gets_its_own_trace_id(api: Api) -> None:
    first = (await api.post(ORDERS, {})).json()["traceId"]
    second = (await api.post(ORDERS, {})).json()["traceId"]
    assert first != second


# ---------------------------------------------------------------- notificationChannel and templates


@pytest.mark.parametrize("channel", [None, "absent"])
async def test_notification_channel_is_required(api: Api, channel: str | None) -> None:
    body = order(notificationChannel=channel)
    if channel == "absent":
        del body["notificationChannel"]
    assert await api.refused(ORDERS, body) == {"NotificationChannel": [CHANNEL_REQUIRED]}


@pytest.mark.parametrize("channel", ["Fax", "", "E-mail", "EmailOrSms", 7, 1.5, True, ["Email"], {"value": "Email"}])
async def test_unknown_notification_channel_is_refused(api: Api, channel: Any) -> None:
    assert await api.refused(ORDERS, order(notificationChannel=channel)) == {"NotificationChannel": [CHANNEL_UNKNOWN]}


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("Email", "Email"),
        ("email", "Email"),
        ("EMAIL", "Email"),
        ("Sms", "Sms"),
        ("SMS", "Sms"),
        ("sms", "Sms"),
        ("EmailPreferred", "EmailPreferred"),
        ("emailPreferred", "EmailPreferred"),
        ("EMAILPREFERRED", "EmailPreferred"),
        ("SmsPreferred", "SmsPreferred"),
        ("smsPreferred", "SmsPreferred"),
        ("EmailAndSms", "EmailAndSms"),
        ("emailandsms", "EmailAndSms"),
        ("EMAILANDSMS", "EmailAndSms"),
    ],
)
async def test_every_channel_is_accepted_case_insensitively(api: Api, sent: str, stored: str) -> None:
    body = order(sent, recipients=[{"emailAddress": EMAIL, "mobileNumber": MOBILE}])
    assert (await api.accepted(ORDERS, body))["notificationChannel"] == stored


@pytest.mark.parametrize(
    ("channel", "needs_email", "needs_sms"),
    [
        ("Email", True, False),
        ("Sms", False, True),
        ("EmailPreferred", True, True),
        ("SmsPreferred", True, True),
        ("EmailAndSms", True, True),
    ],
)
@pytest.mark.parametrize(("with_email", "with_sms"), [(False, False), (True, False), (False, True), (True, True)])
async def test_templates_required_per_channel(
    api: Api, channel: str, needs_email: bool, needs_sms: bool, with_email: bool, with_sms: bool
) -> None:
    body = order(channel, recipients=[{"emailAddress": EMAIL, "mobileNumber": MOBILE}])
    if not with_email:
        del body["emailTemplate"]
    if not with_sms:
        del body["smsTemplate"]
    expected: Errors = {}
    if needs_email and not with_email:
        expected["EmailTemplate"] = [EMAIL_TEMPLATE_REQUIRED]
    if needs_sms and not with_sms:
        expected["SmsTemplate"] = [SMS_TEMPLATE_REQUIRED]
    if expected:
        assert await api.refused(ORDERS, body) == expected
    else:
        stored = await api.accepted(ORDERS, body)
        # A template the channel does not use is neither required nor stored.
        assert ("emailTemplate" in stored) is needs_email
        assert ("smsTemplate" in stored) is needs_sms


async def test_null_templates_count_as_missing(api: Api) -> None:
    body = order("EmailAndSms", emailTemplate=None, smsTemplate=None)
    assert await api.refused(ORDERS, body) == {
        "EmailTemplate": [EMAIL_TEMPLATE_REQUIRED],
        "SmsTemplate": [SMS_TEMPLATE_REQUIRED],
    }


BLANKS = ["absent", None, "", " ", "\t\n ", "\r\n"]


def _set_or_drop(container: Body, key: str, value: Any) -> None:
    if value == "absent":
        container.pop(key, None)
    else:
        container[key] = value


@pytest.mark.parametrize("value", BLANKS)
@pytest.mark.parametrize(
    ("path", "make", "where", "key", "field", "message"),
    [
        (ORDERS, order, "emailTemplate", "subject", "EmailTemplate.Subject",
         "The email template subject must not be empty."),
        (ORDERS, order, "emailTemplate", "body", "EmailTemplate.Body", "The email template body must not be empty."),
        (ORDERS, lambda: order("Sms"), "smsTemplate", "body", "SmsTemplate.Body",
         "The SMS template body must not be empty."),
        (EMAIL_ORDERS, email_order, None, "subject", "Subject", "The email subject must not be empty."),
        (EMAIL_ORDERS, email_order, None, "body", "Body", "The email body must not be empty."),
        (SMS_ORDERS, sms_order, None, "body", "Body", "The SMS body must not be empty."),
    ],
    ids=["orders-subject", "orders-email-body", "orders-sms-body", "email-subject", "email-body", "sms-body"],
)  # fmt: skip
async def test_subject_and_bodies_must_not_be_empty(
    api: Api, path: str, make: Callable[[], Body], where: str | None, key: str, field: str, message: str, value: Any
) -> None:
    body = make()
    _set_or_drop(body[where] if where else body, key, value)
    assert await api.refused(path, body) == {field: [message]}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (ORDERS, order(emailTemplate={"fromAddress": "not an address", "subject": "S", "body": "B"}),
         "EmailTemplate.FromAddress"),
        (EMAIL_ORDERS, email_order(fromAddress="not an address"), "FromAddress"),
    ],
    ids=["orders", "email"],
)  # fmt: skip
async def test_from_address_must_be_an_email_address(api: Api, path: str, body: Body, field: str) -> None:
    assert await api.refused(path, body) == {field: [INVALID_EMAIL]}


@pytest.mark.parametrize(
    ("path", "make", "read"),
    [
        (ORDERS, lambda a: order(emailTemplate={"fromAddress": a, "subject": "S", "body": "B"}), "emailTemplate"),
        (EMAIL_ORDERS, lambda a: email_order(fromAddress=a), "emailTemplate"),
    ],
    ids=["orders", "email"],
)
async def test_from_address_is_trimmed_and_defaults_to_the_configured_one(
    api: Api, settings: Settings, path: str, make: Callable[[str | None], Body], read: str
) -> None:
    assert (await api.accepted(path, make(" sender@example.org ")))[read]["fromAddress"] == "sender@example.org"
    assert (await api.accepted(path, make(None)))[read]["fromAddress"] == settings.defaults.email_from_address


@pytest.mark.parametrize("sender", ["+4712345678", "12345", "1" * 15, "Varsel", "Kommune AS", "Ås-kommune", "A.B"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[6]], ids=str)
async def test_valid_sms_senders_are_kept(api: Api, shape: Shape, sender: str) -> None:
    if shape.path == ORDERS:
        body = shape.make(smsTemplate={"senderNumber": sender, "body": "B"})
    else:
        body = shape.make(senderNumber=sender)
    assert (await api.accepted(shape.path, body))["smsTemplate"]["senderNumber"] == sender


@pytest.mark.parametrize("sender", ["1" * 16, "++4712345678", "Twelve chars", "Varsel!", "Vår_kommune", "+47 123"])
@pytest.mark.parametrize(("shape", "field"), [(SHAPES[1], "SmsTemplate.SenderNumber"), (SHAPES[6], "SenderNumber")])
async def test_invalid_sms_senders_are_refused(api: Api, shape: Shape, field: str, sender: str) -> None:
    if shape.path == ORDERS:
        body = shape.make(smsTemplate={"senderNumber": sender, "body": "B"})
    else:
        body = shape.make(senderNumber=sender)
    assert await api.refused(shape.path, body) == {field: [SENDER_INVALID]}


@pytest.mark.parametrize(("sent", "stored"), [("Html", "Html"), ("html", "Html"), ("PLAIN", "Plain"), (None, "Plain")])
async def test_content_type_is_case_insensitive_and_defaults_to_plain(api: Api, sent: str | None, stored: str) -> None:
    body = order(emailTemplate={"subject": "S", "body": "B", "contentType": sent})
    assert (await api.accepted(ORDERS, body))["emailTemplate"]["contentType"] == stored
    assert (await api.accepted(EMAIL_ORDERS, email_order(contentType=sent)))["emailTemplate"]["contentType"] == stored


async def test_unknown_content_type_is_refused(api: Api) -> None:
    body = order(emailTemplate={"subject": "S", "body": "B", "contentType": "Markdown"})
    assert await api.refused(ORDERS, body) == {"EmailTemplate.ContentType": ["Input should be 'Plain' or 'Html'."]}
    assert await api.refused(EMAIL_ORDERS, email_order(contentType="rtf")) == {
        "ContentType": ["Input should be 'Plain' or 'Html'."]
    }


# ---------------------------------------------------------------- email subject folding


@pytest.mark.parametrize(
    ("subject", "stored"),
    [
        ("Hello\r\nBcc: victim@example.com", "Hello Bcc: victim@example.com"),
        ("a\rb\nc\r\nd", "a b c d"),
        ("two\n\nbreaks", "two  breaks"),
        ("\r\nHello\n", "Hello"),
        ("  plain  ", "plain"),
    ],
)
@pytest.mark.parametrize("path", [ORDERS, EMAIL_ORDERS], ids=["orders", "email"])
async def test_line_breaks_in_the_subject_are_folded_to_spaces(api: Api, path: str, subject: str, stored: str) -> None:
    body = order(emailTemplate={"subject": subject, "body": "B"}) if path == ORDERS else email_order(subject=subject)
    assert (await api.accepted(path, body))["emailTemplate"]["subject"] == stored


async def test_line_breaks_in_a_body_are_kept(api: Api) -> None:
    stored = await api.accepted(EMAIL_ORDERS, email_order(body="line one\r\nline two\n"))
    assert stored["emailTemplate"]["body"] == "line one\r\nline two\n"


# ---------------------------------------------------------------- recipients


@pytest.mark.parametrize("recipients", ["absent", None, []])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
async def test_recipients_are_required(api: Api, shape: Shape, recipients: Any) -> None:
    body = shape.make()
    _set_or_drop(body, "recipients", recipients)
    assert await api.refused(shape.path, body) == {"Recipients": [RECIPIENT_REQUIRED]}


@pytest.mark.parametrize(
    "recipient",
    [
        {},
        {"emailAddress": None, "mobileNumber": None, "nationalIdentityNumber": None, "organizationNumber": None},
        {"emailAddress": "", "mobileNumber": " ", "nationalIdentityNumber": "\t", "organizationNumber": "\n"},
        {"unknownIdentifier": "x"},
    ],
    ids=["empty", "nulls", "blanks", "unknown-only"],
)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
async def test_recipient_without_identifier_gets_the_channels_message(api: Api, shape: Shape, recipient: Body) -> None:
    body = shape.make(recipients=[{"emailAddress": EMAIL, "mobileNumber": MOBILE}, recipient])
    assert await api.refused(shape.path, body) == {"Recipients[1]": [MISSING_MESSAGE[shape.uses]]}


@pytest.mark.parametrize("shape", [s for s in SHAPES if s.uses != "any"], ids=str)
async def test_address_the_channel_cannot_use_does_not_identify_a_recipient(api: Api, shape: Shape) -> None:
    # Only an address of the other channel: as good as none.
    unusable = {"mobileNumber": MOBILE} if shape.uses == "email" else {"emailAddress": EMAIL}
    assert await api.refused(shape.path, one_recipient(shape, unusable)) == {
        "Recipients[0]": [MISSING_MESSAGE[shape.uses]]
    }


@pytest.mark.parametrize("shape", [s for s in SHAPES if s.uses != "any"], ids=str)
async def test_address_the_channel_cannot_use_is_ignored(api: Api, shape: Shape) -> None:
    # Not validated (it is garbage) and not stored, as the reference does.
    if shape.uses == "email":
        recipient, expected = {"emailAddress": EMAIL, "mobileNumber": "not a number"}, {"emailAddress": EMAIL}
    else:
        recipient, expected = {"mobileNumber": MOBILE, "emailAddress": "not an address"}, {"mobileNumber": MOBILE}
    stored = await api.accepted(shape.path, one_recipient(shape, recipient))
    assert stored["recipients"] == [expected]


@pytest.mark.parametrize(
    "address",
    [
        "not-an-email",
        "a@",
        "@example.com",
        "a@@example.com",
        "a b@example.com",
        "a@example",
        "a@-example.com",
        "a@example..com",
        "a.@example.com",
        "a@localhost",
        "<a@example.com>",
        "Name <a@example.com>",
        "a@example.com, b@example.com",
        "a@example.com\r\nBcc: b@example.com",
    ],
)
@pytest.mark.parametrize("shape", EMAIL_SHAPES, ids=str)
async def test_invalid_email_addresses_are_refused(api: Api, shape: Shape, address: str) -> None:
    assert await api.refused(shape.path, one_recipient(shape, {"emailAddress": address})) == {
        "Recipients[0].EmailAddress": [INVALID_EMAIL]
    }


@pytest.mark.parametrize(
    ("address", "stored"),
    [
        (EMAIL, EMAIL),
        (" a@example.com ", EMAIL),
        ("\ta@example.com\n", EMAIL),
        ("First.Last+tag@Example.COM", "First.Last+tag@example.com"),
        ("ola@bücher.de", "ola@bücher.de"),
    ],
)
@pytest.mark.parametrize("shape", EMAIL_SHAPES, ids=str)
async def test_email_addresses_are_trimmed_before_the_check_and_stored_normalised(
    api: Api, shape: Shape, address: str, stored: str
) -> None:
    read = await api.accepted(shape.path, one_recipient(shape, {"emailAddress": address}))
    assert read["recipients"] == [{"emailAddress": stored}]


@pytest.mark.parametrize(
    ("number", "stored"),
    [
        ("+4740000000", "+4740000000"),
        ("+4799999999", "+4799999999"),
        ("004740000000", "+4740000000"),
        ("004799999999", "+4799999999"),
        ("+47 400 00 000", "+4740000000"),
        ("+47 (9) 999-99-99", "+4799999999"),
        ("+4790000000 ", "+4790000000"),  # a trailing blank is trimmed, as the reference does
        ("004790000000\t", "+4790000000"),
        ("+46 70 123 45 67", "+46701234567"),
        ("0046701234567", "+46701234567"),
        ("+44 7911 123456", "+447911123456"),  # (+44 7700 900xxx is reserved for drama: invalid)
        ("+358 40 1234567", "+358401234567"),
    ],
)
@pytest.mark.parametrize("shape", SMS_SHAPES, ids=str)
async def test_valid_mobile_numbers_are_stored_in_e164(api: Api, shape: Shape, number: str, stored: str) -> None:
    read = await api.accepted(shape.path, one_recipient(shape, {"mobileNumber": number}))
    assert read["recipients"] == [{"mobileNumber": stored}]


@pytest.mark.parametrize(
    "number",
    [
        "+4750000000",  # Norwegian, but not a mobile: mobiles begin with 4 or 9
        "+4760000000",
        "+4722000000",
        "+4780000000",
        "004750000000",
        "40000000",  # no country code
        "4740000000",  # country code without + or 00
        "047 40000000",
        "+4712345",  # 5-digit service numbers are not supported
        " +4799999999",  # a leading blank is not trimmed: the reference refuses it (#19)
        " +4790000000 ",
        "\t004799999999",
        "0047 12345",
        "+47400000000",  # 9 digits
        "+474000000",  # 7 digits
        "+47 4000 000a",  # letters
        "+47 four",
        "+47",
        "+",
        "00",
        "+46 70 123",  # too short to be a Swedish number
        "+1 000 000 0000",  # invalid by libphonenumber
        "+47\u06f4\u06f0\u06f0\u06f0\u06f0\u06f0\u06f0\u06f0",  # Extended Arabic-Indic digits
        "tel:+4740000000",
        "+4740000000 ext. 12",
    ],
)
@pytest.mark.parametrize("shape", SMS_SHAPES, ids=str)
async def test_invalid_mobile_numbers_are_refused(api: Api, shape: Shape, number: str) -> None:
    assert await api.refused(shape.path, one_recipient(shape, {"mobileNumber": number})) == {
        "Recipients[0].MobileNumber": [INVALID_MOBILE]
    }


@pytest.mark.parametrize("shape", SHAPES, ids=str)
async def test_identity_and_organisation_numbers_are_accepted_on_every_channel(api: Api, shape: Shape) -> None:
    read = await api.accepted(
        shape.path, shape.make(recipients=[{"nationalIdentityNumber": NIN}, {"organizationNumber": ORG}])
    )
    assert read["recipients"] == [{"nationalIdentityNumber": NIN}, {"organizationNumber": ORG}]


@pytest.mark.parametrize(
    "number",
    [
        "1234567890",  # 10
        "123456789012",  # 12
        "1234567890a",
        "12345 678901",
        "+1234567890",
        "1234567890.",
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661",  # 11 Arabic-Indic digits
        "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10\uff11",  # 11 fullwidth digits
        "¹²³⁴⁵⁶⁷⁸⁹⁰¹",  # 11 superscript digits (str.isdigit says yes)
    ],
)
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_national_identity_number_is_exactly_11_ascii_digits(api: Api, shape: Shape, number: str) -> None:
    assert await api.refused(shape.path, one_recipient(shape, {"nationalIdentityNumber": number})) == {
        "Recipients[0].NationalIdentityNumber": [INVALID_NIN]
    }


@pytest.mark.parametrize(
    "number",
    [
        "31100017",  # 8
        "3110001790",  # 10
        "31100017a",
        "311 000 179",
        "\u0663\u0661\u0661\u0660\u0660\u0660\u0661\u0667\u0669",  # 9 Arabic-Indic digits
        "\uff13\uff11\uff11\uff10\uff10\uff10\uff11\uff17\uff19",  # 9 fullwidth digits
    ],
)
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_organisation_number_is_exactly_9_ascii_digits(api: Api, shape: Shape, number: str) -> None:
    assert await api.refused(shape.path, one_recipient(shape, {"organizationNumber": number})) == {
        "Recipients[0].OrganizationNumber": [INVALID_ORG]
    }


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ({"nationalIdentityNumber": NIN, "emailAddress": EMAIL}, NIN_COMBINED),
        ({"nationalIdentityNumber": NIN, "mobileNumber": MOBILE}, NIN_COMBINED),
        ({"nationalIdentityNumber": NIN, "organizationNumber": ORG}, NIN_COMBINED),
        ({"nationalIdentityNumber": NIN, "emailAddress": EMAIL, "mobileNumber": MOBILE}, NIN_COMBINED),
        ({"organizationNumber": ORG, "emailAddress": EMAIL}, ORG_COMBINED),
        ({"organizationNumber": ORG, "mobileNumber": MOBILE}, ORG_COMBINED),
        ({"organizationNumber": ORG, "emailAddress": EMAIL, "mobileNumber": MOBILE}, ORG_COMBINED),
    ],
    ids=["nin+email", "nin+mobile", "nin+org", "nin+both", "org+email", "org+mobile", "org+both"],
)
@pytest.mark.parametrize("shape", [s for s in SHAPES if s.uses == "any"], ids=str)
async def test_identity_numbers_stand_alone(api: Api, shape: Shape, recipient: Body, message: str) -> None:
    body = shape.make(recipients=[{"emailAddress": EMAIL}, recipient])
    assert await api.refused(shape.path, body) == {"Recipients[1]": [message]}


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ({"nationalIdentityNumber": NIN, "mobileNumber": MOBILE}, NIN_COMBINED),
        ({"organizationNumber": ORG, "mobileNumber": "garbage"}, ORG_COMBINED),
    ],
    ids=["nin", "org"],
)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[5]], ids=str)
async def test_identity_numbers_stand_alone_even_beside_an_address_the_channel_ignores(
    api: Api, shape: Shape, recipient: Body, message: str
) -> None:
    # The rule is about the recipient's shape: which number is meant is ambiguous whatever the channel.
    assert await api.refused(shape.path, one_recipient(shape, recipient)) == {"Recipients[0]": [message]}


@pytest.mark.parametrize("blank", [None, "", "  "])
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_blank_addresses_beside_an_identity_number_count_as_absent(api: Api, shape: Shape, blank: Any) -> None:
    body = shape.make(
        recipients=[
            {"nationalIdentityNumber": NIN, "emailAddress": blank, "mobileNumber": blank, "organizationNumber": blank},
            {"organizationNumber": ORG, "emailAddress": blank, "mobileNumber": blank},
        ]
    )
    read = await api.accepted(shape.path, body)
    assert read["recipients"] == [{"nationalIdentityNumber": NIN}, {"organizationNumber": ORG}]


@pytest.mark.parametrize("shape", [s for s in SHAPES if s.uses == "any"], ids=str)
async def test_email_and_mobile_together_are_allowed_where_both_are_used(api: Api, shape: Shape) -> None:
    recipient = {"emailAddress": " a@example.com ", "mobileNumber": "0047 400 00 000"}
    read = await api.accepted(shape.path, one_recipient(shape, recipient))
    assert read["recipients"] == [{"emailAddress": EMAIL, "mobileNumber": MOBILE}]


async def test_each_recipient_is_named_by_its_index(api: Api) -> None:
    body = order(
        "EmailPreferred",
        recipients=[
            {"emailAddress": EMAIL},
            {"emailAddress": "bad"},
            {"mobileNumber": MOBILE},
            {"mobileNumber": "bad"},
            {"nationalIdentityNumber": "1"},
            {"organizationNumber": "1"},
            {},
        ],
    )
    assert await api.refused(ORDERS, body) == {
        "Recipients[1].EmailAddress": [INVALID_EMAIL],
        "Recipients[3].MobileNumber": [INVALID_MOBILE],
        "Recipients[4].NationalIdentityNumber": [INVALID_NIN],
        "Recipients[5].OrganizationNumber": [INVALID_ORG],
        "Recipients[6]": [MISSING_FOR_ANY],
    }


async def test_a_recipient_can_break_several_rules_at_once(api: Api) -> None:
    body = order(
        "EmailPreferred", recipients=[{"nationalIdentityNumber": "x", "emailAddress": "y", "mobileNumber": "z"}]
    )
    assert await api.refused(ORDERS, body) == {
        "Recipients[0].EmailAddress": [INVALID_EMAIL],
        "Recipients[0].MobileNumber": [INVALID_MOBILE],
        "Recipients[0].NationalIdentityNumber": [INVALID_NIN],
        "Recipients[0]": [NIN_COMBINED],
    }


async def test_recipients_keep_their_order(api: Api) -> None:
    recipients = [{"emailAddress": f"r{i}@example.com"} for i in range(12)]
    read = await api.accepted(EMAIL_ORDERS, email_order(recipients=recipients))
    assert read["recipients"] == recipients


# ---------------------------------------------------------------- requestedSendTime


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-03-02T09:56:00Z", "2026-03-02T09:56:00Z"),  # 4 minutes ago: clock skew is tolerated
        ("2026-03-02T09:55:00Z", "2026-03-02T09:55:00Z"),  # exactly 5 minutes ago
        ("2026-03-02T10:00:00Z", "2026-03-02T10:00:00Z"),
        ("2026-03-02T11:00:00+01:00", "2026-03-02T10:00:00Z"),
        ("2026-03-02T05:30:00-05:00", "2026-03-02T10:30:00Z"),
        ("2026-03-02T10:00:00+00:00", "2026-03-02T10:00:00Z"),
        ("2026-03-03T10:00:00.123Z", "2026-03-03T10:00:00.123000Z"),
        ("2026-03-02T13:49:31.5591909Z", "2026-03-02T13:49:31.559190Z"),  # .NET writes 7 fractional digits
        ("2100-01-01T00:00:00Z", "2100-01-01T00:00:00Z"),
        (None, "2026-03-02T10:00:00Z"),  # default: now
        ("absent", "2026-03-02T10:00:00Z"),
    ],
)
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_accepted_send_times_are_stored_in_utc(api: Api, shape: Shape, sent: Any, stored: str) -> None:
    body = shape.make(requestedSendTime=sent)
    if sent == "absent":
        del body["requestedSendTime"]
    assert (await api.accepted(shape.path, body))["requestedSendTime"] == stored


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ("2026-03-02T12:00:00", NO_TIME_ZONE),
        ("2026-03-02T12:00:00.5591909", NO_TIME_ZONE),
        ("2026-03-03", NO_TIME_ZONE),
        ("2026-03-02T09:54:59Z", IN_THE_PAST),  # 5 minutes and 1 second ago
        ("2026-03-02T09:50:00Z", IN_THE_PAST),
        ("2026-03-02T10:00:00+01:00", IN_THE_PAST),  # 09:00Z
        ("2000-01-01T00:00:00Z", IN_THE_PAST),
        ("9999-12-31T23:59:59-01:00", OUT_OF_RANGE),
        ("0001-01-01T00:00:00+01:00", OUT_OF_RANGE),
        (1772445600, NOT_A_DATE),  # a number would be read as a Unix timestamp
        (1772445600.5, NOT_A_DATE),
        (True, NOT_A_DATE),
        # Text made of digits is a number too: pydantic alone reads "2000000000" as 2033-05-18 (#19).
        ("2000000000", NOT_A_DATE),
        (" 1772445600 ", NOT_A_DATE),
        ("-1", NOT_A_DATE),
        ("1772445600.5", NOT_A_DATE),
        ("1.7e9", NOT_A_DATE),
        # Once took the numeric pattern quadratic time: 20,000 digits, 7.5 s on the event loop (#19 review).
        ("1" * 20_000 + "x", NOT_A_DATE),
        ("2026-03-02T10:00:00" + "0" * 100 + "Z", NOT_A_DATE),
    ],
)
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_refused_send_times(api: Api, shape: Shape, sent: Any, message: str) -> None:
    assert await api.refused(shape.path, shape.make(requestedSendTime=sent)) == {"RequestedSendTime": [message]}


@pytest.mark.parametrize("sent", ["tomorrow", "", "2026-13-01T00:00:00Z", "2026-03-02 25:00", {"at": "now"}, []])
async def test_send_time_that_is_no_date_is_refused(api: Api, sent: Any) -> None:
    errors = await api.refused(EMAIL_ORDERS, email_order(requestedSendTime=sent))
    assert list(errors) == ["RequestedSendTime"]


# ---------------------------------------------------------------- conditionEndpoint


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/check", NOT_ABSOLUTE),
        ("check", NOT_ABSOLUTE),
        ("example.com/check", NOT_ABSOLUTE),
        ("//example.com/check", NOT_ABSOLUTE),
        ("ftp://example.com/check", NOT_ABSOLUTE),
        ("file:///etc/passwd", NOT_ABSOLUTE),
        ("javascript:alert(1)", NOT_ABSOLUTE),
        ("https:///check", NOT_ABSOLUTE),
        ("https://example.com:99999/check", NOT_A_URL),
        ("https://example.com:port/check", NOT_A_URL),
        ("https://[::1/check", NOT_A_URL),
        ("https://exa\tmple.com/check", NOT_A_URL),  # urlsplit would silently check example.com instead
        ("https://example.com/che\nck", NOT_A_URL),
        ("https://example.com/\x7f", NOT_A_URL),
        ("http://127.0.0.1/check", IP_LITERAL),
        ("http://127.0.0.1:8080/check", IP_LITERAL),
        ("http://10.0.0.1/check", IP_LITERAL),
        ("http://169.254.169.254/latest/meta-data", IP_LITERAL),
        ("http://[::1]/check", IP_LITERAL),
        ("http://[::1]:8080/check", IP_LITERAL),
        ("http://[::ffff:127.0.0.1]/check", IP_LITERAL),
        ("http://user@127.0.0.1/check", IP_LITERAL),
        ("http://example.com@127.0.0.1/check", IP_LITERAL),
        ("http://localhost/check", NOT_PUBLIC),
        ("http://LOCALHOST:8080/check", NOT_PUBLIC),
        ("http://localhost./check", NOT_PUBLIC),
        ("http://api.localhost/check", NOT_PUBLIC),
        ("http://intranet/check", NOT_PUBLIC),
        ("http://printer.local/check", NOT_PUBLIC),
        ("http://metadata.google.internal/check", NOT_PUBLIC),
        ("http://router.lan/check", NOT_PUBLIC),
        ("http://box.home.arpa/check", NOT_PUBLIC),
        ("http://127.1/check", NOT_PUBLIC),  # not an IP for ipaddress, but no name with a TLD either
        ("http://2130706433/check", NOT_PUBLIC),
        ("http://0x7f.0.0.1/check", NOT_PUBLIC),
        ("http://example..com/check", NOT_PUBLIC),
        ("https://exa mple.com/check", NOT_PUBLIC),
        ("https://ex%61mple.com/check", NOT_PUBLIC),
        ("https://-example.com/check", NOT_PUBLIC),
    ],
)
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_refused_condition_endpoints(api: Api, shape: Shape, url: str, message: str) -> None:
    assert await api.refused(shape.path, shape.make(conditionEndpoint=url)) == {"ConditionEndpoint": [message]}


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://example.com/check", "https://example.com/check"),
        ("http://example.com/check?order=1&x=%20", "http://example.com/check?order=1&x=%20"),
        ("HTTPS://Example.COM:8443/Check", "HTTPS://Example.COM:8443/Check"),
        ("  https://example.com/check  ", "https://example.com/check"),
        ("https://a-b.c_d.example.no./check", "https://a-b.c_d.example.no./check"),
        ("https://bücher.de/check", "https://bücher.de/check"),
        ("https://xn--bcher-kva.de/check", "https://xn--bcher-kva.de/check"),
        ("https://example.xn--p1ai/check", "https://example.xn--p1ai/check"),
        ("https://user:secret@example.com/check", "https://user:secret@example.com/check"),
    ],
)
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_accepted_condition_endpoints_are_stored_trimmed(api: Api, shape: Shape, url: str, stored: str) -> None:
    assert (await api.accepted(shape.path, shape.make(conditionEndpoint=url)))["conditionEndpoint"] == stored


@pytest.mark.parametrize("url", [None, "", "   "])
async def test_blank_condition_endpoint_means_none(api: Api, url: str | None) -> None:
    assert "conditionEndpoint" not in await api.accepted(ORDERS, order(conditionEndpoint=url))


class TestConditionHostsAllowedByConfiguration:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={"conditions": ConditionSettings(allowed_hosts=["127.0.0.1", "::1", "Condition-Service"])}
        )

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/check",
            "http://127.0.0.1:8080/check",
            "http://[::1]:8080/check",
            "http://condition-service/check",
            "http://CONDITION-SERVICE:9000/check",
        ],
    )
    async def test_allowed_host_is_accepted(self, api: Api, url: str) -> None:
        assert (await api.accepted(ORDERS, order(conditionEndpoint=url)))["conditionEndpoint"] == url

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("http://127.0.0.2/check", IP_LITERAL),
            ("http://localhost/check", NOT_PUBLIC),
            ("http://other-service/check", NOT_PUBLIC),
            ("ftp://127.0.0.1/check", NOT_ABSOLUTE),
            ("http://127.0.0.1\t/check", NOT_A_URL),
        ],
    )
    async def test_other_hosts_are_still_refused(self, api: Api, url: str, message: str) -> None:
        assert await api.refused(ORDERS, order(conditionEndpoint=url)) == {"ConditionEndpoint": [message]}


# ---------------------------------------------------------------- resourceId and resourceAction


@pytest.mark.parametrize("resource_id", ["absent", None, "", "   "])
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_resource_action_needs_a_resource_id(api: Api, shape: Shape, resource_id: Any) -> None:
    body = shape.make(resourceAction="read")
    if resource_id != "absent":
        body["resourceId"] = resource_id
    assert await api.refused(shape.path, body) == {"ResourceAction": [ACTION_WITHOUT_RESOURCE]}


@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_resource_action_with_a_resource_id_is_accepted(api: Api, shape: Shape) -> None:
    read = await api.accepted(shape.path, shape.make(resourceId=" app_ttd_apps-test ", resourceAction=" sign "))
    assert (read["resourceId"], read["resourceAction"]) == ("app_ttd_apps-test", "sign")


async def test_resource_id_alone_is_accepted(api: Api) -> None:
    read = await api.accepted(ORDERS, order(resourceId="app_ttd_apps-test"))
    assert read["resourceId"] == "app_ttd_apps-test"
    assert "resourceAction" not in read


async def test_empty_resource_action_means_none(api: Api) -> None:
    read = await api.accepted(ORDERS, order(resourceId="app_ttd_apps-test", resourceAction=""))
    assert "resourceAction" not in read
    read = await api.accepted(ORDERS, order(resourceAction=""))
    assert "resourceAction" not in read
    assert "resourceId" not in read


@pytest.mark.parametrize("action", [" ", "   ", "\u00a0", "\u2003"])
@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_resource_action_of_blanks_is_refused(api: Api, shape: Shape, action: str) -> None:
    # As the reference: with a resource, an action of only whitespace is its own mistake (#19); without one, the
    # action is refused for wanting a resource, as any action is.
    body = shape.make(resourceId="app_ttd_apps-test", resourceAction=action)
    assert await api.refused(shape.path, body) == {"ResourceAction": [BLANK_ACTION]}
    assert await api.refused(shape.path, shape.make(resourceAction=action)) == {
        "ResourceAction": [ACTION_WITHOUT_RESOURCE]
    }


# ---------------------------------------------------------------- size limits (the defaults)


DEFAULTS = Limits()


@pytest.mark.parametrize(
    ("path", "make", "field", "limit"),
    [
        (ORDERS, lambda v: order(emailTemplate={"subject": v, "body": "B"}), "EmailTemplate.Subject",
         DEFAULTS.max_subject_chars),
        (EMAIL_ORDERS, lambda v: email_order(subject=v), "Subject", DEFAULTS.max_subject_chars),
        (ORDERS, lambda v: order("Sms", smsTemplate={"body": v}), "SmsTemplate.Body", DEFAULTS.max_sms_body_chars),
        (SMS_ORDERS, lambda v: sms_order(body=v), "Body", DEFAULTS.max_sms_body_chars),
        (ORDERS, lambda v: order(sendersReference=v), "SendersReference", DEFAULTS.max_senders_reference_chars),
        (EMAIL_ORDERS, lambda v: email_order(sendersReference=v), "SendersReference",
         DEFAULTS.max_senders_reference_chars),
        (SMS_ORDERS, lambda v: sms_order(sendersReference=v), "SendersReference",
         DEFAULTS.max_senders_reference_chars),
        (ORDERS, lambda v: order(resourceId=v), "ResourceId", DEFAULTS.max_resource_id_chars),
        (ORDERS, lambda v: order(resourceId="app_ttd_x", resourceAction=v), "ResourceAction", 100),
    ],
    ids=["orders-subject", "email-subject", "orders-sms-body", "sms-body", "orders-ref", "email-ref", "sms-ref",
         "resource-id", "resource-action"],
)  # fmt: skip
async def test_default_length_limits(api: Api, path: str, make: Callable[[str], Body], field: str, limit: int) -> None:
    # Multi-byte characters: the limits count characters, not bytes.
    assert (await api.post(path, make("ø" * limit))).status_code == 202
    assert await api.refused(path, make("ø" * (limit + 1))) == {field: [too_long(limit, limit + 1)]}


async def test_default_limits_are_what_the_documentation_says(settings: Settings) -> None:
    limits = settings.limits
    assert (limits.max_subject_chars, limits.max_sms_body_chars, limits.max_senders_reference_chars) == (500, 2000, 200)
    assert (limits.max_recipients, limits.max_body_bytes) == (10_000, 2 * 1024 * 1024)


SMALL_LIMITS = Limits(
    max_body_bytes=4096,
    max_recipients=3,
    max_subject_chars=10,
    max_email_body_chars=30,
    max_sms_body_chars=20,
    max_senders_reference_chars=5,
    max_resource_id_chars=8,
    max_url_chars=40,
)


class TestConfiguredLimits:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"limits": SMALL_LIMITS})

    @pytest.mark.parametrize(
        ("path", "make", "field", "limit"),
        [
            (ORDERS, lambda v: order(emailTemplate={"subject": v, "body": "B"}), "EmailTemplate.Subject", 10),
            (ORDERS, lambda v: order(emailTemplate={"subject": "S", "body": v}), "EmailTemplate.Body", 30),
            (ORDERS, lambda v: order("Sms", smsTemplate={"body": v}), "SmsTemplate.Body", 20),
            (EMAIL_ORDERS, lambda v: email_order(subject=v), "Subject", 10),
            (EMAIL_ORDERS, lambda v: email_order(body=v), "Body", 30),
            (SMS_ORDERS, lambda v: sms_order(body=v), "Body", 20),
            (SMS_ORDERS, lambda v: sms_order(sendersReference=v), "SendersReference", 5),
            (EMAIL_ORDERS, lambda v: email_order(resourceId=v), "ResourceId", 8),
        ],
        ids=["orders-subject", "orders-email-body", "orders-sms-body", "email-subject", "email-body", "sms-body",
             "senders-reference", "resource-id"],
    )  # fmt: skip
    async def test_length_limits_follow_configuration(
        self, api: Api, path: str, make: Callable[[str], Body], field: str, limit: int
    ) -> None:
        assert (await api.post(path, make("x" * limit))).status_code == 202
        assert await api.refused(path, make("x" * (limit + 1))) == {field: [too_long(limit, limit + 1)]}

    async def test_folded_subject_is_measured_after_folding(self, api: Api) -> None:
        # "\r\n" becomes one space, so ten characters after folding fit.
        read = await api.accepted(EMAIL_ORDERS, email_order(subject="abcd\r\nefghi"))
        assert read["emailTemplate"]["subject"] == "abcd efghi"

    async def test_condition_endpoint_length_follows_configuration(self, api: Api) -> None:
        fits = "https://example.com/" + "c" * 20
        assert len(fits) == 40
        assert (await api.post(ORDERS, order(conditionEndpoint=fits))).status_code == 202
        assert await api.refused(ORDERS, order(conditionEndpoint=fits + "c")) == {
            "ConditionEndpoint": ["The condition endpoint must be at most 40 characters long."]
        }

    @pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
    async def test_too_many_recipients(self, api: Api, shape: Shape) -> None:
        recipients = [{"nationalIdentityNumber": f"{i:011d}"} for i in range(4)]
        assert (await api.post(shape.path, shape.make(recipients=recipients[:3]))).status_code == 202
        assert await api.refused(shape.path, shape.make(recipients=recipients)) == {
            "Recipients": ["An order can have at most 3 recipients."]
        }

    async def test_body_over_the_byte_limit_is_413(self, api: Api) -> None:
        body = json.dumps(email_order(body="x" * 5000)).encode()
        response = await api.post_raw(EMAIL_ORDERS, body)
        assert response.status_code == 413
        assert response.headers["content-type"] == PROBLEM_JSON
        problem = response.json()
        assert problem["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.14"
        assert problem["title"] == "Content Too Large"
        assert problem["status"] == 413
        assert problem["detail"] == "The request body must be at most 4096 bytes."
        assert TRACE_ID.fullmatch(problem["traceId"])

    async def test_body_declared_too_large_is_refused_before_anything_else(self, api: Api) -> None:
        # Refused on its Content-Length, before its media type is even looked at.
        response = await api.post_raw(EMAIL_ORDERS, b"x" * 5000, "text/plain")
        assert response.status_code == 413
        assert response.json()["detail"] == "The request body must be at most 4096 bytes."

    async def test_streamed_body_over_the_byte_limit_is_413(self, api: Api) -> None:
        # No Content-Length to refuse early on: the limit applies while the body streams in.
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"subject": "S", "body": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}'

        headers = api.headers | {"Content-Type": "application/json"}
        response = await api.client.post(EMAIL_ORDERS, content=chunks(), headers=headers)
        assert response.status_code == 413, response.text
        assert response.json()["detail"] == "The request body must be at most 4096 bytes."

    async def test_body_at_the_byte_limit_is_read(self, api: Api) -> None:
        body = json.dumps(email_order(body="x")).encode()
        padded = body[:-1] + b" " * (4096 - len(body)) + b"}"
        assert len(padded) == 4096
        assert (await api.post_raw(EMAIL_ORDERS, padded)).status_code == 202


# ---------------------------------------------------------------- the body itself: media type, JSON, types


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
@pytest.mark.parametrize("path", [ORDERS, EMAIL_ORDERS, SMS_ORDERS])
async def test_body_that_is_not_declared_json_is_415(api: Api, path: str, content_type: str | None) -> None:
    response = await api.post_raw(path, json.dumps(email_order()).encode(), content_type)
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["title"] == "Unsupported Media Type"
    assert problem["status"] == 415
    assert problem["detail"] == "The request body must be JSON (Content-Type: application/json)."


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"],
)
async def test_json_media_types_are_read(api: Api, content_type: str) -> None:
    response = await api.post_raw(EMAIL_ORDERS, json.dumps(email_order()).encode(), content_type)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("content", "message_start"),
    [
        (b'{"subject": "S", ', "The request body is not valid JSON: "),
        (b"", "The request body is not valid JSON: "),
        (b"   ", "The request body is not valid JSON: "),
        (b"{'subject': 'S'}", "The request body is not valid JSON: "),
        (b'{"subject": "S"} trailing', "The request body is not valid JSON: "),
        (b"[" * 100_000, "The request body is not valid JSON: "),
        (b'{"a":' * 100_000, "The request body is not valid JSON: "),
        (b'{"subject": "\\ud800", "body": "B"}', "The request body is not valid JSON: "),  # lone surrogate
        (b'{"subject": "\\udc00x", "body": "B"}', "The request body is not valid JSON: "),
        (b'{"subject": "\xff\xfe", "body": "B"}', "The request body is not valid JSON: "),  # not UTF-8
        (b"[]", "Input should be an object."),
        (b'[{"subject": "S"}]', "Input should be an object."),
        (b'"an order"', "Input should be an object."),
        (b"42", "Input should be an object."),
        (b"null", "Input should be an object."),
    ],
    ids=["truncated", "empty", "whitespace", "single-quotes", "trailing", "deep-arrays", "deep-objects",
         "lone-high-surrogate", "lone-low-surrogate", "invalid-utf8", "array", "array-of-object", "string",
         "number", "null"],
)  # fmt: skip
@pytest.mark.parametrize("path", [ORDERS, EMAIL_ORDERS, SMS_ORDERS])
async def test_body_that_is_not_a_json_object_is_a_dollar_problem(
    api: Api, path: str, content: bytes, message_start: str
) -> None:
    errors = problem_errors(await api.post_raw(path, content))
    assert list(errors) == ["$"]
    assert len(errors["$"]) == 1
    assert errors["$"][0].startswith(message_start), errors
    assert errors["$"][0].endswith(".")


NUL = "a\u0000b"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (ORDERS, order(sendersReference=NUL), "SendersReference"),
        (ORDERS, order(conditionEndpoint=f"https://example.com/{NUL}"), "ConditionEndpoint"),
        (ORDERS, order(resourceId=NUL), "ResourceId"),
        (ORDERS, order(resourceId="r", resourceAction=NUL), "ResourceAction"),
        (ORDERS, order(recipients=[{"emailAddress": f"{EMAIL}\u0000"}]), "Recipients[0].EmailAddress"),
        (ORDERS, order("Sms", recipients=[{"mobileNumber": f"{MOBILE}\u0000"}]), "Recipients[0].MobileNumber"),
        (ORDERS, order(recipients=[{"emailAddress": EMAIL}, {"nationalIdentityNumber": f"{NIN[:10]}\u0000"}]),
         "Recipients[1].NationalIdentityNumber"),
        (ORDERS, order(recipients=[{"organizationNumber": f"{ORG[:8]}\u0000"}]), "Recipients[0].OrganizationNumber"),
        (ORDERS, order(emailTemplate={"fromAddress": f"{EMAIL}\u0000", "subject": "S", "body": "B"}),
         "EmailTemplate.FromAddress"),
        (ORDERS, order(emailTemplate={"subject": NUL, "body": "B"}), "EmailTemplate.Subject"),
        (ORDERS, order(emailTemplate={"subject": "S", "body": NUL}), "EmailTemplate.Body"),
        (ORDERS, order("Sms", smsTemplate={"senderNumber": NUL, "body": "B"}), "SmsTemplate.SenderNumber"),
        (ORDERS, order("Sms", smsTemplate={"body": NUL}), "SmsTemplate.Body"),
        # Even in a template the channel does not use: it is read before the channel is known.
        (ORDERS, order("Email", smsTemplate={"body": NUL}), "SmsTemplate.Body"),
        (EMAIL_ORDERS, email_order(fromAddress=NUL), "FromAddress"),
        (EMAIL_ORDERS, email_order(subject=NUL), "Subject"),
        (EMAIL_ORDERS, email_order(body=NUL), "Body"),
        (EMAIL_ORDERS, email_order(sendersReference="\u0000"), "SendersReference"),
        (SMS_ORDERS, sms_order(senderNumber=NUL), "SenderNumber"),
        (SMS_ORDERS, sms_order(body=NUL), "Body"),
        (SMS_ORDERS, sms_order(recipients=[{"mobileNumber": MOBILE}, {"mobileNumber": "\u0000"}]),
         "Recipients[1].MobileNumber"),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith("/") else None,
)  # fmt: skip
async def test_nul_character_in_a_string_is_refused_naming_the_field(
    api: Api, path: str, body: Body, field: str
) -> None:
    assert await api.refused(path, body) == {field: [NUL_REFUSED]}


async def test_nul_characters_in_several_fields_are_all_named(api: Api) -> None:
    body = email_order(subject=NUL, body=NUL, recipients=[{"emailAddress": NUL}])
    assert await api.refused(EMAIL_ORDERS, body) == {
        "Subject": [NUL_REFUSED],
        "Body": [NUL_REFUSED],
        "Recipients[0].EmailAddress": [NUL_REFUSED],
    }


async def test_nul_in_a_channel_or_a_date_is_refused_naming_the_field(api: Api) -> None:
    assert await api.refused(ORDERS, order(notificationChannel="Email\u0000")) == {
        "NotificationChannel": [CHANNEL_UNKNOWN]
    }
    errors = await api.refused(ORDERS, order(requestedSendTime="2026-03-03T10:00:00Z\u0000"))
    assert list(errors) == ["RequestedSendTime"]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (ORDERS, order(recipients="a@example.com"), {"Recipients": ["Input should be a valid array."]}),
        (ORDERS, order(recipients={"emailAddress": EMAIL}), {"Recipients": ["Input should be a valid array."]}),
        (ORDERS, order(recipients=[EMAIL]), {"Recipients[0]": ["Input should be an object."]}),
        (ORDERS, order(recipients=[None]), {"Recipients[0]": ["Input should be an object."]}),
        (ORDERS, order(recipients=[{"emailAddress": 42}]),
         {"Recipients[0].EmailAddress": ["Input should be a valid string."]}),
        (ORDERS, order(recipients=[{"nationalIdentityNumber": 12345678901}]),
         {"Recipients[0].NationalIdentityNumber": ["Input should be a valid string."]}),
        (ORDERS, order(ignoreReservation={}), {"IgnoreReservation": ["Input should be a valid boolean."]}),
        (ORDERS, order(ignoreReservation=[True]), {"IgnoreReservation": ["Input should be a valid boolean."]}),
        (ORDERS, order(ignoreReservation="maybe"),
         {"IgnoreReservation": ["Input should be a valid boolean, unable to interpret input."]}),
        (ORDERS, order(emailTemplate="Hello"), {"EmailTemplate": ["Input should be an object."]}),
        (ORDERS, order(emailTemplate={"subject": ["S"], "body": "B"}),
         {"EmailTemplate.Subject": ["Input should be a valid string."]}),
        (ORDERS, order(smsTemplate=[]), {"SmsTemplate": ["Input should be an object."]}),
        (ORDERS, order(sendersReference=42), {"SendersReference": ["Input should be a valid string."]}),
        (ORDERS, order(conditionEndpoint={"url": "https://example.com"}),
         {"ConditionEndpoint": ["Input should be a valid string."]}),
        (EMAIL_ORDERS, email_order(subject=1.5), {"Subject": ["Input should be a valid string."]}),
        (EMAIL_ORDERS, email_order(body=False), {"Body": ["Input should be a valid string."]}),
        (SMS_ORDERS, sms_order(senderNumber=4712345678), {"SenderNumber": ["Input should be a valid string."]}),
        (SMS_ORDERS, sms_order(recipients=[{"mobileNumber": 4740000000}]),
         {"Recipients[0].MobileNumber": ["Input should be a valid string."]}),
    ],
    ids=lambda v: None,
)  # fmt: skip
async def test_wrong_json_types_are_refused_naming_the_field(api: Api, path: str, body: Body, expected: Errors) -> None:
    assert await api.refused(path, body) == expected


async def test_nan_where_a_string_belongs_is_a_wrong_type(api: Api) -> None:
    # The JSON reader tolerates NaN and Infinity; no field takes a number, so they are refused by type.
    content = b'{"subject": NaN, "body": Infinity, "recipients": [{"emailAddress": "a@example.com"}]}'
    assert problem_errors(await api.post_raw(EMAIL_ORDERS, content)) == {
        "Subject": ["Input should be a valid string."],
        "Body": ["Input should be a valid string."],
    }


async def test_wrong_types_in_several_fields_are_all_named(api: Api) -> None:
    body = order(recipients="a@example.com", ignoreReservation={"yes": True}, emailTemplate={"subject": 1})
    assert await api.refused(ORDERS, body) == {
        "Recipients": ["Input should be a valid array."],
        "IgnoreReservation": ["Input should be a valid boolean."],
        "EmailTemplate.Subject": ["Input should be a valid string."],
    }


@pytest.mark.parametrize("value", [True, False, None])
async def test_ignore_reservation_is_stored_as_sent(api: Api, value: bool | None) -> None:
    read = await api.accepted(ORDERS, order(ignoreReservation=value))
    assert read.get("ignoreReservation") == value


# ---------------------------------------------------------------- unknown properties


async def test_spec_003_example_with_content_type_inside_the_template_is_accepted(api: Api) -> None:
    body = {
        "sendersReference": "9A547448-FDF4-4E60-87AC-C2F652C8353C",
        "emailTemplate": {
            "subject": "A test email from Altinn Notifications",
            "body": "A message to be sent immediately from an org.",
            "content-type": "Html",
        },
        "smsTemplate": {"body": "Demo SMS content"},
        "notificationChannel": "emailPreferred",
        "recipients": [{"organizationNumber": "311000179"}, {"nationalIdentityNumber": "11876995923"}],
        "resourceId": "app_ttd_apps-test",
    }
    read = await api.accepted(ORDERS, body)
    # "content-type" is not "contentType": ignored, so the default applies.
    assert read["emailTemplate"]["contentType"] == "Plain"
    assert read["notificationChannel"] == "EmailPreferred"


@pytest.mark.parametrize("shape", ENDPOINTS, ids=str)
async def test_unknown_properties_are_ignored_everywhere(api: Api, shape: Shape) -> None:
    unknown = {"x-extra": {"nested": [1, None, "\u0000"]}, "NotAField": True}
    body = shape.make(**unknown)
    body["recipients"] = [dict(body["recipients"][0], **unknown)]
    for template in ("emailTemplate", "smsTemplate"):
        if template in body:
            body[template] = dict(body[template], **unknown)
    assert (await api.post(shape.path, body)).status_code == 202


# ---------------------------------------------------------------- all errors together


async def test_all_errors_of_an_order_are_reported_together(api: Api) -> None:
    body = {
        "notificationChannel": "EmailAndSms",
        "emailTemplate": {"fromAddress": "nobody", "subject": " ", "body": ""},
        "smsTemplate": {"senderNumber": "Far too long a name", "body": None},
        "recipients": [
            {"emailAddress": "bad"},
            {"mobileNumber": "+4750000000"},
            {"nationalIdentityNumber": "1", "emailAddress": EMAIL},
            {},
            {"organizationNumber": "1"},
        ],
        "requestedSendTime": "2026-03-02T09:00:00Z",
        "conditionEndpoint": "http://localhost/check",
        "resourceAction": "read",
        "resourceId": "r" * 256,
        "sendersReference": "s" * 201,
    }
    assert await api.refused(ORDERS, body) == {
        "EmailTemplate.FromAddress": [INVALID_EMAIL],
        "EmailTemplate.Subject": ["The email template subject must not be empty."],
        "EmailTemplate.Body": ["The email template body must not be empty."],
        "SmsTemplate.SenderNumber": [SENDER_INVALID],
        "SmsTemplate.Body": ["The SMS template body must not be empty."],
        "Recipients[0].EmailAddress": [INVALID_EMAIL],
        "Recipients[1].MobileNumber": [INVALID_MOBILE],
        "Recipients[2].NationalIdentityNumber": [INVALID_NIN],
        "Recipients[2]": [NIN_COMBINED],
        "Recipients[3]": [MISSING_FOR_ANY],
        "Recipients[4].OrganizationNumber": [INVALID_ORG],
        "RequestedSendTime": [IN_THE_PAST],
        "ConditionEndpoint": [NOT_PUBLIC],
        "ResourceId": [too_long(255, 256)],
        "SendersReference": [too_long(200, 201)],
    }


async def test_all_errors_of_an_sms_order_are_reported_together(api: Api) -> None:
    body = {
        "senderNumber": "!",
        "body": "",
        "recipients": [{"mobileNumber": "4740000000"}, {"emailAddress": EMAIL}],
        "requestedSendTime": "2026-03-02T12:00:00",
        "conditionEndpoint": "ftp://example.com",
        "resourceAction": "read",
    }
    assert await api.refused(SMS_ORDERS, body) == {
        "SenderNumber": [SENDER_INVALID],
        "Body": ["The SMS body must not be empty."],
        "Recipients[0].MobileNumber": [INVALID_MOBILE],
        "Recipients[1]": [MISSING_FOR_SMS],
        "RequestedSendTime": [NO_TIME_ZONE],
        "ConditionEndpoint": [NOT_ABSOLUTE],
        "ResourceAction": [ACTION_WITHOUT_RESOURCE],
    }


async def test_missing_everything_is_reported_together(api: Api) -> None:
    assert await api.refused(ORDERS, {}) == {
        "NotificationChannel": [CHANNEL_REQUIRED],
        "Recipients": [RECIPIENT_REQUIRED],
    }
    assert await api.refused(EMAIL_ORDERS, {}) == {
        "Subject": ["The email subject must not be empty."],
        "Body": ["The email body must not be empty."],
        "Recipients": [RECIPIENT_REQUIRED],
    }
    assert await api.refused(SMS_ORDERS, {}) == {
        "Body": ["The SMS body must not be empty."],
        "Recipients": [RECIPIENT_REQUIRED],
    }


async def test_a_refused_order_is_not_stored(api: Api) -> None:
    await api.refused(ORDERS, order(sendersReference="refused-order", recipients=[{"emailAddress": "bad"}]))
    found = await api.client.get(ORDERS, params={"sendersReference": "refused-order"}, headers=api.headers)
    assert found.status_code == 200
    assert found.json()["count"] == 0


# ---------------------------------------------------------------- no input makes the server fail


_CONTROL_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)  # NUL, control characters, no surrogates
_MEANINGFUL = st.sampled_from(
    [
        "Email", "sms", "EmailPreferred", "smsPreferred", "EmailAndSms", "Html", "plain",
        EMAIL, " a@example.com ", "a@localhost", MOBILE, "0047 99999999", "+46 70 123 45 67", "+4750000000",
        NIN, ORG, "١٢٣٤٥٦٧٨٩٠١", "2026-03-02T10:00:00Z", "2026-03-02T13:49:31.5591909Z", "2026-03-02T10:00:00",
        "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1893456000", "https://example.com/check",
        "http://127.0.0.1/", "http://[::1]/", "https://exa\tmple.com/", "http://[::1/", "https://bücher.de/",
        "Subject\r\nBcc: x@example.com", "", " ", "\u0000",
    ]
)  # fmt: skip
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _CONTROL_TEXT
    | _MEANINGFUL
)
_ANY = st.recursive(
    _SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_CONTROL_TEXT, inner, max_size=3), max_leaves=8
)
# Meaningful values twice as often as anything else, so that many bodies pass some rules and break others.
_FIELD = st.one_of(_MEANINGFUL, _MEANINGFUL, _CONTROL_TEXT, _SCALAR, _ANY)
_RECIPIENT_FIELDS = ("emailAddress", "mobileNumber", "nationalIdentityNumber", "organizationNumber")
_RECIPIENT = st.fixed_dictionaries({}, optional=dict.fromkeys(_RECIPIENT_FIELDS, _FIELD))
_RECIPIENTS = st.lists(_RECIPIENT, max_size=4) | _ANY
_BASE = dict.fromkeys(
    ("sendersReference", "requestedSendTime", "conditionEndpoint", "ignoreReservation", "resourceId", "resourceAction"),
    _FIELD,
) | {"recipients": _RECIPIENTS}
_EMAIL_FIELDS = dict.fromkeys(("fromAddress", "subject", "body", "contentType"), _FIELD)
_SMS_FIELDS = dict.fromkeys(("senderNumber", "body"), _FIELD)
# The properties of each endpoint and what to put in them.
FIELDS = {
    ORDERS: _BASE
    | {
        "notificationChannel": _FIELD,
        "emailTemplate": st.fixed_dictionaries({}, optional=_EMAIL_FIELDS) | _ANY,
        "smsTemplate": st.fixed_dictionaries({}, optional=_SMS_FIELDS) | _ANY,
    },
    EMAIL_ORDERS: _BASE | _EMAIL_FIELDS,
    SMS_ORDERS: _BASE | _SMS_FIELDS,
}
VALID = {ORDERS: lambda: order("EmailAndSms"), EMAIL_ORDERS: email_order, SMS_ORDERS: sms_order}


@pytest.mark.parametrize("path", [ORDERS, EMAIL_ORDERS, SMS_ORDERS])
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_arbitrary_bodies_get_202_or_a_4xx_problem_never_5xx(api: Api, path: str, data: st.DataObject) -> None:
    fields = FIELDS[path]
    if data.draw(st.booleans(), label="start from a valid order"):
        # A few properties of a valid order changed: such bodies get past the JSON reader into every rule.
        body: Any = VALID[path]()
        for key in data.draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=2, unique=True)):
            body[key] = data.draw(fields[key], label=key)
    else:
        body = data.draw(st.fixed_dictionaries({}, optional=fields) | _ANY, label="body")
    # Encoded here, not by httpx: json.dumps escapes every non-ASCII character, control characters included.
    response = await api.post_raw(path, json.dumps(body).encode())
    assert response.status_code == 202 or 400 <= response.status_code < 500, (response.status_code, response.text)
    event(f"status {response.status_code}")  # --hypothesis-show-statistics shows how deep the examples got
    if response.status_code == 202:
        assert "orderId" in response.json()
    else:
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["status"] == response.status_code
        if response.status_code == 400:
            problem_errors(response)


# ---------------------------------------------------------------- binding as .NET clients expect it (#15)


async def test_property_names_match_in_any_case(api: Api) -> None:
    # Altinn's own integration tests post PascalCase bodies; ASP.NET's web defaults match names in any case.
    body = {
        "NotificationChannel": "Sms",
        "SENDERSREFERENCE": "case-7",
        "SmsTemplate": {"SenderNumber": "Altinn", "Body": "Hei"},
        "Recipients": [{"MobileNumber": MOBILE}],
        "ResourceId": "app_ttd_apps-test",
        "resourceaction": "sign",
    }
    read = await api.accepted(ORDERS, body)
    assert read["notificationChannel"] == "Sms"
    assert read["sendersReference"] == "case-7"
    assert read["smsTemplate"] == {"senderNumber": "Altinn", "body": "Hei"}
    assert read["recipients"] == [{"mobileNumber": MOBILE}]
    assert (read["resourceId"], read["resourceAction"]) == ("app_ttd_apps-test", "sign")


async def test_the_declared_spelling_wins_over_another(api: Api) -> None:
    read = await api.accepted(EMAIL_ORDERS, email_order(SendersReference="other", sendersReference="declared"))
    assert read["sendersReference"] == "declared"
    read = await api.accepted(EMAIL_ORDERS, email_order(SendersReference="first", SENDERSREFERENCE="last"))
    assert read["sendersReference"] == "last"


@pytest.mark.parametrize(
    ("number", "channel"),
    [(0, "Email"), (1, "Sms"), (2, "EmailPreferred"), (3, "SmsPreferred"), (4, "EmailAndSms")],
)
async def test_a_channel_may_be_given_by_its_integer_value(api: Api, number: int, channel: str) -> None:
    body = order(channel) | {"notificationChannel": number}
    assert (await api.accepted(ORDERS, body))["notificationChannel"] == channel


@pytest.mark.parametrize(("number", "content_type"), [(0, "Plain"), (1, "Html")])
async def test_a_content_type_may_be_given_by_its_integer_value(api: Api, number: int, content_type: str) -> None:
    read = await api.accepted(EMAIL_ORDERS, email_order(contentType=number))
    assert read["emailTemplate"]["contentType"] == content_type


@pytest.mark.parametrize("number", [5, -1, True])
async def test_an_undeclared_integer_is_refused_naming_the_field(api: Api, number: Any) -> None:
    errors = await api.refused(ORDERS, order("Email") | {"notificationChannel": number})
    assert list(errors) == ["NotificationChannel"]
