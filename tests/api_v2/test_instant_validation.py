"""Every rule of reference 2.2 for the three instant routes, with its exact key and message, and the framework
layer's answers (reference 0.6), as a .NET client's error handling reads them; then what the rules make of a valid
request (the draft the service sends). Nothing here reaches the provider: a refused request stores nothing."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from tests.api_v2.helpers import Auth
from varsel.api.v2.instant_models import (
    InstantEmailNotificationOrderRequestExt,
    InstantNotificationOrderRequestExt,
    InstantSmsNotificationOrderRequestExt,
)
from varsel.api.v2.instant_validation import InstantValidator, framework_errors
from varsel.orders.drafts import EmailTemplateSpec, InstantDraft, InstantEmail, InstantSms, SmsTemplateSpec
from varsel.orders.vocabulary import EmailContentType
from varsel.settings import Limits, OrderDefaults

# The rules are decided before any query: one database is enough.
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

INSTANT = "/notifications/api/v1/future/orders/instant"
SMS_ROUTE, EMAIL_ROUTE = f"{INSTANT}/sms", f"{INSTANT}/email"
ORDERS = "Altinn.Notifications.Models.Orders"
BODY_REQUIRED = {"request": ["The request field is required."]}
TTL_MESSAGE = "Time-to-live must be between 60 and 172800 seconds (48 hours)."
PHONE_MESSAGE = "Recipient phone number is not a valid mobile number."
SENDER_MESSAGE = ("The sender must be a number of at most 15 digits or a name of at most 11 letters, digits, spaces, "
                  "dots or hyphens.")  # fmt: skip
DEPRECATED = "InstantNotificationRecipient.ShortMessageDeliveryDetails"


def _missing(type_name: str, *members: str) -> dict[str, list[str]]:
    listed = ", ".join(f"'{m}'" for m in members)
    return {"$": [f"JSON deserialization for type 'Altinn.Notifications.Models.{type_name}' was missing required "
                  f"properties including: {listed}."], **BODY_REQUIRED}  # fmt: skip


def sms_details(**changes: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"phoneNumber": "+4799999999", "timeToLiveInSeconds": 300,
                               "smsSettings": {"sender": "Varsel", "body": "Your code is 123456"}}  # fmt: skip
    return _changed(details, changes)


def email_details(**changes: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"emailAddress": "ola@example.com",
                               "emailSettings": {"subject": "Ready", "body": "Your document is ready"}}  # fmt: skip
    return _changed(details, changes)


def _changed(details: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The details with changes: `name=value` at the top, `settings__name=value` in the settings; ... removes."""
    details = copy.deepcopy(details)
    for name, value in changes.items():
        target = details
        if name.startswith("settings__"):
            name = name.removeprefix("settings__")
            target = details["smsSettings" if "smsSettings" in details else "emailSettings"]
        if value is ...:
            target.pop(name, None)
        else:
            target[name] = value
    return details


def sms(key: str = "k", **changes: Any) -> dict[str, Any]:
    return {"idempotencyId": key, "recipientSms": sms_details(**changes)}


def deprecated(key: str = "k", **changes: Any) -> dict[str, Any]:
    return {"idempotencyId": key, "recipient": {"recipientSms": sms_details(**changes)}}


def email(key: str | None = "k", **changes: Any) -> dict[str, Any]:
    return {"idempotencyId": key, "recipientEmail": email_details(**changes)}


Case = tuple[str, str, Any, dict[str, list[str]]]


