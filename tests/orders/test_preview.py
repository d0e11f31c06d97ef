"""POST /orders/preview: who would receive what, and why others would not, with nothing stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.recipients.registry_data import load
from varsel.app import Varsel

V1 = "/notifications/api/v1"
SAMPLE = Path(__file__).parent.parent.parent / "samples" / "registry.jsonl"
PREVIEW_SCOPES = ["altinn:serviceowner/notifications.create", "varsel:notifications.preview"]
Auth = Callable[..., dict[str, str]]

# Spec 003's keyword example.
KEYWORDS_EXAMPLE: dict[str, Any] = {
    "sendersReference": "586B753D-9A02-49C8-AC22-2060E3A7862F",
    "emailTemplate": {
        "subject": "Important notification regarding your organization, $recipientName$",
        "body": "Dear $recipientName$, this is an official notification regarding your organization, identified by "
        "the organization number $recipientNumber$. Please take the necessary actions.",
        "content-type": "Plain",
    },
    "smsTemplate": {
        "body": "Dear $recipientName$, this is an official notification regarding your organization, identified by "
        "the organization number $recipientNumber$. Please take the necessary actions."
    },
    "notificationChannel": "smsPreferred",
    "recipients": [{"organizationNumber": "311000179"}, {"organizationNumber": "312508729"}],
    "resourceId": "app_ttd_apps-test",
}


@pytest.fixture
async def sample_registry(varsel: Varsel) -> None:
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    summary = await load(varsel.database, varsel.clock, records)
    assert summary.rejected == []


@pytest.mark.usefixtures("sample_registry")
async def test_keyword_example_previews_rendered_sms_per_address(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.post(f"{V1}/orders/preview", json=KEYWORDS_EXAMPLE, headers=auth(scopes=PREVIEW_SCOPES))
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["notificationChannel"] == "SmsPreferred"
    assert preview["recipientLookup"] == {"status": "Success", "isReserved": [], "missingContact": []}
    first, second = preview["recipients"]
    assert first["outcome"] == "Found"
    assert first["name"] == "Testbedrift AS"
    # The official mobile (the organisation has one, so its emails are not used), then each authorised user's own
    # preferred address: 20001's mobile, and 20002's email, as 20002 has no mobile. De-duplication is against
    # the addresses actually chosen: no address gets the notification twice.
    assert [(n["channel"], n["address"], n.get("userId")) for n in first["notifications"]] == [
        ("Sms", "+4790002001", None),
        ("Sms", "+4790002002", "20001"),
        ("Email", "POST@testbedrift.example.com", "20002"),
    ]
    sms = first["notifications"][0]
    assert sms["body"] == (
        "Dear Testbedrift AS, this is an official notification regarding your organization, identified by the "
        "organization number 311000179. Please take the necessary actions."
    )
    assert "subject" not in sms
    email = first["notifications"][2]
    assert email["subject"] == "Important notification regarding your organization, Testbedrift AS"
    unreached = {(u["reason"], u.get("userId")) for u in first["unreached"]}
    assert ("NotAuthorised", "20003") in unreached

    assert [(n["channel"], n["address"]) for n in second["notifications"]] == [
        ("Sms", "+4790003001"),
        ("Sms", "+4790003002"),
        ("Sms", "+4790003003"),
    ]

    # Nothing was stored.
    stored = await client.get(f"{V1}/orders", params={"sendersReference": KEYWORDS_EXAMPLE["sendersReference"]},
                              headers=auth())  # fmt: skip
    assert stored.json()["count"] == 0


@pytest.mark.usefixtures("sample_registry")
async def test_unreached_recipients_say_why(client: httpx.AsyncClient, auth: Auth) -> None:
    body = {
        "notificationChannel": "Email",
        "emailTemplate": {"subject": "S", "body": "B"},
        "recipients": [
            {"nationalIdentityNumber": "11876995923"},
            {"nationalIdentityNumber": "14029112345"},
            {"nationalIdentityNumber": "99999999999"},
            {"organizationNumber": "312508729"},
            {"emailAddress": "direct@example.com"},
        ],
    }
    preview = (await client.post(f"{V1}/orders/preview", json=body, headers=auth(scopes=PREVIEW_SCOPES))).json()
    outcomes = [(r["outcome"], [u["reason"] for u in r["unreached"]]) for r in preview["recipients"]]
    assert outcomes == [
        ("Reserved", ["Reserved"]),
        ("MissingContact", ["NoContact"]),
        ("MissingContact", ["NotFound"]),
        ("MissingContact", ["NoContact"]),
        ("Addressed", []),
    ]
    assert preview["recipients"][4]["notifications"] == [
        {"channel": "Email", "address": "direct@example.com", "subject": "S", "body": "B"}
    ]
    assert preview["recipientLookup"] == {
        "status": "Failed",
        "isReserved": ["11876995923"],
        "missingContact": ["14029112345", "99999999999", "312508729"],
    }


@pytest.mark.usefixtures("sample_registry")
async def test_html_bodies_escape_the_name(client: httpx.AsyncClient, auth: Auth) -> None:
    body = {
        "notificationChannel": "Email",
        "emailTemplate": {"subject": "To $recipientName$", "body": "<p>$recipientName$</p>", "contentType": "Html"},
        "recipients": [{"organizationNumber": "313441571"}],
    }
    preview = (await client.post(f"{V1}/orders/preview", json=body, headers=auth(scopes=PREVIEW_SCOPES))).json()
    notification = preview["recipients"][0]["notifications"][0]
    assert notification["subject"] == "To Epost & Co"
    assert notification["body"] == "<p>Epost &amp; Co</p>"


async def test_preview_validates_like_create(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.post(f"{V1}/orders/preview", json={"recipients": []}, headers=auth(scopes=PREVIEW_SCOPES))
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"NotificationChannel", "Recipients"}
    unauthenticated = await client.post(f"{V1}/orders/preview", json=KEYWORDS_EXAMPLE)
    assert unauthenticated.status_code == 401
    # A sender's token is not enough: the preview shows registry contact details.
    sender_only = await client.post(f"{V1}/orders/preview", json=KEYWORDS_EXAMPLE, headers=auth())
    assert sender_only.status_code == 403
    assert "varsel:notifications.preview" in sender_only.json()["detail"]
