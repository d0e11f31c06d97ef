"""Requests and registry records for the v2 order API tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx

Auth = Callable[..., dict[str, str]]

ORDERS = "/notifications/api/v1/future/orders"
CHAIN = "/notifications/api/v1/orders/chain"
V1 = "/notifications/api/v1/orders"

EMAIL_SETTINGS = {"subject": "Your case", "body": "Hello $recipientName$"}
SMS_SETTINGS = {"body": "Your case has news"}


def email_recipient(address: str = "ola@example.com", **settings: Any) -> dict[str, Any]:
    return {"recipientEmail": {"emailAddress": address, "emailSettings": {**EMAIL_SETTINGS, **settings}}}


def sms_recipient(number: str = "+4799999999", **settings: Any) -> dict[str, Any]:
    return {"recipientSms": {"phoneNumber": number, "smsSettings": {**SMS_SETTINGS, **settings}}}


def person_recipient(nin: str = "01017012345", channel: Any = "EmailPreferred", **extra: Any) -> dict[str, Any]:
    return {
        "recipientPerson": {
            "nationalIdentityNumber": nin,
            "channelSchema": channel,
            "emailSettings": dict(EMAIL_SETTINGS),
            "smsSettings": dict(SMS_SETTINGS),
            **extra,
        }
    }


def org_recipient(number: str = "910000001", channel: Any = "Email", **extra: Any) -> dict[str, Any]:
    return {
        "recipientOrganization": {
            "orgNumber": number,
            "channelSchema": channel,
            "emailSettings": dict(EMAIL_SETTINGS),
            **extra,
        }
    }


def external_recipient(
    urn: str = "urn:altinn:person:idporten-email:kari@example.com", channel: Any = "Email"
) -> dict[str, Any]:
    return {"recipientExternalIdentity": {"externalIdentity": urn, "channelSchema": channel,
                                          "emailSettings": dict(EMAIL_SETTINGS)}}  # fmt: skip


def chain(idempotency_id: str = "key-1", recipient: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "idempotencyId": idempotency_id,
        "recipient": email_recipient() if recipient is None else recipient,
    }
    body.update(copy.deepcopy(extra))
    return body


async def post(client: httpx.AsyncClient, auth: Auth, body: Any, org: str = "ttd") -> httpx.Response:
    return await client.post(ORDERS, json=body, headers=auth(org))