def _sms_rules(route: str, body: Any, prefix: str) -> list[Case]:
    """The SMS rules, on /instant/sms or the deprecated route (`body` builds the route's shape)."""
    return [
        ("phone number without country code", route, body(phoneNumber="99999999"),
         {f"{prefix}.PhoneNumber": [PHONE_MESSAGE]}),
        ("phone number starting ++", route, body(phoneNumber="++4799999999"),
         {f"{prefix}.PhoneNumber": [PHONE_MESSAGE]}),
        ("phone number 0", route, body(phoneNumber="0"), {f"{prefix}.PhoneNumber": [PHONE_MESSAGE]}),
        ("ttl 59", route, body(timeToLiveInSeconds=59), {f"{prefix}.TimeToLiveInSeconds": [TTL_MESSAGE]}),
        ("ttl 172801", route, body(timeToLiveInSeconds=172_801), {f"{prefix}.TimeToLiveInSeconds": [TTL_MESSAGE]}),
        ("ttl 0", route, body(timeToLiveInSeconds=0), {f"{prefix}.TimeToLiveInSeconds": [TTL_MESSAGE]}),
        ("ttl -60 as a string", route, body(timeToLiveInSeconds="-60"),
         {f"{prefix}.TimeToLiveInSeconds": [TTL_MESSAGE]}),
        # varsel's own rules, as for a chain's SMS
        ("sender a gateway cannot show (varsel's rule)", route, body(settings__sender="A sender name too long"),
         {f"{prefix}.ShortMessageContent.Sender": [SENDER_MESSAGE]}),
        ("control character in the body (varsel's rule)", route, body(settings__body="code\x1b[31m"),
         {f"{prefix}.ShortMessageContent.Body": [
             "The SMS body must not contain control characters other than tabs and line breaks."]}),
        ("body over the limit (varsel's rule)", route, body(settings__body="x" * 2_001),
         {f"{prefix}.ShortMessageContent.Body": ["Must be at most 2000 characters long; it is 2001."]}),
    ]  # fmt: skip


