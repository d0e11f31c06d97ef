"""Every rule of reference 1.2 for POST /future/orders, with its exact key and message, and the framework layer's
answers (reference 0.6): what a .NET client's error handling reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.api_v2.helpers import (
    EMAIL_SETTINGS,
    Auth,
    chain,
    email_recipient,
    external_recipient,
    org_recipient,
    person_recipient,
    post,
    sms_recipient,
)
from tests.conftest import NOW

SOON = (NOW + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
PAST = (NOW - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
NS = "Altinn.Notifications.Models"
BODY_REQUIRED = {"notificationOrderRequest": ["The notificationOrderRequest field is required."]}


def _missing(type_name: str, *members: str) -> dict[str, list[str]]:
    listed = ", ".join(f"'{m}'" for m in members)
    return {"$": [f"JSON deserialization for type '{NS}.{type_name}' was missing required properties including: "
                  f"{listed}."], **BODY_REQUIRED}  # fmt: skip


def _reminder(**fields: Any) -> dict[str, Any]:
    return {"recipient": email_recipient("r@example.com"), **fields}


def _person(**fields: Any) -> dict[str, Any]:
    recipient = person_recipient()
    recipient["recipientPerson"].update(fields)
    return {k: v for k, v in recipient["recipientPerson"].items() if v is not ...}


P = "Recipient.RecipientPerson"
REQUEST = "NotificationOrderChainRequestExt"
NO_EMAIL = {"recipientEmail": {"emailAddress": None, "emailSettings": EMAIL_SETTINGS}}
NULL_SETTINGS = {"recipientEmail": {"emailAddress": "a@example.com", "emailSettings": None}}
CASES: list[tuple[str, Any, dict[str, list[str]]]] = [
    # ---- framework layer: members that must be present, then [Required]
    ("empty body", {}, _missing(REQUEST, "idempotencyId", "recipient")),
    ("no idempotencyId", {"recipient": email_recipient()}, _missing(REQUEST, "idempotencyId")),
    ("recipientEmail without settings", chain(recipient={"recipientEmail": {"emailAddress": "a@example.com"}}),
     _missing("RecipientEmailExt", "emailSettings")),
    ("email settings without subject", chain(recipient={"recipientEmail": {"emailAddress": "a@example.com",
                                                                           "emailSettings": {"body": "b"}}}),
     _missing("EmailSendingOptionsExt", "subject")),
    ("person without channelSchema", chain(recipient={"recipientPerson": {"nationalIdentityNumber": "01017012345"}}),
     _missing("RecipientPersonExt", "channelSchema")),
    ("reminder without recipient", chain(reminders=[{"delayDays": 1}]),
     _missing("NotificationReminderExt", "recipient")),
    ("blank idempotencyId", chain(" "), {"IdempotencyId": ["The IdempotencyId field is required."]}),
    ("null recipient", {"idempotencyId": "k", "recipient": None}, {"Recipient": ["The Recipient field is required."]}),
    ("null email settings", chain(recipient=NULL_SETTINGS),
     {"Recipient.RecipientEmail.Settings": ["The Settings field is required."]}),
    ("empty subject", chain(recipient=email_recipient(subject="")),
     {"Recipient.RecipientEmail.Settings.Subject": ["The Subject field is required."]}),
    ("blank email body", chain(recipient=email_recipient(body="  ")),
     {"Recipient.RecipientEmail.Settings.Body": ["The Body field is required."]}),
    ("empty phone number", chain(recipient=sms_recipient("")),
     {"Recipient.RecipientSms.PhoneNumber": ["The PhoneNumber field is required."]}),
    ("null sms settings", chain(recipient={"recipientSms": {"phoneNumber": "+4799999999", "smsSettings": None}}),
     {"Recipient.RecipientSms.Settings": ["The Settings field is required."]}),
    ("empty sms body", chain(recipient=sms_recipient(body="")),
     {"Recipient.RecipientSms.Settings.Body": ["The Body field is required."]}),
    ("empty national identity number", chain(recipient=person_recipient("")),
     {f"{P}.NationalIdentityNumber": ["The NationalIdentityNumber field is required."]}),
    ("empty org number", chain(recipient=org_recipient("")),
     {"Recipient.RecipientOrganization.OrgNumber": ["The OrgNumber field is required."]}),
    ("empty external identity", chain(recipient=external_recipient("")),
     {"Recipient.RecipientExternalIdentity.ExternalIdentity": ["The ExternalIdentity field is required."]}),
    ("person's empty sms body", chain(recipient={"recipientPerson": _person(smsSettings={"body": ""})}),
     {f"{P}.SmsSettings.Body": ["The Body field is required."]}),
    ("null reminder recipient", chain(reminders=[{"delayDays": 1, "recipient": None}]),
     {"Reminders[0].Recipient": ["The Recipient field is required."]}),
    # ---- top level
    ("send time without zone", chain(requestedSendTime="2026-03-03T10:00:00"),
     {"RequestedSendTime": ["The requested send time value must have specified a time zone."]}),
    ("send time in the past", chain(requestedSendTime=PAST),
     {"RequestedSendTime": ["RequestedSendTime must be greater than or equal to now."]}),
    ("condition not a URI", chain(conditionEndpoint="not a uri"),
     {"ConditionEndpoint": ["ConditionEndpoint must be a valid absolute URI or null."]}),
    ("condition not http", chain(conditionEndpoint="ftp://example.com/c"),
     {"ConditionEndpoint": ["ConditionEndpoint must use http or https scheme."]}),
    ("condition on a private host (varsel's rule)", chain(conditionEndpoint="http://localhost/c"),
     {"ConditionEndpoint": ["The condition endpoint's host must be a public DNS name with a top-level domain"
                            " (unless the operator of this service lists the host in"
                            " VARSEL_CONDITIONS__ALLOWED_HOSTS)."]}),
    ("condition on an IP address (varsel's rule)", chain(conditionEndpoint="http://10.0.0.1/c"),
     {"ConditionEndpoint": ["The condition endpoint must name its host by a DNS name, not an IP address"
                            " (unless the operator of this service lists the host in"
                            " VARSEL_CONDITIONS__ALLOWED_HOSTS)."]}),
    ("no recipient kind", chain(recipient={}), {"Recipient": ["Must have exactly one recipient."]}),
    ("two recipient kinds", chain(recipient={**email_recipient(), **sms_recipient()}),
     {"Recipient": ["Must have exactly one recipient."]}),
    # ---- recipientEmail and email settings
    ("invalid email address", chain(recipient=email_recipient("nope")),
     {"Recipient.RecipientEmail.EmailAddress": ["Invalid email address format."]}),
    ("a list of email addresses", chain(recipient=email_recipient("a@example.com;b@example.com")),
     {"Recipient.RecipientEmail.EmailAddress": ["Invalid email address format."]}),
    ("null email address", chain(recipient=NO_EMAIL),
     {"Recipient.RecipientEmail.EmailAddress": ["'Email Address' must not be empty.",
                                                "Invalid email address format."]}),
    ("empty sender address", chain(recipient=email_recipient(senderEmailAddress="")),
     {"Recipient.RecipientEmail.Settings.SenderEmailAddress": ["The sender email address is not valid."]}),
    ("invalid sender address", chain(recipient=email_recipient(senderEmailAddress="x@")),
     {"Recipient.RecipientEmail.Settings.SenderEmailAddress": ["The sender email address is not valid."]}),
    ("email at daytime", chain(recipient=email_recipient(sendingTimePolicy="Daytime")),
     {"Recipient.RecipientEmail.Settings.SendingTimePolicy": ["Email only supports send time anytime"]}),
    ("email policy 2 (Daytime)", chain(recipient=email_recipient(sendingTimePolicy=2)),
     {"Recipient.RecipientEmail.Settings.SendingTimePolicy": ["Email only supports send time anytime"]}),
    ("email content type 5", chain(recipient=email_recipient(contentType=5)),
     {"Recipient.RecipientEmail.Settings.ContentType": ["Email content type must be either Plain or HTML."]}),
    # ---- recipientSms
    ("phone number without country code", chain(recipient=sms_recipient("99999999")),
     {"Recipient.RecipientSms.PhoneNumber": ["Recipient phone number is not a valid mobile number."]}),
    ("phone number 0", chain(recipient=sms_recipient("0")),
     {"Recipient.RecipientSms.PhoneNumber": ["Recipient phone number is not a valid mobile number."]}),
    ("sms policy 0", chain(recipient=sms_recipient(sendingTimePolicy=0)),
     {"Recipient.RecipientSms.Settings.SendingTimePolicy": ["SMS only supports send time daytime and anytime"]}),
    # ---- person, organisation, external identity
    ("channel 9", chain(recipient=person_recipient(channel=9)),
     {f"{P}.ChannelSchema": ["Invalid channel scheme value."]}),
    ("EmailAndSms without settings", chain(recipient={"recipientPerson": _person(channelSchema="EmailAndSms",
                                                                                 emailSettings=..., smsSettings=...)}),
     {f"{P}.EmailSettings": ["EmailSettings must be set when ChannelSchema is EmailAndSms"],
      f"{P}.SmsSettings": ["SmsSettings must be set when ChannelSchema is EmailAndSms"]}),
    ("EmailPreferred without settings",
     chain(recipient={"recipientPerson": _person(emailSettings=..., smsSettings=...)}),
     {f"{P}.EmailSettings": ["EmailSettings must be set when ChannelSchema is SmsPreferred or EmailPreferred"],
      f"{P}.SmsSettings": ["SmsSettings must be set when ChannelSchema is SmsPreferred or EmailPreferred"]}),
    ("SmsPreferred without email settings", chain(recipient={"recipientPerson": _person(channelSchema=3,
                                                                                        emailSettings=...)}),
     {f"{P}.EmailSettings": ["EmailSettings must be set when ChannelSchema is SmsPreferred or EmailPreferred"]}),
    ("Sms without sms settings", chain(recipient={"recipientPerson": _person(channelSchema="sms", smsSettings=...)}),
     {f"{P}.SmsSettings": ["SmsSettings must be set when ChannelSchema is Sms"]}),
    ("Email without email settings", chain(recipient={"recipientPerson": _person(channelSchema=0, emailSettings=...)}),
     {f"{P}.EmailSettings": ["EmailSettings must be set when ChannelSchema is Email"]}),
    ("unused settings are still checked", chain(recipient={"recipientPerson": _person(
        channelSchema="Email", smsSettings={"body": "b", "sendingTimePolicy": 0})}),
     {f"{P}.SmsSettings.SendingTimePolicy": ["SMS only supports send time daytime and anytime"]}),
    ("person's email settings at daytime", chain(recipient={"recipientPerson": _person(
        emailSettings={**EMAIL_SETTINGS, "sendingTimePolicy": "daytime"})}),
     {f"{P}.EmailSettings.SendingTimePolicy": ["Email only supports send time anytime"]}),
    ("resource id without the urn", chain(recipient=person_recipient(resourceId="app_ttd_x")),
     {f"{P}.ResourceId": ["ResourceId must have a valid syntax."]}),
    ("resource id only the urn prefix", chain(recipient=person_recipient(resourceId="urn:altinn:resource:")),
     {f"{P}.ResourceId": ["ResourceId must have a valid syntax."]}),
    ("empty resource id", chain(recipient=person_recipient(resourceId="")),
     {f"{P}.ResourceId": ["ResourceId must have a valid syntax."]}),
    ("action without resource", chain(recipient=person_recipient(resourceAction="read")),
     {f"{P}.ResourceAction": ["ResourceAction cannot be specified without a ResourceId."]}),
    ("blank action", chain(recipient=person_recipient(resourceId="urn:altinn:resource:x", resourceAction="  ")),
     {f"{P}.ResourceAction": ["ResourceAction cannot be blank or whitespace."]}),
    ("national identity number of 10 digits", chain(recipient=person_recipient("0101701234")),
     {f"{P}.NationalIdentityNumber": ["National identity number must be 11 digits long."]}),
    ("national identity number with a letter", chain(recipient=person_recipient("0101701234x")),
     {f"{P}.NationalIdentityNumber": ["National identity number must be 11 digits long."]}),
    ("org number of 8 digits", chain(recipient=org_recipient("91000000")),
     {"Recipient.RecipientOrganization.OrgNumber": ["Organization number must be 9 digits long."]}),
    ("org action without resource", chain(recipient=org_recipient(resourceAction="sign")),
     {"Recipient.RecipientOrganization.ResourceAction": ["ResourceAction cannot be specified without a ResourceId."]}),
    *[
        (f"external identity {urn}", chain(recipient=external_recipient(urn)),
         {"Recipient.RecipientExternalIdentity.ExternalIdentity": ["Invalid external identity URN format."]})
        for urn in ["urn:altinn:username:", "urn:altinn:person:idporten-email:user@example",
                    "urn:altinn:person:wrongprefix:x", "URN:altinn:username:kari", "urn:altinn:party:username:%20"]
    ],
    ("external identity channel 7", chain(recipient=external_recipient(channel=7)),
     {"Recipient.RecipientExternalIdentity.ChannelSchema": ["Invalid channel scheme value."]}),
    # ---- reminders
    ("reminder without a time", chain(reminders=[_reminder()]),
     {"Reminders[0]": ["Either DelayDays or RequestedSendTime must be defined, but not both."]}),
    ("reminder with both times", chain(reminders=[_reminder(delayDays=1, requestedSendTime=SOON)]),
     {"Reminders[0]": ["Either DelayDays or RequestedSendTime must be defined, but not both."],
      "Reminders[0].RequestedSendTime": ["RequestedSendTime must be null when DelayDays is set."],
      "Reminders[0].DelayDays": ["DelayDays must be null when RequestedSendTime is set."]}),
    ("reminder delay 0", chain(reminders=[_reminder(delayDays=0)]),
     {"Reminders[0].DelayDays": ["DelayDays must be greater than or equal to 1 day."]}),
    ("reminder delay -1 as a string", chain(reminders=[_reminder(delayDays="-1")]),
     {"Reminders[0].DelayDays": ["DelayDays must be greater than or equal to 1 day."]}),
    ("reminder time without zone", chain(reminders=[_reminder(requestedSendTime="2026-03-09T10:00:00")]),
     {"Reminders[0].RequestedSendTime": ["The RequestedSendTime must have specified a time zone."]}),
    ("reminder time in the past", chain(reminders=[_reminder(requestedSendTime=PAST)]),
     {"Reminders[0].RequestedSendTime": ["RequestedSendTime must be greater than or equal to the current UTC time."]}),
    ("reminder condition not http", chain(reminders=[_reminder(delayDays=1, conditionEndpoint="mailto:a@example.com")]),
     {"Reminders[0].ConditionEndpoint": ["ConditionEndpoint must use http or https scheme."]}),
    ("reminder condition not a URI", chain(reminders=[_reminder(delayDays=1, conditionEndpoint="/relative")]),
     {"Reminders[0].ConditionEndpoint": ["ConditionEndpoint must be a valid absolute URI or null."]}),
    ("second reminder without a recipient kind", chain(reminders=[_reminder(delayDays=1), {"delayDays": 2,
                                                                                           "recipient": {}}]),
     {"Reminders[1].Recipient": ["Must have exactly one recipient."]}),
    ("reminder's invalid phone number", chain(reminders=[{"delayDays": 1, "recipient": sms_recipient("+47")}]),
     {"Reminders[0].Recipient.RecipientSms.PhoneNumber": ["Recipient phone number is not a valid mobile number."]}),
    ("reminder's person", chain(reminders=[{"delayDays": 1, "recipient": {"recipientPerson": _person(
        nationalIdentityNumber="1", channelSchema="Sms", smsSettings=...)}}]),
     {"Reminders[0].Recipient.RecipientPerson.SmsSettings": ["SmsSettings must be set when ChannelSchema is Sms"],
      "Reminders[0].Recipient.RecipientPerson.NationalIdentityNumber": [
          "National identity number must be 11 digits long."]}),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), [(body, expected) for _, body, expected in CASES],
                         ids=[name for name, _, _ in CASES])  # fmt: skip
async def test_rule(client: httpx.AsyncClient, auth: Auth, body: Any, expected: dict[str, list[str]]) -> None:
    response = await post(client, auth, body)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.1"
    assert problem["title"] == "One or more validation errors occurred."
    assert problem["status"] == 400
    assert problem["traceId"].startswith("00-")
    assert problem["errors"] == expected


async def test_every_broken_rule_is_reported_together(client: httpx.AsyncClient, auth: Auth) -> None:
    body = chain(
        requestedSendTime="2020-01-01T00:00:00",
        conditionEndpoint="gopher://example.com/",
        recipient=email_recipient("nope", sendingTimePolicy="Daytime"),
        reminders=[_reminder(delayDays=0), {"requestedSendTime": PAST, "recipient": sms_recipient("123")}],
    )
    errors = (await post(client, auth, body)).json()["errors"]
    assert errors == {
        "RequestedSendTime": [
            "The requested send time value must have specified a time zone.",
            "RequestedSendTime must be greater than or equal to now.",
        ],
        "ConditionEndpoint": ["ConditionEndpoint must use http or https scheme."],
        "Recipient.RecipientEmail.EmailAddress": ["Invalid email address format."],
        "Recipient.RecipientEmail.Settings.SendingTimePolicy": ["Email only supports send time anytime"],
        "Reminders[0].DelayDays": ["DelayDays must be greater than or equal to 1 day."],
        "Reminders[1].RequestedSendTime": ["RequestedSendTime must be greater than or equal to the current UTC time."],
        "Reminders[1].Recipient.RecipientSms.PhoneNumber": ["Recipient phone number is not a valid mobile number."],
    }


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"idempotencyId": "k", "recipient": ', "$"),
        (chain(requestedSendTime=42), "$.requestedSendTime"),
        (
            chain(recipient=email_recipient(contentType="Markdown")),
            "$.recipient.recipientEmail.emailSettings.contentType",
        ),
        (chain(reminders=[_reminder(delayDays="three")]), "$.reminders[0].delayDays"),
    ],
    ids=["cut off", "time as a number", "unknown enum name", "delay not a number"],
)
async def test_bodies_that_do_not_parse_are_keyed_by_json_path(
    client: httpx.AsyncClient, auth: Auth, body: Any, key: str
) -> None:
    if isinstance(body, bytes):
        response = await client.post(
            "/notifications/api/v1/future/orders", content=body, headers={**auth(), "Content-Type": "application/json"}
        )
    else:
        response = await post(client, auth, body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert key in errors
    assert errors["notificationOrderRequest"] == ["The notificationOrderRequest field is required."]


async def test_tokens_are_checked_before_the_body(client: httpx.AsyncClient, auth: Auth) -> None:
    assert (await client.post("/notifications/api/v1/future/orders", json={})).status_code == 401
    response = await post(client, lambda org: auth(org, scopes=["other"]), {})
    assert response.status_code == 403
    response = await client.post("/notifications/api/v1/future/orders", content=b"x", headers=auth())
    assert response.status_code == 415
