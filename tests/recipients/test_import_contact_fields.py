"""Contact points (email addresses and mobile numbers) in registry imports and pushes: stored as the registry gives
them, but never with control or format characters, which would otherwise survive the lookup's normalisation into
storage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.recipients.registry_data import load
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import registry_organizations, registry_persons, registry_user_contacts

NIN = "11876995923"
ORG = "311000179"
PERSON = {"kind": "person", "nationalIdentityNumber": NIN}
ORGANIZATION = {"kind": "organization", "organizationNumber": ORG}
USER = {"kind": "userContact", "userId": "u1", "organizationNumber": ORG}

# C0 (line breaks, tab, ESC), DEL, C1 (NEL), format characters (right-to-left override, zero-width space) and the
# Unicode line separator: none is ever part of an address (the order intake refuses each inside one).
CONTROL = ["\r\n", "\n", "\t", "\x1b", "\x7f", "\x85", "\u202e", "\u200b", "\u2028"]


def _bad_records(control: str) -> list[tuple[dict[str, Any], str]]:
    """Records with a control character in one contact field, and the field the rejection must name."""
    return [
        ({**PERSON, "emailAddress": f"ola@example.com{control}"}, "emailAddress"),
        ({**PERSON, "mobileNumber": f"+47{control}98765432"}, "mobileNumber"),
        ({**ORGANIZATION, "emailAddresses": ["post@example.com", f"x{control}@example.com"]}, "emailAddresses.1"),
        ({**ORGANIZATION, "mobileNumbers": [f"{control}90002001"]}, "mobileNumbers.0"),
        ({**USER, "emailAddress": f"{control}ola@example.com"}, "emailAddress"),
        ({**USER, "mobileNumber": f"9000{control}2002"}, "mobileNumber"),
    ]


@pytest.mark.parametrize("control", CONTROL, ids=[repr(c) for c in CONTROL])
async def test_control_characters_in_contact_fields_are_rejected_naming_the_field(
    database: Database, clock: FrozenClock, control: str
) -> None:
    bad = _bad_records(control)
    summary = await load(database, clock, [record for record, _ in bad])
    assert [number for number, _ in summary.rejected] == list(range(1, len(bad) + 1))
    for (number, reason), (_, field) in zip(summary.rejected, bad, strict=True):
        assert reason == f"{field}: Value error, must not contain control or formatting characters", (number, reason)
    assert (summary.inserted, summary.updated) == (0, 0)
    async with database.read() as conn:
        for table in (registry_persons, registry_organizations, registry_user_contacts):
            assert (await conn.execute(select(table))).all() == []


async def test_contact_fields_are_still_stored_as_the_registry_gives_them(
    database: Database, clock: FrozenClock
) -> None:
    # Spaces, 00 prefixes, 8 Norwegian digits and even numbers the lookup will skip are the registry's business
    # (the README: stored as given, normalised and skipped at lookup): only control characters are refused.
    summary = await load(
        database,
        clock,
        [
            {**PERSON, "emailAddress": " Ola@Example.com ", "mobileNumber": "12345"},
            {**ORGANIZATION, "emailAddresses": ["post@example.com"], "mobileNumbers": ["0047 900 02 001", "98765432"]},
            {**USER, "emailAddress": "ola@example.com", "mobileNumber": "+47 900-02-002"},
        ],
    )
    assert summary.rejected == []
    assert summary.inserted == 3
    async with database.read() as conn:
        person = (await conn.execute(select(registry_persons))).one()
        organization = (await conn.execute(select(registry_organizations))).one()
    assert (person.email_address, person.mobile_number) == (" Ola@Example.com ", "12345")
    assert list(organization.mobile_numbers) == ["0047 900 02 001", "98765432"]


async def test_a_push_with_control_characters_in_contact_fields_is_rejected_per_record(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    bad = _bad_records("\r\n")
    good = {**PERSON, "emailAddress": "ola@example.com", "mobileNumber": "98765432"}
    pushed = await client.post(
        "/notifications/api/v1/registry/records",
        json=[record for record, _ in bad] + [good],
        headers=auth(scopes=["varsel:registry.write"]),
    )
    assert pushed.status_code == 200, pushed.text
    result = pushed.json()
    assert result["inserted"] == 1
    reason = "Value error, must not contain control or formatting characters"
    expected = [(index, f"{field}: {reason}") for index, (_, field) in enumerate(bad)]
    assert [(r["index"], r["reason"]) for r in result["rejected"]] == expected