E = "InstantEmailDetails"
CASES: list[Case] = [
    # ---- /instant/sms: the framework layer, members that must be present, then [Required]
    ("sms: empty body", SMS_ROUTE, {},
     _missing("Orders.InstantSmsNotificationOrderRequestExt", "idempotencyId", "recipientSms")),
    ("sms: no recipientSms", SMS_ROUTE, {"idempotencyId": "k"},
     _missing("Orders.InstantSmsNotificationOrderRequestExt", "recipientSms")),
    ("sms: empty recipientSms", SMS_ROUTE, {"idempotencyId": "k", "recipientSms": {}},
     _missing("Sms.ShortMessageDeliveryDetailsExt", "phoneNumber", "timeToLiveInSeconds", "smsSettings")),
    ("sms: no time to live", SMS_ROUTE, sms(timeToLiveInSeconds=...),
     _missing("Sms.ShortMessageDeliveryDetailsExt", "timeToLiveInSeconds")),
    ("sms: settings without body", SMS_ROUTE, sms(settings__body=...),
     _missing("Sms.ShortMessageContentExt", "body")),
    ("sms: blank idempotencyId", SMS_ROUTE, sms(" "), {"IdempotencyId": ["The IdempotencyId field is required."]}),
    ("sms: null recipientSms", SMS_ROUTE, {"idempotencyId": "k", "recipientSms": None},
     {"RecipientSms": ["The RecipientSms field is required."]}),
    ("sms: empty phone number", SMS_ROUTE, sms(phoneNumber=""),
     {"RecipientSms.PhoneNumber": ["The PhoneNumber field is required."]}),
    ("sms: null settings", SMS_ROUTE, sms(smsSettings=None),
     {"RecipientSms.ShortMessageContent": ["The ShortMessageContent field is required."]}),
    ("sms: blank body", SMS_ROUTE, sms(settings__body="  "),
     {"RecipientSms.ShortMessageContent.Body": ["The Body field is required."]}),
    ("sms: everything blank at once", SMS_ROUTE,
     {"idempotencyId": "", "recipientSms": sms_details(phoneNumber=None, settings__body=None)},
     {"IdempotencyId": ["The IdempotencyId field is required."],
      "RecipientSms.PhoneNumber": ["The PhoneNumber field is required."],
      "RecipientSms.ShortMessageContent.Body": ["The Body field is required."]}),
    # ---- /instant/sms: the rules
    *_sms_rules(SMS_ROUTE, sms, "RecipientSms"),
    ("sms: senders reference over the limit (varsel's rule)", SMS_ROUTE, {**sms(), "sendersReference": "r" * 201},
     {"SendersReference": ["Must be at most 200 characters long; it is 201."]}),
    # ---- the deprecated /instant: the framework layer
    ("deprecated: empty body", INSTANT, {},
     _missing("Orders.InstantNotificationOrderRequestExt", "idempotencyId", "recipient")),
    ("deprecated: empty recipient", INSTANT, {"idempotencyId": "k", "recipient": {}},
     _missing("Recipient.InstantNotificationRecipientExt", "recipientSms")),
    ("deprecated: recipientSms without phone number", INSTANT, deprecated(phoneNumber=...),
     _missing("Sms.ShortMessageDeliveryDetailsExt", "phoneNumber")),
    ("deprecated: settings without body", INSTANT, deprecated(settings__body=...),
     _missing("Sms.ShortMessageContentExt", "body")),
    ("deprecated: blank idempotencyId", INSTANT, deprecated(""),
     {"IdempotencyId": ["The IdempotencyId field is required."]}),
    ("deprecated: null recipient", INSTANT, {"idempotencyId": "k", "recipient": None},
     {"InstantNotificationRecipient": ["The InstantNotificationRecipient field is required."]}),
    ("deprecated: null recipientSms", INSTANT, {"idempotencyId": "k", "recipient": {"recipientSms": None}},
     {DEPRECATED: ["The ShortMessageDeliveryDetails field is required."]}),
    ("deprecated: blank phone number", INSTANT, deprecated(phoneNumber=" "),
     {f"{DEPRECATED}.PhoneNumber": ["The PhoneNumber field is required."]}),
    ("deprecated: null settings", INSTANT, deprecated(smsSettings=None),
     {f"{DEPRECATED}.ShortMessageContent": ["The ShortMessageContent field is required."]}),
    ("deprecated: empty body", INSTANT, deprecated(settings__body=""),
     {f"{DEPRECATED}.ShortMessageContent.Body": ["The Body field is required."]}),
    # ---- the deprecated /instant: the rules
    *[(f"deprecated: {name}", route, body, errors) for name, route, body, errors in _sms_rules(INSTANT, deprecated,
                                                                                                DEPRECATED)],
    # ---- /instant/email: the framework layer
    ("email: empty body", EMAIL_ROUTE, {},
     _missing("Orders.InstantEmailNotificationOrderRequestExt", "idempotencyId", "recipientEmail")),
    ("email: empty recipientEmail", EMAIL_ROUTE, {"idempotencyId": "k", "recipientEmail": {}},
     _missing("Email.InstantEmailDetailsExt", "emailAddress", "emailSettings")),
    ("email: settings without subject and body", EMAIL_ROUTE, email(emailSettings={}),
     _missing("Email.InstantEmailContentExt", "subject", "body")),
    ("email: no idempotencyId", EMAIL_ROUTE, {"recipientEmail": email_details()},
     _missing("Orders.InstantEmailNotificationOrderRequestExt", "idempotencyId")),
    ("email: null idempotencyId", EMAIL_ROUTE, email(None),
     {"IdempotencyId": ["The IdempotencyId field is required."]}),
    ("email: null recipientEmail", EMAIL_ROUTE, {"idempotencyId": "k", "recipientEmail": None},
     {E: ["The InstantEmailDetails field is required."]}),
    ("email: empty address", EMAIL_ROUTE, email(emailAddress=""),
     {f"{E}.EmailAddress": ["The EmailAddress field is required."]}),
    ("email: null settings", EMAIL_ROUTE, email(emailSettings=None),
     {f"{E}.EmailSettings": ["The EmailSettings field is required."]}),
    ("email: blank subject", EMAIL_ROUTE, email(settings__subject=" "),
     {f"{E}.EmailSettings.Subject": ["The Subject field is required."]}),
    ("email: empty body", EMAIL_ROUTE, email(settings__body=""),
     {f"{E}.EmailSettings.Body": ["The Body field is required."]}),
    # ---- /instant/email: the rules
    ("email: invalid address", EMAIL_ROUTE, email(emailAddress="nope"),
     {f"{E}.EmailAddress": ["Invalid email address format."]}),
    ("email: a list of addresses", EMAIL_ROUTE, email(emailAddress="a@example.com;b@example.com"),
     {f"{E}.EmailAddress": ["Invalid email address format."]}),
    ("email: invalid sender address", EMAIL_ROUTE, email(settings__senderEmailAddress="x@"),
     {f"{E}.EmailSettings.SenderEmailAddress": ["Invalid email address format."]}),
    ("email: empty sender address (present, so checked)", EMAIL_ROUTE, email(settings__senderEmailAddress=""),
     {f"{E}.EmailSettings.SenderEmailAddress": ["Invalid email address format."]}),
    ("email: content type 2", EMAIL_ROUTE, email(settings__contentType=2),
     {f"{E}.EmailSettings.ContentType": ["Email content type must be either Plain or HTML."]}),
    ("email: content type -1", EMAIL_ROUTE, email(settings__contentType=-1),
     {f"{E}.EmailSettings.ContentType": ["Email content type must be either Plain or HTML."]}),
    # varsel's own rules, as for a chain's email
    ("email: control character in the subject (varsel's rule)", EMAIL_ROUTE, email(settings__subject="a\x07b"),
     {f"{E}.EmailSettings.Subject": ["The email subject must not contain control characters."]}),
    ("email: subject over the limit (varsel's rule)", EMAIL_ROUTE, email(settings__subject="s" * 501),
     {f"{E}.EmailSettings.Subject": ["Must be at most 500 characters long; it is 501."]}),
    ("email: control character in the body (varsel's rule)", EMAIL_ROUTE, email(settings__body="a\x08b"),
     {f"{E}.EmailSettings.Body": [
         "The email body must not contain control characters other than tabs and line breaks."]}),
    ("email: senders reference over the limit (varsel's rule)", EMAIL_ROUTE,
     {**email(), "sendersReference": "r" * 201},
     {"SendersReference": ["Must be at most 200 characters long; it is 201."]}),
]  # fmt: skip


