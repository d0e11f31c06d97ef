"""Self-identified users in the registry (import, push, delete) and external identities in the look-up: each URN
spelling of a user is one identity, an ID-porten email identity is its own address, an unknown one has no contact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from tests.recipients.registry_data import load
from tests.recipients.test_lookup import REGISTRY, CountingRegistry
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import registry_external_identities
from varsel.orders.drafts import RecipientSpec
from varsel.orders.vocabulary import NotificationChannel as Ch
from varsel.orders.vocabulary import RecipientLookupStatus
from varsel.recipients.lookup import Outcome, Reason, RecipientLookup

REGISTRY_RECORDS = "/notifications/api/v1/registry/records"
REGISTRY_WRITER = "varsel:registry.write"
Auth = Callable[..., dict[str, str]]

SIGRID = "urn:altinn:party:username:sigrid"
USERS: list[dict[str, Any]] = [
    {"kind": "externalIdentity", "externalIdentity": SIGRID, "name": "Sigrid Selvregistrert",
     "emailAddress": "sigrid@example.com", "mobileNumber": "90004001"},
    {"kind": "externalIdentity", "externalIdentity": "urn:altinn:person:legacy-selfidentified:lars",
     "name": "Lars Legacy", "emailAddress": "lars@example.com"},
    {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:siri", "name": "Siri Sms",
     "mobileNumber": "+4790004002"},
    {"kind": "externalIdentity", "externalIdentity": "urn:altinn:party:username:uten", "name": "Uten Kontakt",
     "emailAddress": "not an address"},
]  # fmt: skip


async def _stored(database: Database) -> dict[str, tuple[Any, ...]]:
    async with database.read() as conn:
        rows = (await conn.execute(select(registry_external_identities))).all()
    return {row.identity: (row.name, row.email_address, row.mobile_number) for row in rows}


def identity(urn: str) -> RecipientSpec:
    return RecipientSpec(external_identity=urn)


@pytest.fixture
async def registry(database: Database, clock: FrozenClock) -> CountingRegistry:
    summary = await load(database, clock, [*REGISTRY, *USERS])
    assert summary.rejected == []
    return CountingRegistry(database, clock)


async def test_the_three_spellings_of_a_user_are_one_identity_kept_in_the_canonical_form(
    database: Database, clock: FrozenClock
) -> None:
    user = {"kind": "externalIdentity", "name": "Ola", "emailAddress": "ola@example.com"}
    first = await load(database, clock, [{**user, "externalIdentity": "urn:altinn:username:ola%20n"}])
    assert (first.inserted, first.updated, first.rejected) == (1, 0, [])
    again = await load(
        database,
        clock,
        [
            {
                **user,
                "externalIdentity": "urn:altinn:person:legacy-selfidentified:ola n",
                "mobileNumber": "+4790000001",
            },
            {**user, "externalIdentity": "urn:altinn:party:username:ola%20n", "name": "Ola N"},
        ],
    )
    assert (again.inserted, again.updated, again.rejected) == (0, 2, [])
    # The last record is the whole record: the mobile of the one before it is gone.
    assert await _stored(database) == {"urn:altinn:party:username:ola%20n": ("Ola N", "ola@example.com", None)}

    removed = await load(database, clock, [{"kind": "delete", "externalIdentity": "urn:altinn:username:ola n"}])
    assert (removed.deleted, removed.rejected) == (1, [])
    assert await _stored(database) == {}


async def test_bad_identities_are_refused_with_a_reason(database: Database, clock: FrozenClock) -> None:
    summary = await load(
        database,
        clock,
        [
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:person:wrongprefix:ola"},
            {"kind": "externalIdentity", "externalIdentity": "URN:altinn:username:ola"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:person:idporten-email:kari@example.com"},
            {"kind": "externalIdentity"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:ola", "name": "Ola\r\nBcc: x"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:ola", "emailAddress": "o\u202e@x.no"},
            {"kind": "delete", "externalIdentity": "urn:altinn:username:ola", "nationalIdentityNumber": "01017012345"},
            {"kind": "delete", "externalIdentity": "urn:altinn:username:%zz"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:ola"},
        ],
    )
    reasons = dict(summary.rejected)
    assert sorted(reasons) == list(range(1, 10))
    for number in (1, 2, 3, 9):
        assert reasons[number].startswith("externalIdentity: Value error, must be a self-identified user's URN"), (
            reasons[number]
        )
    assert "ID-porten email identity" in reasons[4]
    assert "its own email address" in reasons[4]
    assert reasons[5] == "externalIdentity: Field required"
    assert reasons[6].startswith("name:")
    assert reasons[7].startswith("emailAddress:")
    assert "names nothing else" in reasons[8]
    assert summary.inserted == 1
    assert await _stored(database) == {"urn:altinn:party:username:ola": (None, None, None)}


async def test_a_registry_pushes_users_in_any_spelling(
    client: httpx.AsyncClient, auth: Auth, database: Database
) -> None:
    headers = auth(scopes=[REGISTRY_WRITER])
    pushed = await client.post(
        REGISTRY_RECORDS,
        json=[
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:kari", "emailAddress": "k@x.no"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:person:legacy-selfidentified:kari",
             "name": "Kari", "emailAddress": "kari@example.com"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:person:idporten-email:kari@example.com"},
            {"kind": "externalIdentity", "externalIdentity": "urn:altinn:username:  "},
        ],
        headers=headers,
    )  # fmt: skip
    assert pushed.status_code == 200, pushed.text
    answer = pushed.json()
    assert (answer["inserted"], answer["updated"], answer["deleted"]) == (1, 1, 0)
    assert [r["index"] for r in answer["rejected"]] == [2, 3]
    assert "its own email address" in answer["rejected"][0]["reason"]
    assert "self-identified user's URN" in answer["rejected"][1]["reason"]
    assert await _stored(database) == {"urn:altinn:party:username:kari": ("Kari", "kari@example.com", None)}

    deleted = await client.post(
        REGISTRY_RECORDS,
        json=[{"kind": "delete", "externalIdentity": "urn:altinn:party:username:kari"}],
        headers=headers,
    )
    assert deleted.json()["deleted"] == 1
    assert await _stored(database) == {}


@pytest.mark.parametrize(
    ("urn", "channel", "expected", "name"),
    [
        # Each spelling finds the user stored under another.
        ("urn:altinn:username:sigrid", Ch.EMAIL, [("email", "sigrid@example.com")], "Sigrid Selvregistrert"),
        ("urn:altinn:person:legacy-selfidentified:sigrid", Ch.SMS, [("sms", "+4790004001")], "Sigrid Selvregistrert"),
        (SIGRID, Ch.EMAIL_AND_SMS, [("email", "sigrid@example.com"), ("sms", "+4790004001")], "Sigrid Selvregistrert"),
        ("urn:altinn:party:username:lars", Ch.SMS_PREFERRED, [("email", "lars@example.com")], "Lars Legacy"),
        ("urn:altinn:party:username:siri", Ch.EMAIL_PREFERRED, [("sms", "+4790004002")], "Siri Sms"),
        # An ID-porten email identity is its own address, with no registry row and no name.
        ("urn:altinn:person:idporten-email:Kari%40Example.com", Ch.EMAIL, [("email", "Kari@example.com")], None),
        ("urn:altinn:person:idporten-email:kari@example.com", Ch.SMS_PREFERRED, [("email", "kari@example.com")], None),
    ],
)
async def test_look_up_by_each_identity_kind_and_channel(
    registry: CountingRegistry, urn: str, channel: Ch, expected: list[tuple[str, str]], name: str | None
) -> None:
    resolved = (await RecipientLookup(registry, registry.clock).resolve([identity(urn)], channel)).recipients[0]
    assert resolved.outcome is Outcome.FOUND
    assert [(a.medium.value, a.address) for a in resolved.addresses] == expected
    assert (resolved.name, resolved.number) == (name, None)
    assert resolved.recipient.external_identity == urn  # the recipient as ordered


@pytest.mark.parametrize(
    ("urn", "channel", "reasons"),
    [
        ("urn:altinn:party:username:nobody", Ch.EMAIL_PREFERRED, [Reason.NOT_FOUND]),
        ("urn:altinn:username:lars", Ch.SMS, [Reason.NO_CONTACT]),
        ("urn:altinn:username:siri", Ch.EMAIL, [Reason.NO_CONTACT]),
        ("urn:altinn:username:uten", Ch.EMAIL, [Reason.INVALID_ADDRESS, Reason.NO_CONTACT]),
        ("urn:altinn:person:idporten-email:kari@example.com", Ch.SMS, [Reason.NO_CONTACT]),
        ("urn:altinn:person:nonsense:kari", Ch.EMAIL, [Reason.NOT_FOUND]),
    ],
)
async def test_unknown_or_unreachable_identities_are_missing_contact(
    registry: CountingRegistry, urn: str, channel: Ch, reasons: list[Reason]
) -> None:
    result = await RecipientLookup(registry, registry.clock).resolve([identity(urn)], channel)
    resolved = result.recipients[0]
    assert resolved.outcome is Outcome.MISSING_CONTACT
    assert resolved.addresses == ()
    assert [u.reason for u in resolved.unreached] == reasons
    summary = result.summary()
    assert summary is not None
    assert (summary.status, summary.missing_contact) == (RecipientLookupStatus.FAILED, [urn])


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def test_one_query_for_every_user_of_an_order_and_none_for_email_identities(
    database: Database, clock: FrozenClock, registry: CountingRegistry, statements: list[str]
) -> None:
    many = [
        {"kind": "externalIdentity", "externalIdentity": f"urn:altinn:username:u{i}", "emailAddress": f"u{i}@x.no"}
        for i in range(300)
    ]
    assert (await load(database, clock, many)).rejected == []
    spellings = (
        "urn:altinn:username:u{}",
        "urn:altinn:person:legacy-selfidentified:u{}",
        "urn:altinn:party:username:u{}",
    )
    recipients = [identity(spellings[i % 3].format(i)) for i in range(300)]
    recipients += [identity(f"urn:altinn:person:idporten-email:e{i}@x.no") for i in range(50)]
    recipients += [identity("urn:altinn:username:u7"), identity("urn:altinn:party:username:u7")]  # one user twice
    statements.clear()
    result = await RecipientLookup(registry, registry.clock).resolve(recipients, Ch.EMAIL)
    # The 301 spellings name 300 users: asked once, together; the email identities need no registry.
    assert registry.calls == [("external_identities", 300)]
    assert sum(1 for s in statements if "FROM registry_external_identities" in s) == 1
    assert [r.addresses[0].address for r in result.recipients] == [
        *(f"u{i}@x.no" for i in range(300)),
        *(f"e{i}@x.no" for i in range(50)),
        "u7@x.no",
        "u7@x.no",
    ]

    registry.calls.clear()
    only_email = await RecipientLookup(registry, registry.clock).resolve(
        [identity("urn:altinn:person:idporten-email:a@x.no")], Ch.EMAIL
    )
    assert only_email.recipients[0].outcome is Outcome.FOUND
    assert registry.calls == []
