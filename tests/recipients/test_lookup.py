"""The look-up rules against the local registry on both databases, with registry data built in each test."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from tests.recipients.registry_data import load
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.orders.drafts import RecipientSpec
from varsel.orders.vocabulary import NotificationChannel as Ch
from varsel.orders.vocabulary import RecipientLookupStatus
from varsel.recipients.lookup import Address, Medium, Outcome, Reason, RecipientLookup
from varsel.recipients.registry import (
    ExternalIdentityContact,
    LocalRegistry,
    OrganizationContact,
    PersonContact,
    UserContactPoint,
)

RESERVED = "11876995923"
PLAIN = "16069412345"
EMAIL_ONLY = "14029112345"
UNKNOWN = "01010112345"
ORG_SMS_ONLY = "311000179"
ORG_BOTH = "312508729"
ORG_USERS = "810419652"
RESOURCE = "app_ttd_apps-test"

REGISTRY: list[dict[str, Any]] = [
    {"kind": "person", "nationalIdentityNumber": RESERVED, "name": "Reservert Person",
     "emailAddress": "reserved@example.com", "mobileNumber": "+4799999999", "isReserved": True},
    {"kind": "person", "nationalIdentityNumber": PLAIN, "name": "Ola Nordmann",
     "emailAddress": "ola@example.com", "mobileNumber": "98765432"},
    {"kind": "person", "nationalIdentityNumber": EMAIL_ONLY, "name": "Kari Nordmann",
     "emailAddress": "kari@example.com", "mobileNumber": "12345"},
    {"kind": "organization", "organizationNumber": ORG_SMS_ONLY, "name": "Kun SMS AS",
     "mobileNumbers": ["0047 41234567", "+4741234568"]},
    {"kind": "organization", "organizationNumber": ORG_BOTH, "name": "Begge & Co",
     "emailAddresses": ["Post@Begge.no", "faktura@begge.no"], "mobileNumbers": ["+4790000001"]},
    {"kind": "organization", "organizationNumber": ORG_USERS, "name": "Brukere AS",
     "emailAddresses": ["post@brukere.no"]},
    {"kind": "userContact", "userId": "u1", "organizationNumber": ORG_USERS, "emailAddress": "POST@brukere.no"},
    {"kind": "userContact", "userId": "u2", "organizationNumber": ORG_USERS, "emailAddress": "leder@brukere.no",
     "mobileNumber": "+4790000002"},
    {"kind": "userContact", "userId": "u3", "organizationNumber": ORG_USERS, "emailAddress": "ekstern@brukere.no"},
    {"kind": "userContact", "userId": "u4", "organizationNumber": ORG_USERS, "mobileNumber": "+4790000004"},
    {"kind": "authorization", "userId": "u1", "organizationNumber": ORG_USERS, "resourceId": RESOURCE,
     "actions": ["read"]},
    {"kind": "authorization", "userId": "u2", "organizationNumber": ORG_USERS, "resourceId": RESOURCE,
     "actions": ["read", "sign"]},
    {"kind": "authorization", "userId": "u3", "organizationNumber": ORG_USERS, "resourceId": "another_resource",
     "actions": ["read"]},
    {"kind": "authorization", "userId": "u4", "organizationNumber": ORG_USERS, "resourceId": RESOURCE,
     "actions": ["read"]},
]  # fmt: skip


class CountingRegistry:
    """The real local registry, counting the round trips the look-up makes."""

    def __init__(self, database: Database, clock: FrozenClock) -> None:
        self.inner = LocalRegistry(database)
        self.clock = clock  # the look-up's clock, kept here for the tests' convenience
        self.calls: list[tuple[str, int]] = []

    async def persons(self, numbers: Collection[str]) -> dict[str, PersonContact]:
        self.calls.append(("persons", len(numbers)))
        return await self.inner.persons(numbers)

    async def organizations(self, numbers: Collection[str]) -> dict[str, OrganizationContact]:
        self.calls.append(("organizations", len(numbers)))
        return await self.inner.organizations(numbers)

    async def user_contacts(self, numbers: Collection[str], resource_id: str) -> dict[str, list[UserContactPoint]]:
        self.calls.append(("user_contacts", len(numbers)))
        return await self.inner.user_contacts(numbers, resource_id)

    async def external_identities(self, identities: Collection[str]) -> dict[str, ExternalIdentityContact]:
        self.calls.append(("external_identities", len(identities)))
        return await self.inner.external_identities(identities)


@pytest.fixture
async def registry(database: Database, clock: FrozenClock) -> CountingRegistry:
    summary = await load(database, clock, REGISTRY)
    assert summary.rejected == []
    return CountingRegistry(database, clock)


def person(number: str) -> RecipientSpec:
    return RecipientSpec(national_identity_number=number)


def org(number: str) -> RecipientSpec:
    return RecipientSpec(organization_number=number)


def addresses(result: Any) -> list[tuple[str, str]]:
    return [(a.medium.value, a.address) for a in result.addresses]


async def test_reserved_person_gets_nothing_unless_the_order_ignores_reservation(registry: CountingRegistry) -> None:
    lookup = RecipientLookup(registry, registry.clock)
    refused = (await lookup.resolve([person(RESERVED)], Ch.EMAIL)).recipients[0]
    assert refused.outcome is Outcome.RESERVED
    assert refused.addresses == ()
    assert refused.unreached[0].reason is Reason.RESERVED
    allowed = (await lookup.resolve([person(RESERVED)], Ch.EMAIL, ignore_reservation=True)).recipients[0]
    assert allowed.outcome is Outcome.FOUND
    assert addresses(allowed) == [("email", "reserved@example.com")]
    assert allowed.name == "Reservert Person"


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        (Ch.EMAIL, [("email", "ola@example.com")]),
        (Ch.SMS, [("sms", "+4798765432")]),  # the registry's 8 digits become +47…
        (Ch.EMAIL_PREFERRED, [("email", "ola@example.com")]),
        (Ch.SMS_PREFERRED, [("sms", "+4798765432")]),
        (Ch.EMAIL_AND_SMS, [("email", "ola@example.com"), ("sms", "+4798765432")]),
    ],
)
async def test_person_addresses_by_channel(
    registry: CountingRegistry, channel: Ch, expected: list[tuple[str, str]]
) -> None:
    resolved = (await RecipientLookup(registry, registry.clock).resolve([person(PLAIN)], channel)).recipients[0]
    assert resolved.outcome is Outcome.FOUND
    assert addresses(resolved) == expected
    assert resolved.number is None


async def test_invalid_registry_mobile_is_dropped_and_preferred_falls_back(registry: CountingRegistry) -> None:
    lookup = RecipientLookup(registry, registry.clock)
    sms = (await lookup.resolve([person(EMAIL_ONLY)], Ch.SMS)).recipients[0]
    assert sms.outcome is Outcome.MISSING_CONTACT
    assert {u.reason for u in sms.unreached} == {Reason.INVALID_ADDRESS, Reason.NO_CONTACT}
    preferred = (await lookup.resolve([person(EMAIL_ONLY)], Ch.SMS_PREFERRED)).recipients[0]
    assert addresses(preferred) == [("email", "kari@example.com")]


async def test_unknown_person_is_missing_contact(registry: CountingRegistry) -> None:
    resolved = (await RecipientLookup(registry, registry.clock).resolve([person(UNKNOWN)], Ch.EMAIL)).recipients[0]
    assert resolved.outcome is Outcome.MISSING_CONTACT
    assert resolved.unreached[0].reason is Reason.NOT_FOUND


async def test_organisation_with_only_sms_addresses_under_email_preferred(registry: CountingRegistry) -> None:
    resolved = (
        await RecipientLookup(registry, registry.clock).resolve([org(ORG_SMS_ONLY)], Ch.EMAIL_PREFERRED)
    ).recipients[0]
    assert resolved.outcome is Outcome.FOUND
    assert addresses(resolved) == [("sms", "+4741234567"), ("sms", "+4741234568")]
    assert (resolved.name, resolved.number) == ("Kun SMS AS", ORG_SMS_ONLY)
    only_email = (await RecipientLookup(registry, registry.clock).resolve([org(ORG_SMS_ONLY)], Ch.EMAIL)).recipients[0]
    assert only_email.outcome is Outcome.MISSING_CONTACT


async def test_organisation_every_address_of_the_kind_and_both_kinds(registry: CountingRegistry) -> None:
    lookup = RecipientLookup(registry, registry.clock)
    email = (await lookup.resolve([org(ORG_BOTH)], Ch.EMAIL)).recipients[0]
    assert addresses(email) == [("email", "Post@begge.no"), ("email", "faktura@begge.no")]
    both = (await lookup.resolve([org(ORG_BOTH)], Ch.EMAIL_AND_SMS)).recipients[0]
    assert [a for a, _ in addresses(both)] == ["email", "email", "sms"]


async def test_user_contact_points_only_with_a_resource_and_only_for_authorised_users(
    registry: CountingRegistry,
) -> None:
    lookup = RecipientLookup(registry, registry.clock)
    without = (await lookup.resolve([org(ORG_USERS)], Ch.EMAIL)).recipients[0]
    assert addresses(without) == [("email", "post@brukere.no")]
    assert ("user_contacts", 1) not in registry.calls

    read = (await lookup.resolve([org(ORG_USERS)], Ch.EMAIL, resource_id=RESOURCE)).recipients[0]
    # u1's copy of the official address is dropped (case-insensitively); u3 is authorised for another resource
    # only; u4 has no email.
    assert addresses(read) == [("email", "post@brukere.no"), ("email", "leder@brukere.no")]
    assert [a.user_id for a in read.addresses] == [None, "u2"]
    reasons = {(u.user_id, u.reason) for u in read.unreached}
    assert ("u1", Reason.DUPLICATE) in reasons
    assert ("u3", Reason.NOT_AUTHORISED) in reasons
    assert ("u4", Reason.NO_CONTACT) in reasons

    sign = await lookup.resolve([org(ORG_USERS)], Ch.EMAIL, resource_id=RESOURCE, resource_action="sign")
    assert addresses(sign.recipients[0]) == [("email", "post@brukere.no"), ("email", "leder@brukere.no")]
    assert {u.user_id for u in sign.recipients[0].unreached if u.reason is Reason.NOT_AUTHORISED} == {"u1", "u3", "u4"}

    # Each user separately under a Preferred channel: u4 has no email, so its mobile is used.
    preferred = (await lookup.resolve([org(ORG_USERS)], Ch.EMAIL_PREFERRED, resource_id=RESOURCE)).recipients[0]
    assert Address(Medium.SMS, "+4790000004", "u4") in preferred.addresses


async def test_a_resource_urn_finds_the_authorisations_of_its_bare_id(registry: CountingRegistry) -> None:
    # v2 requires resourceId as urn:altinn:resource:{id}; authorisations are kept by the bare id, as the reference
    # asks its authorisation service (#15).
    lookup = RecipientLookup(registry, registry.clock)
    urn = (await lookup.resolve([org(ORG_USERS)], Ch.EMAIL, resource_id=f"urn:altinn:resource:{RESOURCE}")).recipients
    assert addresses(urn[0]) == [("email", "post@brukere.no"), ("email", "leder@brukere.no")]


async def test_address_recipients_need_no_lookup(registry: CountingRegistry) -> None:
    recipient = RecipientSpec(email_address="a@example.com", mobile_number="+4790000000")
    result = await RecipientLookup(registry, registry.clock).resolve([recipient], Ch.SMS_PREFERRED)
    assert addresses(result.recipients[0]) == [("sms", "+4790000000")]
    assert result.summary() is None
    assert registry.calls == []


@pytest.mark.parametrize(
    ("recipients", "status", "reserved", "missing"),
    [
        ([person(PLAIN), org(ORG_BOTH)], RecipientLookupStatus.SUCCESS, [], []),
        ([org(ORG_SMS_ONLY), person(RESERVED)], RecipientLookupStatus.PARTIAL_SUCCESS, [RESERVED], []),
        ([person(RESERVED), person(UNKNOWN), org("999999999")], RecipientLookupStatus.FAILED, [RESERVED],
         [UNKNOWN, "999999999"]),
    ],
)  # fmt: skip
async def test_lookup_summary(
    registry: CountingRegistry,
    recipients: list[RecipientSpec],
    status: RecipientLookupStatus,
    reserved: list[str],
    missing: list[str],
) -> None:
    summary = (await RecipientLookup(registry, registry.clock).resolve(recipients, Ch.EMAIL_PREFERRED)).summary()
    assert summary is not None
    assert (summary.status, summary.is_reserved, summary.missing_contact) == (status, reserved, missing)


async def test_one_round_trip_per_registry_however_many_recipients(
    database: Database, clock: FrozenClock, registry: CountingRegistry
) -> None:
    users: list[dict[str, Any]] = []
    for i in range(3000):
        users.append({"kind": "userContact", "userId": f"big{i}", "organizationNumber": ORG_USERS,
                      "emailAddress": f"user{i}@brukere.no"})  # fmt: skip
        users.append({"kind": "authorization", "userId": f"big{i}", "organizationNumber": ORG_USERS,
                      "resourceId": RESOURCE, "actions": ["read"]})  # fmt: skip
    await load(database, clock, users)
    recipients = [person(PLAIN)] * 50 + [person(f"{n:011d}") for n in range(500)] + [org(ORG_USERS), org(ORG_BOTH)]
    result = await RecipientLookup(registry, registry.clock).resolve(recipients, Ch.EMAIL, resource_id=RESOURCE)
    assert registry.calls == [("persons", 550), ("organizations", 2), ("user_contacts", 2)]
    big = result.recipients[550]
    assert len(big.addresses) == 1 + 1 + 3000  # official, u2, and the 3000 users (u1 is a duplicate)
