"""The registry as a v2 client meets it: POST /future/orders looks self-identified users up by any spelling of their
URN, takes an ID-porten email identity as its address, and counts a person's stale details as absent (422) unless
the order says useStaleContactInformation; the order worker looks up the same way when it sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.api_v2.helpers import chain, external_recipient, person_recipient, post
from tests.recipients.registry_data import load
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import email_notifications

Auth = Callable[..., dict[str, str]]

STALE = "01017012345"  # confirmed 2023, over 18 months before the tests' now (2026-03-02)
RECORDS: list[dict[str, Any]] = [
    {"kind": "person", "nationalIdentityNumber": STALE, "name": "Gunnar Gammel",
     "emailAddress": "gunnar@example.com", "contactConfirmed": "2023-05-02T09:30:00+02:00"},
    {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:sigrid", "name": "Sigrid",
     "emailAddress": "sigrid@example.com"},
]  # fmt: skip


async def _sent(varsel: Varsel) -> list[tuple[str, str | None, str | None, str | None]]:
    await varsel.workers.processor.run_once()
    async with varsel.database.read() as conn:
        rows = await conn.execute(
            select(
                email_notifications.c.status,
                email_notifications.c.email_address,
                email_notifications.c.external_identity,
                email_notifications.c.recipient_name,
            ).order_by(email_notifications.c.email_address)
        )
        return [(r.status, r.email_address, r.external_identity, r.recipient_name) for r in rows]


async def test_external_identities_through_the_v2_api(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    assert (await load(varsel.database, clock, RECORDS)).rejected == []
    urns = [
        "urn:altinn:person:legacy-selfidentified:sigrid",
        "urn:altinn:party:username:sigrid",
        "urn:altinn:person:idporten-email:kari%40example.com",
    ]
    for number, urn in enumerate(urns):
        response = await post(client, auth, chain(f"k{number}", external_recipient(urn)))
        assert response.status_code == 201, response.text
    # Unknown users and an identity with no address on the channel are missing.
    by_sms = external_recipient("urn:altinn:person:idporten-email:kari@example.com", channel="Sms")
    by_sms["recipientExternalIdentity"]["smsSettings"] = {"body": "Hei"}
    missing = [external_recipient("urn:altinn:username:nobody"), by_sms]
    for number, recipient in enumerate(missing):
        response = await post(client, auth, chain(f"m{number}", recipient))
        assert response.status_code == 422, (recipient, response.text)
    assert await _sent(varsel) == [
        ("New", "kari@example.com", urns[2], None),
        ("New", "sigrid@example.com", urns[0], "Sigrid"),
        ("New", "sigrid@example.com", urns[1], "Sigrid"),
    ]


async def test_stale_details_through_the_v2_api(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    assert (await load(varsel.database, clock, RECORDS)).rejected == []
    refused = await post(client, auth, chain("strict", person_recipient(STALE, channel="Email")))
    assert refused.status_code == 422
    assert refused.json()["code"] == "NOT-00001"
    allowed = await post(
        client, auth, chain("stale-ok", person_recipient(STALE, channel="Email", useStaleContactInformation=True))
    )
    assert allowed.status_code == 201, allowed.text
    # The worker looks the person up again, with the order's own rule.
    assert await _sent(varsel) == [("New", "gunnar@example.com", None, "Gunnar Gammel")]


@pytest.mark.parametrize("org", ["skd", "SKD"])
async def test_skd_s_person_recipients_are_looked_up_with_stale_details_allowed(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, org: str
) -> None:
    # The reference forces useStaleContactInformation for skd (reference 1.3, step 6); another org gets the 422.
    assert (await load(varsel.database, clock, RECORDS)).rejected == []
    other = await post(client, auth, chain("k", person_recipient(STALE, channel="Email")), org="digdir")
    assert other.status_code == 422
    forced = await post(client, auth, chain("k", person_recipient(STALE, channel="Email")), org=org)
    assert forced.status_code == 201, forced.text
    assert await _sent(varsel) == [("New", "gunnar@example.com", None, "Gunnar Gammel")]
