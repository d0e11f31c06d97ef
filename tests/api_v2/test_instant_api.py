"""The instant routes over HTTP, on SQLite and PostgreSQL, through the outbox providers.

POST /future/orders/instant/sms, /instant/email and the deprecated /instant store the order, send it while the caller
waits and answer 201 with the receipt and a Location; the same idempotencyId again, on any of the three routes,
answers 200 with the first receipt and sends nothing; the shipment reads as type Instant. (The service's
reliability, transient failures, the guard, concurrency and crashes, is tests/api_v2/test_instant_reliability.py's.)
"""

from __future__ import annotations

import email
import email.policy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_v2.helpers import V1, Auth
from tests.api_v2.test_instant_reliability import instant_pipeline
from tests.conftest import NOW
from varsel.app import create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import Settings

INSTANT = "/notifications/api/v1/future/orders/instant"
SMS_ROUTE, EMAIL_ROUTE = f"{INSTANT}/sms", f"{INSTANT}/email"
SHIPMENT = "/notifications/api/v1/future/shipment"
NUMBER = "+4799999999"
CODE = "Your one-time code is 123456"


def sms_body(key: str = "otp-1", reference: str | None = "login-1", ttl: Any = 300) -> dict[str, Any]:
    body: dict[str, Any] = {
        "idempotencyId": key,
        "recipientSms": {"phoneNumber": NUMBER, "timeToLiveInSeconds": ttl, "smsSettings": {"body": CODE}},
    }
    if reference is not None:
        body["sendersReference"] = reference
    return body


def email_body(key: str = "doc-1", subject: str = "Your document is ready", **settings: Any) -> dict[str, Any]:
    return {
        "idempotencyId": key,
        "sendersReference": "case-1",
        "recipientEmail": {
            "emailAddress": "ola@example.com",
            "emailSettings": {"subject": subject, "body": "Log in to read it.", **settings},
        },
    }


def sent_sms(settings: Settings) -> list[dict[str, Any]]:
    outbox = settings.data_dir / "outbox" / "sms.jsonl"
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text().splitlines()]


def sent_email(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "outbox" / "email").glob("*.eml"))