async def _post(client: httpx.AsyncClient, auth: Auth, route: str, body: Any) -> httpx.Response:
    return await client.post(route, json=body, headers=auth())


async def _nothing_stored(client: httpx.AsyncClient, auth: Auth) -> None:
    listed = await client.get("/notifications/api/v1/orders", params={"sendersReference": "refused"}, headers=auth())
    assert listed.json()["count"] == 0


@ONE_DATABASE
@pytest.mark.parametrize(("route", "body", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
async def test_rule(
    client: httpx.AsyncClient, auth: Auth, route: str, body: Any, expected: dict[str, list[str]]
) -> None:
    if isinstance(body, dict) and "idempotencyId" in body:
        body = {**body, "sendersReference": body.get("sendersReference", "refused")}
    response = await _post(client, auth, route, body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.1"
    assert problem["title"] == "One or more validation errors occurred."
    assert problem["status"] == 400
    assert problem["traceId"].startswith("00-")
    assert problem["errors"] == expected
    await _nothing_stored(client, auth)


@ONE_DATABASE
@pytest.mark.parametrize(
    ("route", "body", "expected"),
    [
        (SMS_ROUTE, {"idempotencyId": "k", "sendersReference": "r" * 201,
                     "recipientSms": sms_details(phoneNumber="123", timeToLiveInSeconds=10, settings__sender="#!")},
         {"SendersReference": ["Must be at most 200 characters long; it is 201."],
          "RecipientSms.PhoneNumber": [PHONE_MESSAGE],
          "RecipientSms.TimeToLiveInSeconds": [TTL_MESSAGE],
          "RecipientSms.ShortMessageContent.Sender": [SENDER_MESSAGE]}),
        (INSTANT, deprecated(phoneNumber="+47", timeToLiveInSeconds=172_801),
         {f"{DEPRECATED}.PhoneNumber": [PHONE_MESSAGE], f"{DEPRECATED}.TimeToLiveInSeconds": [TTL_MESSAGE]}),
        (EMAIL_ROUTE, email(emailAddress="a@", settings__senderEmailAddress="b@", settings__contentType=7,
                            settings__subject="\x01" + "s" * 500),
         {f"{E}.EmailAddress": ["Invalid email address format."],
          f"{E}.EmailSettings.SenderEmailAddress": ["Invalid email address format."],
          f"{E}.EmailSettings.Subject": ["Must be at most 500 characters long; it is 501.",
                                         "The email subject must not contain control characters."],
          f"{E}.EmailSettings.ContentType": ["Email content type must be either Plain or HTML."]}),
    ],
    ids=["sms", "deprecated", "email"],
)  # fmt: skip
async def test_every_broken_rule_is_reported_together(
    client: httpx.AsyncClient, auth: Auth, route: str, body: Any, expected: dict[str, list[str]]
) -> None:
    response = await _post(client, auth, route, body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"] == expected


@ONE_DATABASE
@pytest.mark.parametrize(
    ("route", "body", "key"),
    [
        (SMS_ROUTE, b'{"idempotencyId": "k", "recipientSms": ', "$"),
        (SMS_ROUTE, sms(timeToLiveInSeconds=None), "$.recipientSms.timeToLiveInSeconds"),
        (SMS_ROUTE, sms(timeToLiveInSeconds="five minutes"), "$.recipientSms.timeToLiveInSeconds"),
        (SMS_ROUTE, sms(timeToLiveInSeconds=2**31), "$.recipientSms.timeToLiveInSeconds"),
        (INSTANT, deprecated(timeToLiveInSeconds=[300]), "$.recipient.recipientSms.timeToLiveInSeconds"),
        (EMAIL_ROUTE, email(settings__contentType="Markdown"), "$.recipientEmail.emailSettings.contentType"),
        (EMAIL_ROUTE, email(emailAddress=42), "$.recipientEmail.emailAddress"),
    ],
    ids=["cut off", "ttl null", "ttl not a number", "ttl over Int32", "ttl a list", "unknown content type",
         "address a number"],
)  # fmt: skip
async def test_bodies_that_do_not_convert_are_keyed_by_json_path(
    client: httpx.AsyncClient, auth: Auth, route: str, body: Any, key: str
) -> None:
    if isinstance(body, bytes):
        response = await client.post(route, content=body, headers={**auth(), "Content-Type": "application/json"})
    else:
        response = await _post(client, auth, route, body)
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert key in errors
    assert errors["request"] == ["The request field is required."]


@ONE_DATABASE
@pytest.mark.parametrize("route", [SMS_ROUTE, EMAIL_ROUTE, INSTANT])
async def test_tokens_are_checked_before_the_body_and_a_body_must_be_json(
    client: httpx.AsyncClient, auth: Auth, route: str
) -> None:
    assert (await client.post(route, json={})).status_code == 401
    assert (await client.post(route, json={}, headers=auth(scopes=["other"]))).status_code == 403
    response = await client.post(route, content=b"idempotencyId=k", headers=auth())
    assert response.status_code == 415, response.text
    response = await client.post(route, content=b"{}", headers={**auth(), "Content-Type": "text/plain"})
    assert response.status_code == 415, response.text


# ---------------------------------------------------------------- what the rules make of a valid request

DEFAULTS = OrderDefaults(email_from_address="noreply@varsel.example", sms_sender="Varsel")
VALIDATOR = InstantValidator(Limits(), DEFAULTS)


def _sms_draft(body: dict[str, Any]) -> InstantDraft:
    request = InstantSmsNotificationOrderRequestExt.model_validate_json(json.dumps(body))
    assert framework_errors(request) == {}
    draft = VALIDATOR.sms(request)
    assert isinstance(draft, InstantDraft), draft
    return draft


def _email_draft(body: dict[str, Any]) -> InstantDraft:
    request = InstantEmailNotificationOrderRequestExt.model_validate(body)
    assert framework_errors(request) == {}
    draft = VALIDATOR.email(request)
    assert isinstance(draft, InstantDraft), draft
    return draft


@pytest.mark.parametrize("ttl", [60, 172_800, "300", " 3600 "])
def test_time_to_live_bounds_are_inclusive_and_a_number_in_a_string_is_a_number(ttl: Any) -> None:
    message = _sms_draft(sms(timeToLiveInSeconds=ttl)).message
    assert isinstance(message, InstantSms)
    assert message.time_to_live_seconds == int(str(ttl).strip())


def test_an_sms_draft_normalises_the_number_and_defaults_a_blank_sender() -> None:
    body = {**sms("otp-1", phoneNumber="004799999999", settings__sender="  "), "sendersReference": "login-1"}
    assert _sms_draft(body) == InstantDraft(
        "otp-1", InstantSms("+4799999999", SmsTemplateSpec("Varsel", "Your code is 123456"), 300), "login-1"
    )
    message = _sms_draft(sms(settings__sender=...)).message
    assert isinstance(message, InstantSms)
    assert message.template.sender == "Varsel"
    message = _sms_draft(sms(settings__sender=" Bank ")).message
    assert isinstance(message, InstantSms)
    assert message.template.sender == "Bank"


def test_the_deprecated_shape_makes_the_same_draft_as_sms() -> None:
    request = InstantNotificationOrderRequestExt.model_validate(deprecated("otp-1"))
    assert framework_errors(request) == {}
    assert VALIDATOR.deprecated(request) == _sms_draft(sms("otp-1"))


def test_an_email_draft_normalises_addresses_keeps_the_subject_and_defaults_the_sender() -> None:
    body = email("doc-1", emailAddress=" Ola@EXAMPLE.com ", settings__subject="Line one\r\nLine two",
                 settings__contentType="html")  # fmt: skip
    assert _email_draft(body) == InstantDraft(
        "doc-1",
        InstantEmail(
            "Ola@example.com",
            EmailTemplateSpec("noreply@varsel.example", "Line one\r\nLine two", "Your document is ready",
                              EmailContentType.HTML),
        ),
    )  # fmt: skip
    message = _email_draft(email(settings__senderEmailAddress="Post@Sender.EXAMPLE")).message
    assert isinstance(message, InstantEmail)
    assert message.template.from_address == "Post@sender.example"


@pytest.mark.parametrize(("given", "expected"), [(0, EmailContentType.PLAIN), (1, EmailContentType.HTML),
                                                 ("PLAIN", EmailContentType.PLAIN), ("Html", EmailContentType.HTML),
                                                 (..., EmailContentType.PLAIN)])  # fmt: skip
def test_content_types_by_name_in_any_case_or_by_number(given: Any, expected: EmailContentType) -> None:
    message = _email_draft(email(settings__contentType=given)).message
    assert isinstance(message, InstantEmail)
    assert message.template.content_type is expected


def test_property_names_match_in_any_case() -> None:
    body = {"IdempotencyId": "otp-1", "RECIPIENTSMS": {"PhoneNumber": "+4799999999", "timetoliveinseconds": 300,
                                                       "SmsSettings": {"Body": "b"}}, "Unknown": 1}  # fmt: skip
    message = _sms_draft(body).message
    assert isinstance(message, InstantSms)
    assert message.template.body == "b"
