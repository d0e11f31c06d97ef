"""A person's contact details last confirmed more than 18 months before now count as absent unless the order says
useStaleContactInformation; an unknown confirmation time counts as current. In the import and push format, in the
look-up, and at send time in the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select, update

from tests.conftest import NOW
from tests.recipients.registry_data import load
from tests.recipients.test_lookup import CountingRegistry
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, order_recipients, orders, registry_persons
from varsel.orders.drafts import OrderDraft, RecipientSpec
from varsel.orders.vocabulary import NotificationChannel as Ch
from varsel.recipients.lookup import Outcome, Reason, RecipientLookup, months_before
from varsel.recipients.registry import LocalRegistry

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]

# NOW is 2026-03-02 10:00 UTC: 18 months before it is 2024-09-02 10:00 UTC.
CUTOFF = datetime(2024, 9, 2, 10, 0, tzinfo=UTC)
STALE = "01017012345"  # confirmed a second before the cut-off
CURRENT = "02028012345"  # confirmed exactly at it
UNKNOWN_CONFIRMATION = "03039012345"
RESERVED_STALE = "04048012345"


def _person(number: str, confirmed: str | None, **extra: Any) -> dict[str, Any]:
    record = {"kind": "person", "nationalIdentityNumber": number, "name": f"P {number}",
              "emailAddress": f"p{number}@example.com", "mobileNumber": "+4790000000", **extra}  # fmt: skip
    if confirmed is not None:
        record["contactConfirmed"] = confirmed
    return record


PERSONS = [
    _person(STALE, "2024-09-02T12:59:59+03:00"),
    _person(CURRENT, "2024-09-02T10:00:00Z"),
    _person(UNKNOWN_CONFIRMATION, None),
    _person(RESERVED_STALE, "2020-01-01T00:00:00Z", isReserved=True),
]


@pytest.fixture
async def registry(database: Database, clock: FrozenClock) -> CountingRegistry:
    assert (await load(database, clock, PERSONS)).rejected == []
    return CountingRegistry(database, clock)


def test_eighteen_calendar_months_as_dotnet_adds_them() -> None:
    assert months_before(NOW, 18) == CUTOFF
    assert months_before(datetime(2026, 8, 31, 23, 59, tzinfo=UTC), 18) == datetime(2025, 2, 28, 23, 59, tzinfo=UTC)
    assert months_before(datetime(2025, 8, 31, tzinfo=UTC), 18) == datetime(2024, 2, 29, tzinfo=UTC)
    assert months_before(datetime(2026, 1, 15, tzinfo=UTC), 13) == datetime(2024, 12, 15, tzinfo=UTC)


async def test_stored_as_utc_from_any_offset(database: Database, registry: CountingRegistry) -> None:
    found = await LocalRegistry(database).persons([STALE, CURRENT, UNKNOWN_CONFIRMATION])
    assert found[STALE].contact_confirmed == CUTOFF - timedelta(seconds=1)
    assert found[CURRENT].contact_confirmed == CUTOFF
    assert found[UNKNOWN_CONFIRMATION].contact_confirmed is None


@pytest.mark.parametrize("channel", list(Ch))
async def test_stale_details_are_absent_unless_the_order_allows_them(registry: CountingRegistry, channel: Ch) -> None:
    lookup = RecipientLookup(registry, registry.clock)
    numbers = [STALE, CURRENT, UNKNOWN_CONFIRMATION]
    strict = await lookup.resolve([RecipientSpec(national_identity_number=n) for n in numbers], channel)
    stale, current, unknown = strict.recipients
    assert stale.outcome is Outcome.MISSING_CONTACT
    assert stale.addresses == ()
    assert [u.reason for u in stale.unreached] == [Reason.NO_CONTACT]
    assert "18 months" in stale.unreached[0].detail
    assert stale.name == f"P {STALE}"
    assert current.outcome is Outcome.FOUND
    assert unknown.outcome is Outcome.FOUND
    summary = strict.summary()
    assert summary is not None
    assert summary.missing_contact == [STALE]

    allowed = await lookup.resolve(
        [RecipientSpec(national_identity_number=n) for n in numbers], channel, use_stale_contact_information=True
    )
    assert [r.outcome for r in allowed.recipients] == [Outcome.FOUND] * 3
    # The stale person's details are used as the current person's are.
    assert allowed.recipients[0].addresses
    assert [a.medium for a in allowed.recipients[0].addresses] == [a.medium for a in current.addresses]
    assert registry.calls == [("persons", 3), ("persons", 3)]  # one query per look-up, stale or not


async def test_the_rule_follows_the_clock(registry: CountingRegistry, clock: FrozenClock) -> None:
    lookup = RecipientLookup(registry, clock)
    spec = [RecipientSpec(national_identity_number=CURRENT)]
    assert (await lookup.resolve(spec, Ch.EMAIL)).recipients[0].outcome is Outcome.FOUND
    clock.advance(timedelta(microseconds=1))  # now the confirmation is a moment over 18 months old
    assert (await lookup.resolve(spec, Ch.EMAIL)).recipients[0].outcome is Outcome.MISSING_CONTACT


async def test_a_reserved_person_stays_reserved_however_old_the_details(registry: CountingRegistry) -> None:
    lookup = RecipientLookup(registry, registry.clock)
    spec = [RecipientSpec(national_identity_number=RESERVED_STALE)]
    reserved = await lookup.resolve(spec, Ch.EMAIL)
    assert reserved.recipients[0].outcome is Outcome.RESERVED
    summary = reserved.summary()
    assert summary is not None
    assert (summary.is_reserved, summary.missing_contact) == ([RESERVED_STALE], [])
    # Allowed past the reservation, the details are still stale.
    ignoring = await lookup.resolve(spec, Ch.EMAIL, ignore_reservation=True)
    assert ignoring.recipients[0].outcome is Outcome.MISSING_CONTACT
    both = await lookup.resolve(spec, Ch.EMAIL, ignore_reservation=True, use_stale_contact_information=True)
    assert both.recipients[0].outcome is Outcome.FOUND


async def test_the_confirmation_time_needs_an_offset_and_a_record_is_written_whole(
    database: Database, clock: FrozenClock
) -> None:
    summary = await load(
        database,
        clock,
        [
            _person(STALE, "2024-01-01T00:00:00"),
            _person(STALE, "2024-01-01"),
            {**_person(STALE, None), "contactConfirmed": 1700000000},
            _person(STALE, "1700000000"),
            _person(STALE, "yesterday"),
            _person(STALE, "2024-01-01T00:00:00.5-01:30"),
        ],
    )
    assert [number for number, _ in summary.rejected] == [1, 2, 3, 4, 5]
    assert all(reason.startswith("contactConfirmed:") for _, reason in summary.rejected), summary.rejected
    assert "UTC offset" in summary.rejected[2][1]
    async with database.read() as conn:
        confirmed = (await conn.execute(select(registry_persons.c.contact_confirmed))).scalar_one()
    assert confirmed == datetime(2024, 1, 1, 1, 30, 0, 500000, tzinfo=UTC)
    # A record without the time says it is unknown: current again.
    assert (await load(database, clock, [_person(STALE, None)])).updated == 1
    assert (await LocalRegistry(database).persons([STALE]))[STALE].contact_confirmed is None


async def _notifications(database: Database, order_id: str) -> list[tuple[str, str | None, str | None]]:
    async with database.read() as conn:
        rows = await conn.execute(select(email_notifications).where(email_notifications.c.order_id == UUID(order_id)))
        return [(row.status, row.email_address, row.external_identity) for row in rows]


async def _email_order(client: httpx.AsyncClient, auth: Auth, recipient: dict[str, str]) -> tuple[str, Any]:
    body = {"subject": "Hei", "body": "Hallo", "recipients": [recipient]}
    response = await client.post(f"{V1}/orders/email", json=body, headers=auth())
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"]), response.json().get("recipientLookup")


async def test_pushed_confirmation_times_rule_the_order_answer_and_the_send_time_look_up(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    pushed = await client.post(f"{V1}/registry/records", json=PERSONS, headers=auth(scopes=["varsel:registry.write"]))
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["rejected"] == []

    # A v1 order cannot allow stale details: the stale person has no contact.
    strict, lookup = await _email_order(client, auth, {"nationalIdentityNumber": STALE})
    assert lookup == {"status": "Failed", "isReserved": [], "missingContact": [STALE]}
    # An order that allows them (a v2 order saying useStaleContactInformation; the column as the v2 intake writes it).
    allowing, _ = await _email_order(client, auth, {"nationalIdentityNumber": STALE})
    async with database.transaction() as conn:
        await conn.execute(
            update(orders).where(orders.c.id == UUID(allowing)).values(use_stale_contact_information=True)
        )
    await varsel.workers.processor.run_once()
    assert await _notifications(database, strict) == [("Failed_RecipientNotIdentified", None, None)]
    assert await _notifications(database, allowing) == [("New", f"p{STALE}@example.com", None)]


async def test_the_order_service_looks_up_with_the_draft_s_rule(varsel: Varsel, registry: CountingRegistry) -> None:
    """What the v2 intake asks before it answers 422: the draft's useStaleContactInformation decides."""
    for allow, outcome in ((False, Outcome.MISSING_CONTACT), (True, Outcome.FOUND)):
        draft = OrderDraft(
            channel=Ch.EMAIL,
            requested_send_time=NOW,
            recipients=(RecipientSpec(national_identity_number=STALE),),
            use_stale_contact_information=allow,
        )
        assert (await varsel.orders.look_up(draft)).recipients[0].outcome is outcome


async def test_external_identities_are_looked_up_again_at_send_time(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    users = [{"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:sigrid",
              "emailAddress": "sigrid@example.com"}]  # fmt: skip
    assert (await load(database, clock, users)).rejected == []
    urns = [
        "urn:altinn:person:legacy-selfidentified:sigrid",
        "urn:altinn:person:idporten-email:kari@example.com",
        "urn:altinn:party:username:nobody",
    ]
    ids = []
    for urn in urns:
        order_id, _ = await _email_order(client, auth, {"emailAddress": "placeholder@example.com"})
        # The recipient as the v2 intake stores a recipientExternalIdentity: the URN, no address.
        async with database.transaction() as conn:
            await conn.execute(
                update(order_recipients)
                .where(order_recipients.c.order_id == UUID(order_id))
                .values(email_address=None, external_identity=urn)
            )
        ids.append(order_id)
    await varsel.workers.processor.run_once()
    assert await _notifications(database, ids[0]) == [("New", "sigrid@example.com", urns[0])]
    assert await _notifications(database, ids[1]) == [("New", "kari@example.com", urns[1])]
    assert await _notifications(database, ids[2]) == [("Failed_RecipientNotIdentified", None, urns[2])]