async def test_an_instant_sms_is_sent_before_the_answer_201_with_the_receipt_and_a_location(
    client: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    response = await client.post(SMS_ROUTE, json=sms_body(), headers=auth())

    assert response.status_code == 201, response.text
    receipt = response.json()
    assert set(receipt) == {"notificationOrderId", "notification"}
    assert set(receipt["notification"]) == {"shipmentId", "sendersReference"}
    assert receipt["notification"]["sendersReference"] == "login-1"
    chain_id = receipt["notificationOrderId"]
    assert response.headers["location"] == f"http://varsel.test/notifications/api/v1/orders/chain/{chain_id}"
    # Sent while the caller waited: in the outbox when the answer comes, with the caller's time to live.
    [message] = sent_sms(settings)
    assert (message["to"], message["from"], message["body"]) == (NUMBER, "Varsel", CODE)
    assert message["expiry"] == (NOW + timedelta(seconds=300)).isoformat()


async def test_the_same_key_on_any_instant_route_answers_the_first_receipt_and_sends_nothing(
    client: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    first = await client.post(SMS_ROUTE, json=sms_body("otp-1"), headers=auth())
    assert first.status_code == 201, first.text

    again = await client.post(SMS_ROUTE, json=sms_body("otp-1", reference="other", ttl=600), headers=auth())
    as_email = await client.post(EMAIL_ROUTE, json=email_body("otp-1"), headers=auth())
    deprecated = {"idempotencyId": "otp-1", "recipient": {"recipientSms": sms_body()["recipientSms"]}}
    as_deprecated = await client.post(INSTANT, json=deprecated, headers=auth())

    for replay in (again, as_email, as_deprecated):
        assert replay.status_code == 200, replay.text
        assert replay.json() == first.json()
        assert "location" not in replay.headers
    assert len(sent_sms(settings)) == 1
    assert sent_email(settings) == []
    # The key is the service owner's: another one's same key is an order of its own.
    other = await client.post(SMS_ROUTE, json=sms_body("otp-1"), headers=auth("digdir"))
    assert other.status_code == 201, other.text
    assert other.json()["notificationOrderId"] != first.json()["notificationOrderId"]
    assert len(sent_sms(settings)) == 2


async def test_the_shipment_reads_as_instant_through_v2_the_location_and_v1(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    response = await client.post(SMS_ROUTE, json=sms_body(), headers=auth())
    assert response.status_code == 201, response.text
    shipment_id = response.json()["notification"]["shipmentId"]

    manifest = await client.get(f"{SHIPMENT}/{shipment_id}", headers=auth())
    assert manifest.status_code == 200, manifest.text
    shown = manifest.json()
    assert (shown["shipmentId"], shown["type"], shown["sendersReference"]) == (shipment_id, "Instant", "login-1")
    assert [recipient["destination"] for recipient in shown["recipients"]] == [NUMBER]
    located = await client.get(response.headers["location"].removeprefix("http://varsel.test"), headers=auth())
    assert located.status_code == 200, located.text
    assert located.json()["notification"]["shipmentId"] == shipment_id
    assert located.json()["notification"]["manifest"]["type"] == "Instant"
    v1 = await client.get(f"{V1}/{shipment_id}", headers=auth())
    assert v1.status_code == 200, v1.text
    assert v1.json()["sendersReference"] == "login-1"
    v1_sms = await client.get(f"{V1}/{shipment_id}/notifications/sms", headers=auth())
    assert [n["recipient"]["mobileNumber"] for n in v1_sms.json()["notifications"]] == [NUMBER]
    # The outbox reports it delivered at once: the order completes, and the feed shows it with its type.
    feed = await client.get(f"{SHIPMENT}/feed", headers=auth())
    assert [(e["shipmentId"], e["shipmentType"], e["status"]) for e in feed.json()] == [
        (shipment_id, "Instant", "Order_Completed")
    ]
    # Another service owner sees none of it.
    assert (await client.get(f"{SHIPMENT}/{shipment_id}", headers=auth("digdir"))).status_code == 404


async def test_the_deprecated_route_sends_the_same_sms(
    client: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    body = {"idempotencyId": "otp-old", "recipient": {"recipientSms": sms_body(ttl=120)["recipientSms"]}}

    response = await client.post(INSTANT, json=body, headers=auth())

    assert response.status_code == 201, response.text
    assert set(response.json()["notification"]) == {"shipmentId"}  # no sendersReference: omitted, not null
    [message] = sent_sms(settings)
    assert (message["to"], message["body"]) == (NUMBER, CODE)
    assert message["expiry"] == (NOW + timedelta(seconds=120)).isoformat()


async def test_an_instant_email_is_sent_before_the_answer(
    client: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    response = await client.post(EMAIL_ROUTE, json=email_body(senderEmailAddress="post@sender.example"),
                                 headers=auth())  # fmt: skip

    assert response.status_code == 201, response.text
    assert response.json()["notification"]["sendersReference"] == "case-1"
    [eml] = sent_email(settings)
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert (message["To"], message["From"], message["Subject"]) == (
        "ola@example.com", "post@sender.example", "Your document is ready")  # fmt: skip
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "Log in to read it."
    assert sent_sms(settings) == []


async def test_line_breaks_in_an_instant_subject_never_make_a_header_of_their_own(
    client: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    # Stored as given (the reference does not fold an instant subject), sent as one header line.
    subject = "Your document\r\nBcc: everyone@example.com\nX-Injected: yes\rend"

    response = await client.post(EMAIL_ROUTE, json=email_body(subject=subject), headers=auth())

    assert response.status_code == 201, response.text
    [eml] = sent_email(settings)
    raw = eml.read_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head
    assert b"\r\nX-Injected:" not in head
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_all("Subject") == ["Your document Bcc: everyone@example.com X-Injected: yes end"]
    assert message["Bcc"] is None
    assert message["X-Injected"] is None


async def test_pascal_case_names_enums_by_number_or_name_and_numbers_in_strings_are_accepted(
    client: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    pascal_sms = {"IdempotencyId": "otp-pascal", "RecipientSms": {"PhoneNumber": "004799999999",
                                                                  "TimeToLiveInSeconds": "3600",
                                                                  "SmsSettings": {"Sender": "Bank", "Body": CODE}},
                  "associationDialogporten": {"ignored": True}}  # fmt: skip
    response = await client.post(SMS_ROUTE, json=pascal_sms, headers=auth())
    assert response.status_code == 201, response.text
    [message] = sent_sms(settings)
    assert (message["to"], message["from"]) == (NUMBER, "Bank")  # 00 read as +, as everywhere in varsel
    assert message["expiry"] == (NOW + timedelta(seconds=3600)).isoformat()

    for key, content_type, expected in (("html-by-number", 1, "text/html"), ("html-by-name", "HTML", "text/html"),
                                        ("plain-by-number", 0, "text/plain")):  # fmt: skip
        body = email_body(key, contentType=content_type)
        pascal = {"IdempotencyId": body["idempotencyId"], "RecipientEmail": {
            "EmailAddress": "ola@example.com", "EmailSettings": body["recipientEmail"]["emailSettings"]}}  # fmt: skip
        before = set(sent_email(settings))
        response = await client.post(EMAIL_ROUTE, json=pascal, headers=auth())
        assert response.status_code == 201, response.text
        [eml] = set(sent_email(settings)) - before
        parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert parsed.get_content_type() == expected


@pytest.mark.parametrize("route", [SMS_ROUTE, EMAIL_ROUTE, INSTANT])
async def test_a_platform_access_token_may_order(
    client: httpx.AsyncClient, token: Any, route: str, settings: Settings
) -> None:
    body: dict[str, Any] = sms_body("platform") if route == SMS_ROUTE else email_body("platform")
    if route == INSTANT:
        body = {"idempotencyId": "platform", "recipient": {"recipientSms": sms_body()["recipientSms"]}}
    response = await client.post(route, json=body, headers={"PlatformAccessToken": token("ttd", platform=True)})
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------- hostile bodies (as test_hostile_bodies.py's)

HOSTILE = [
    (b"[" * 100_000, 400),
    (b'{"idempotencyId": "x", "recipientSms": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", 400),
    (b"\xff\xfe{}", 400),
    (b'{"idempotencyId": "x", "sendersReference": "hostile", "n": ' + b"1" * 5_000 + b"}", 400),
    (b'{"idempotencyId": "x", "recipientSms": {"timeToLiveInSeconds": 1e999999}}', 400),
    (b'{"idempotencyId": "\\ud800", "sendersReference": "hostile"}', 400),
    (b"", 400),
    (b"null", 400),
    (b'"a string"', 400),
    (json.dumps({"idempotencyId": "x", "recipient": "someone", "recipientEmail": [1]}).encode(), 400),
    (b"x" * (3 * 1024 * 1024), 413),
]
HOSTILE_IDS = ["100000-brackets", "deep-recipient", "bad-utf8", "5000-digits", "huge-float", "lone-surrogate",
               "empty", "null", "string", "wrong-shapes", "3-MiB"]  # fmt: skip


async def _nothing_sent(client: httpx.AsyncClient, auth: Auth, settings: Settings) -> None:
    listed = await client.get(f"{V1}", params={"sendersReference": "hostile"}, headers=auth())
    assert listed.json()["count"] == 0
    assert sent_sms(settings) == []
    assert sent_email(settings) == []


@pytest.mark.parametrize("route", [SMS_ROUTE, EMAIL_ROUTE, INSTANT])
@pytest.mark.parametrize(("raw", "status"), HOSTILE, ids=HOSTILE_IDS)
async def test_a_hostile_body_is_a_problem_and_nothing_is_sent(
    client: httpx.AsyncClient, auth: Auth, settings: Settings, route: str, raw: bytes, status: int
) -> None:
    answer = await client.post(route, content=raw, headers={**auth(), "Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    await _nothing_sent(client, auth, settings)


@pytest.mark.parametrize("text", ["\x00", "a\x00b"])
async def test_nul_in_any_string_is_refused(
    client: httpx.AsyncClient, auth: Auth, settings: Settings, text: str
) -> None:
    # PostgreSQL cannot store NUL: refused with the field, never a 500 at the database.
    bodies: list[tuple[str, dict[str, Any]]] = [
        (SMS_ROUTE, sms_body(text, reference="hostile")),
        (SMS_ROUTE, {**sms_body(reference="hostile"), "recipientSms": {**sms_body()["recipientSms"],
                                                                       "phoneNumber": text}}),
        (SMS_ROUTE, {**sms_body(reference="hostile"), "recipientSms": {**sms_body()["recipientSms"],
                                                                       "smsSettings": {"body": text}}}),
        (EMAIL_ROUTE, {**email_body(subject=text), "sendersReference": "hostile"}),
        (EMAIL_ROUTE, {**email_body(senderEmailAddress=f"a{text}@example.com"), "sendersReference": "hostile"}),
        (EMAIL_ROUTE, {**email_body(), "sendersReference": f"hostile{text}"}),
    ]  # fmt: skip
    for route, body in bodies:
        answer = await client.post(route, json=body, headers=auth())
        assert answer.status_code == 400, (route, body, answer.text)
    await _nothing_sent(client, auth, settings)


# ---------------------------------------------------------------- the provider unavailable (503 NOT-00004)


async def test_an_unavailable_provider_answers_503_not_00004_with_retry_after_and_the_key_stays_retryable(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    async with instant_pipeline(settings, database, clock) as (varsel, peer):
        transport = httpx.ASGITransport(app=create_app(varsel))
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            peer.rate_limit(60, times=1)  # the gateway asks for a pause of a minute

            refused = await client.post(SMS_ROUTE, json=sms_body("otp-busy"), headers=auth())

            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "60"
            problem = refused.json()
            assert problem == {
                "type": "urn:altinn:error:NOT-00004",
                "title": "A temporary network failure occurred",
                "status": 503,
                "code": "NOT-00004",
                "traceId": problem["traceId"],
                "statusDescription": "Service Unavailable",
            }
            assert problem["traceId"]
            assert peer.messages == []

            clock.advance(timedelta(seconds=61))
            retried = await client.post(SMS_ROUTE, json=sms_body("otp-busy"), headers=auth())
            assert retried.status_code == 201, retried.text
            assert retried.headers["location"].endswith(retried.json()["notificationOrderId"])
            again = await client.post(EMAIL_ROUTE, json=email_body("otp-busy"), headers=auth())
            assert again.status_code == 200, again.text
            assert again.json() == retried.json()
            assert len(peer.messages) == 1
