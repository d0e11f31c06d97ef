"""The preview warns of a keyword that would render empty (#20, item 7): `$recipientName$` for a recipient given by
address has no name to show ("Hei , …"), and the sender should see that before the order is placed. The answer's
shape only grows: `warnings` is absent when there is nothing to say."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.recipients.registry_data import load
from varsel.app import Varsel

PREVIEW = "/notifications/api/v1/orders/preview"
SAMPLE = Path(__file__).parent.parent / "samples" / "registry.jsonl"
PREVIEW_SCOPES = ["altinn:serviceowner/notifications.create", "varsel:notifications.preview"]
Auth = Callable[..., dict[str, str]]
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def sample_registry(varsel: Varsel) -> None:
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    summary = await load(varsel.database, varsel.clock, records)
    assert summary.rejected == []


def _email_order(subject: str, body: str, recipients: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "notificationChannel": "Email",
        "emailTemplate": {"subject": subject, "body": body},
        "recipients": recipients,
        "resourceId": "app_ttd_apps-test",
    }


async def _preview(client: httpx.AsyncClient, auth: Auth, order: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(PREVIEW, json=order, headers=auth(scopes=PREVIEW_SCOPES))
    assert answer.status_code == 200, answer.text
    preview: dict[str, Any] = answer.json()
    return preview


@SQLITE
async def test_a_name_keyword_for_a_recipient_given_by_address_is_warned_of(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    order = _email_order(
        "Til $recipientName$", "Hei $recipientName$, saken din er klar.", [{"emailAddress": "ola@example.com"}]
    )
    preview = await _preview(client, auth, order)
    [notification] = preview["recipients"][0]["notifications"]
    assert notification["body"] == "Hei , saken din er klar."  # what the warning is about
    warnings = preview["warnings"]
    assert [(w["field"], w["keyword"], w["recipients"]) for w in warnings] == [
        ("EmailTemplate.Subject", "$recipientName$", [0]),
        ("EmailTemplate.Body", "$recipientName$", [0]),
    ]
    message = warnings[1]["message"]
    assert message.startswith("$recipientName$ in EmailTemplate.Body renders empty for 1 of the 1 recipients")
    assert "Recipients[0]" in message
    assert "given by email address or mobile number has none" in message


@SQLITE
@pytest.mark.usefixtures("sample_registry")
async def test_only_the_recipients_without_a_name_are_named(client: httpx.AsyncClient, auth: Auth) -> None:
    order = {
        "notificationChannel": "Sms",
        "smsTemplate": {"body": "Hei $recipientName$ ($recipientNumber$)"},
        "recipients": [{"organizationNumber": "311000179"}, {"mobileNumber": "+4799999999"}],
        "resourceId": "app_ttd_apps-test",
    }
    preview = await _preview(client, auth, order)
    first, second = preview["recipients"]
    assert first["name"] == "Testbedrift AS"
    assert second["notifications"][0]["body"] == "Hei  ()"
    assert [(w["field"], w["keyword"], w["recipients"]) for w in preview["warnings"]] == [
        ("SmsTemplate.Body", "$recipientName$", [1]),
        ("SmsTemplate.Body", "$recipientNumber$", [1]),
    ]
    assert "1 of the 2 recipients" in preview["warnings"][0]["message"]
    assert "only an organisation recipient has a number" in preview["warnings"][1]["message"]


@SQLITE
@pytest.mark.usefixtures("sample_registry")
async def test_no_warnings_member_when_every_keyword_has_a_value(client: httpx.AsyncClient, auth: Auth) -> None:
    with_keywords = _email_order("Til $recipientName$", "Org $recipientNumber$", [{"organizationNumber": "311000179"}])
    without = _email_order("Hei", "Saken din er klar.", [{"emailAddress": "ola@example.com"}])
    for order in (with_keywords, without):
        preview = await _preview(client, auth, order)
        assert preview["recipients"][0]["notifications"], preview
        assert "warnings" not in preview


@SQLITE
async def test_a_template_the_recipients_do_not_get_is_not_warned_of(client: httpx.AsyncClient, auth: Auth) -> None:
    # EmailPreferred to an email address: the SMS template, name and all, is never sent.
    order = {
        "notificationChannel": "EmailPreferred",
        "emailTemplate": {"subject": "Hei", "body": "Saken din er klar."},
        "smsTemplate": {"body": "Hei $recipientName$"},
        "recipients": [{"emailAddress": "ola@example.com"}],
    }
    preview = await _preview(client, auth, order)
    assert "warnings" not in preview


@SQLITE
async def test_the_warnings_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert "warnings" in schemas["OrderPreview"]["properties"]
    assert set(schemas["PreviewWarning"]["properties"]) == {"field", "keyword", "recipients", "message"}
