"""Requests for the composed email tests (POST /future/orders/composed-email)."""

from __future__ import annotations

import copy
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import select

from tests.api_v2.helpers import Auth
from varsel.app import Varsel
from varsel.db.tables import orders

COMPOSED = "/notifications/api/v1/future/orders/composed-email"
COMPOSED_SCOPE = "altinn:serviceowner/notifications.composedemail.create"
ACCOUNT = "caseletters.blob.core.windows.net"
# A day after the tests' NOW (2026-03-02T10:00Z).
EXPIRY = "2026-03-03T10:00:00Z"
OMIT: Any = object()  # a member left out of the JSON (None is sent as null)

_SETTINGS = ("senderEmailAddress", "subject", "body", "contentType", "sendingTimePolicy", "attachments")

__all__ = ["ACCOUNT", "COMPOSED", "COMPOSED_SCOPE", "OMIT", "Auth", "attachment", "composed", "post_composed",
           "sas_url", "stored_attachments"]  # fmt: skip


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not OMIT}


def sas_url(
    host: str = ACCOUNT,
    path: str = "/letters/contract.pdf",
    *,
    se: Any = EXPIRY,
    sp: Any = "r",
    sr: Any = "b",
    sig: Any = "c2lnbmF0dXJl",
) -> str:
    """A blob SAS URL; a parameter given as OMIT is left out. Values are written as given (encode them yourself)."""
    parameters = _present({"sv": "2024-11-04", "se": se, "sr": sr, "sp": sp, "sig": sig})
    return f"https://{host}{path}?" + "&".join(f"{name}={value}" for name, value in parameters.items())


def attachment(**fields: Any) -> dict[str, Any]:
    item = {"filename": "contract.pdf", "mimeType": "application/pdf", "sasUrl": sas_url()}
    item.update(fields)
    return _present(item)


def composed(idempotency_id: str = "composed-1", *, address: Any = "ola@example.com", **members: Any) -> dict[str, Any]:
    """A valid request with one attachment unless `members` say otherwise: email settings' members (subject, body,
    attachments, ...) go into emailSettings, the others at the top level; OMIT leaves one out."""
    settings: dict[str, Any] = {"subject": "Your decision", "body": "It is attached.", "attachments": [attachment()]}
    top: dict[str, Any] = {}
    for name, value in members.items():
        (settings if name in _SETTINGS else top)[name] = value
    body = {"idempotencyId": idempotency_id, "recipient": _present({"emailAddress": address,
                                                                    "emailSettings": _present(settings)})}  # fmt: skip
    body.update(top)
    return _present(copy.deepcopy(body))


async def post_composed(
    client: httpx.AsyncClient, auth: Auth, body: Any, org: str = "ttd", scopes: list[str] | None = None
) -> httpx.Response:
    headers = auth(org, scopes=[COMPOSED_SCOPE] if scopes is None else scopes)
    return await client.post(COMPOSED, json=body, headers=headers)


async def stored_attachments(varsel: Varsel, order_id: str) -> list[dict[str, str]]:
    """The attachments column of the order, as stored."""
    async with varsel.database.read() as conn:
        value = (await conn.execute(select(orders.c.attachments).where(orders.c.id == UUID(order_id)))).scalar_one()
    return list(value or [])
