"""The pipeline end to end on the combined channels, with a frozen clock, on SQLite and PostgreSQL: which addresses
the Preferred and EmailAndSms channels reach, and how notifications that never get a delivery report expire."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, select

from tests.conftest import NOW
from tests.recipients.registry_data import load
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, orders, sms_notifications
from varsel.dispatch import repository
from varsel.dispatch.senders import ExpirySweeper
from varsel.dispatch.window import OSLO
from varsel.providers.base import Accepted, EmailMessage, SmsMessage
from varsel.settings import Settings

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]
EXPIRY = timedelta(hours=48)

BOTH = "01017012345"  # email and mobile
EMAIL_ONLY = "03039012345"
MOBILE_ONLY = "02028012345"
EMAIL_AND_BAD_MOBILE = "04049012345"  # the registry's mobile is not a mobile number: dropped
NEITHER = "14029112345"
ORG_BOTH = "311000179"
ORG_SMS_ONLY = "312508729"
ORG_EMAIL_ONLY = "313441571"

REGISTRY: list[dict[str, Any]] = [
    {"kind": "person", "nationalIdentityNumber": BOTH, "name": "Ola Nordmann",
     "emailAddress": "ola.nordmann@example.com", "mobileNumber": "98765432", "isReserved": False},
    {"kind": "person", "nationalIdentityNumber": EMAIL_ONLY, "name": "Per Epost",
     "emailAddress": "per.epost@example.com", "isReserved": False},
    {"kind": "person", "nationalIdentityNumber": MOBILE_ONLY, "name": "Kari Nordmann",
     "mobileNumber": "0047 41234567", "isReserved": False},
    {"kind": "person", "nationalIdentityNumber": EMAIL_AND_BAD_MOBILE, "name": "Pål Feilnummer",
     "emailAddress": "paal@example.com", "mobileNumber": "12345", "isReserved": False},
    {"kind": "person", "nationalIdentityNumber": NEITHER, "name": "Mona Mangler", "isReserved": False},
    {"kind": "organization", "organizationNumber": ORG_BOTH, "name": "Testbedrift AS",
     "emailAddresses": ["post@testbedrift.example.com", "varsel@testbedrift.example.com"],
     "mobileNumbers": ["+4790002001"]},
    {"kind": "organization", "organizationNumber": ORG_SMS_ONLY, "name": "Kun SMS Sjøfart AS",
     "emailAddresses": [], "mobileNumbers": ["+4790003001", "004790003002"]},
    {"kind": "organization", "organizationNumber": ORG_EMAIL_ONLY, "name": "Epost & Co",
     "emailAddresses": ["Kontakt@Epost-og-co.example.com"], "mobileNumbers": []},
]  # fmt: skip

NAMES = {
    BOTH: "Ola Nordmann",
    EMAIL_ONLY: "Per Epost",
    MOBILE_ONLY: "Kari Nordmann",
    EMAIL_AND_BAD_MOBILE: "Pål Feilnummer",
    NEITHER: "Mona Mangler",
    ORG_BOTH: "Testbedrift AS",
    ORG_SMS_ONLY: "Kun SMS Sjøfart AS",
    ORG_EMAIL_ONLY: "Epost & Co",
}


@pytest.fixture
async def registry(varsel: Varsel, clock: FrozenClock) -> None:
    summary = await load(varsel.database, clock, list(REGISTRY))
    assert summary.rejected == []
    assert summary.accepted == len(REGISTRY)


# ---------------------------------------------------------------- helpers


def _order_body(channel: str, *recipients: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "notificationChannel": channel,
        "recipients": list(recipients),
        "emailTemplate": {"subject": "Til $recipientName$", "body": "Hei $recipientName$ ($recipientNumber$)"},
        "smsTemplate": {"body": "SMS til $recipientName$ ($recipientNumber$)"},
        **extra,
    }


def _recipient(key: str) -> dict[str, str]:
    return {"organizationNumber": key} if len(key) == 9 else {"nationalIdentityNumber": key}


async def _order(client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{V1}/orders", json=body, headers=auth())
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


@dataclass(frozen=True)
class Sent:
    to: str
    subject: str | None
    body: str


def _emails(settings: Settings) -> list[Sent]:
    sent = []
    for path in (settings.data_dir / "outbox" / "email").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body()
        assert body is not None
        sent.append(Sent(str(message["To"]), str(message["Subject"]), body.get_content().strip()))
    return sorted(sent, key=lambda s: s.to)


def _sms(settings: Settings) -> list[Sent]:
    path = settings.data_dir / "outbox" / "sms.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return sorted((Sent(line["to"], None, line["body"]) for line in lines), key=lambda s: s.to)


async def _db_order_status(database: Database, order_id: str) -> str:
    async with database.read() as conn:
        rows = await conn.execute(select(orders.c.id, orders.c.status))
        return next(str(row.status) for row in rows if str(row.id) == order_id)


async def _statuses(database: Database, table: Table) -> list[str]:
    async with database.read() as conn:
        return sorted(str(s) for s in (await conn.execute(select(table.c.status))).scalars())


async def _listed(client: httpx.AsyncClient, auth: Auth, order_id: str, kind: str) -> dict[str, Any]:
    response = await client.get(f"{V1}/orders/{order_id}/notifications/{kind}", headers=auth())
    assert response.status_code == 200, response.text
    listed: dict[str, Any] = response.json()
    return listed


async def _v1_status(client: httpx.AsyncClient, auth: Auth, order_id: str) -> dict[str, Any]:
    response = await client.get(f"{V1}/orders/{order_id}/status", headers=auth())
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def _oslo(*args: int) -> datetime:
    return datetime(*args, tzinfo=OSLO).astimezone(UTC)  # type: ignore[misc]


# ---------------------------------------------------------------- 1. Preferred channels and their fallback


@pytest.mark.parametrize(
    ("channel", "recipient", "emails", "mobiles"),
    [
        ("EmailPreferred", BOTH, ["ola.nordmann@example.com"], []),
        ("EmailPreferred", MOBILE_ONLY, [], ["+4741234567"]),
        ("SmsPreferred", BOTH, [], ["+4798765432"]),
        ("SmsPreferred", EMAIL_ONLY, ["per.epost@example.com"], []),
        # An invalid mobile in the registry counts as none: the email is the fallback.
        ("SmsPreferred", EMAIL_AND_BAD_MOBILE, ["paal@example.com"], []),
        ("EmailPreferred", ORG_BOTH, ["post@testbedrift.example.com", "varsel@testbedrift.example.com"], []),
        ("SmsPreferred", ORG_BOTH, [], ["+4790002001"]),
        ("EmailPreferred", ORG_SMS_ONLY, [], ["+4790003001", "+4790003002"]),
        ("SmsPreferred", ORG_EMAIL_ONLY, ["Kontakt@epost-og-co.example.com"], []),
    ],
)
@pytest.mark.usefixtures("registry")
async def test_a_preferred_channel_uses_the_preferred_kind_else_the_fallback(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    settings: Settings,
    channel: str,
    recipient: str,
    emails: list[str],
    mobiles: list[str],
) -> None:
    answer = await _order(client, auth, _order_body(channel, _recipient(recipient)))
    order_id = str(answer["orderId"])
    assert answer["recipientLookup"] == {"status": "Success", "isReserved": [], "missingContact": []}
    assert await varsel.workers.drain() > 0

    name = NAMES[recipient]
    number = recipient if len(recipient) == 9 else ""
    assert _emails(settings) == [Sent(a, f"Til {name}", f"Hei {name} ({number})") for a in emails]
    assert _sms(settings) == [Sent(m, None, f"SMS til {name} ({number})") for m in mobiles]

    listed_email = await _listed(client, auth, order_id, "email")
    listed_sms = await _listed(client, auth, order_id, "sms")
    assert (listed_email["generated"], listed_email["succeeded"]) == (len(emails), len(emails))
    assert (listed_sms["generated"], listed_sms["succeeded"]) == (len(mobiles), len(mobiles))
    assert sorted(n["recipient"]["emailAddress"] for n in listed_email["notifications"]) == emails
    assert sorted(n["recipient"]["mobileNumber"] for n in listed_sms["notifications"]) == mobiles
    for n in listed_email["notifications"] + listed_sms["notifications"]:
        assert n["sendStatus"]["status"] == "Delivered"
        assert n["recipient"].get("nationalIdentityNumber", n["recipient"].get("organizationNumber")) == recipient

    assert await _db_order_status(varsel.database, order_id) == "Completed"
    status = await _v1_status(client, auth, order_id)
    assert status["processingStatus"]["status"] == "Completed"
    summary = status["notificationsStatusSummary"]
    assert (summary["email"]["generated"], summary["email"]["succeeded"]) == (len(emails), len(emails))
    assert (summary["sms"]["generated"], summary["sms"]["succeeded"]) == (len(mobiles), len(mobiles))


@pytest.mark.parametrize(("channel", "email_sent", "sms_sent"), [("EmailPreferred", 1, 0), ("SmsPreferred", 0, 1)])
async def test_a_preferred_channel_with_both_addresses_in_the_order_uses_one(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, settings: Settings, channel: str, email_sent: int,
    sms_sent: int,
) -> None:  # fmt: skip
    recipient = {"emailAddress": "x@example.com", "mobileNumber": "+4790000009"}
    answer = await _order(client, auth, _order_body(channel, recipient))
    assert "recipientLookup" not in answer  # nothing was looked up
    await varsel.workers.drain()
    # No registry name: the keywords become empty.
    assert _emails(settings) == [Sent("x@example.com", "Til ", "Hei  ()")] * email_sent
    assert _sms(settings) == [Sent("+4790000009", None, "SMS til  ()")] * sms_sent
    assert await _db_order_status(varsel.database, str(answer["orderId"])) == "Completed"


# ---------------------------------------------------------------- 2. EmailAndSms


@pytest.mark.usefixtures("registry")
async def test_email_and_sms_reaches_a_person_on_both_kinds(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, settings: Settings
) -> None:
    answer = await _order(client, auth, _order_body("EmailAndSms", _recipient(BOTH)))
    order_id = str(answer["orderId"])
    await varsel.workers.drain()
    assert _emails(settings) == [Sent("ola.nordmann@example.com", "Til Ola Nordmann", "Hei Ola Nordmann ()")]
    assert _sms(settings) == [Sent("+4798765432", None, "SMS til Ola Nordmann ()")]
    assert await _statuses(varsel.database, email_notifications) == ["Delivered"]
    assert await _statuses(varsel.database, sms_notifications) == ["Delivered"]
    assert await _db_order_status(varsel.database, order_id) == "Completed"
    summary = (await _v1_status(client, auth, order_id))["notificationsStatusSummary"]
    assert (summary["email"]["generated"], summary["email"]["succeeded"]) == (1, 1)
    assert (summary["sms"]["generated"], summary["sms"]["succeeded"]) == (1, 1)


@pytest.mark.parametrize(
    ("recipient", "emails", "mobiles"),
    [(EMAIL_ONLY, ["per.epost@example.com"], []), (MOBILE_ONLY, [], ["+4741234567"])],
)
@pytest.mark.usefixtures("registry")
async def test_email_and_sms_to_a_person_with_one_kind_sends_that_kind_only(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    settings: Settings,
    recipient: str,
    emails: list[str],
    mobiles: list[str],
) -> None:
    # The reference only says "EmailAndSms -> both kinds". varsel (lookup.choose) sends what the person has: the
    # missing kind gets no notification at all (not a failed one), and the look-up counts as a success.
    answer = await _order(client, auth, _order_body("EmailAndSms", _recipient(recipient)))
    order_id = str(answer["orderId"])
    assert answer["recipientLookup"] == {"status": "Success", "isReserved": [], "missingContact": []}
    await varsel.workers.drain()
    assert [s.to for s in _emails(settings)] == emails
    assert [s.to for s in _sms(settings)] == mobiles
    assert await _statuses(varsel.database, email_notifications) == ["Delivered"] * len(emails)
    assert await _statuses(varsel.database, sms_notifications) == ["Delivered"] * len(mobiles)
    assert await _db_order_status(varsel.database, order_id) == "Completed"
    summary = (await _v1_status(client, auth, order_id))["notificationsStatusSummary"]
    assert summary["email"]["generated"] == len(emails)
    assert summary["sms"]["generated"] == len(mobiles)


@pytest.mark.usefixtures("registry")
async def test_email_and_sms_to_a_person_without_addresses_fails_once_as_email(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, settings: Settings
) -> None:
    answer = await _order(client, auth, _order_body("EmailAndSms", _recipient(NEITHER)))
    order_id = str(answer["orderId"])
    assert answer["recipientLookup"] == {"status": "Failed", "isReserved": [], "missingContact": [NEITHER]}
    await varsel.workers.drain()
    assert _emails(settings) == []
    assert _sms(settings) == []
    assert await _statuses(varsel.database, email_notifications) == ["Failed_RecipientNotIdentified"]
    assert await _statuses(varsel.database, sms_notifications) == []
    assert await _db_order_status(varsel.database, order_id) == "Completed"


@pytest.mark.usefixtures("registry")
async def test_email_and_sms_completes_only_when_the_sms_is_final_too(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    clock.set(_oslo(2026, 3, 2, 8, 0))  # before the Daytime SMS window: the email goes, the SMS waits for 09:00
    answer = await _order(client, auth, _order_body("EmailAndSms", _recipient(BOTH)))
    order_id = str(answer["orderId"])
    await varsel.workers.drain()
    assert [s.to for s in _emails(settings)] == ["ola.nordmann@example.com"]
    assert _sms(settings) == []
    assert await _statuses(varsel.database, email_notifications) == ["Delivered"]
    assert await _statuses(varsel.database, sms_notifications) == ["New"]
    assert await _db_order_status(varsel.database, order_id) == "Processed"
    # The v1 API shows Processed as Completed, as the reference does; the counts tell that the SMS is still due.
    status = await _v1_status(client, auth, order_id)
    assert status["processingStatus"]["status"] == "Completed"
    assert status["notificationsStatusSummary"]["sms"]["succeeded"] == 0

    clock.set(_oslo(2026, 3, 2, 8, 59, 59))
    await varsel.workers.drain()
    assert _sms(settings) == []
    assert await _db_order_status(varsel.database, order_id) == "Processed"

    clock.set(_oslo(2026, 3, 2, 9, 0))
    await varsel.workers.drain()
    assert [s.to for s in _sms(settings)] == ["+4798765432"]
    assert await _statuses(varsel.database, sms_notifications) == ["Delivered"]
    assert await _db_order_status(varsel.database, order_id) == "Completed"
    summary = (await _v1_status(client, auth, order_id))["notificationsStatusSummary"]
    assert (summary["email"]["succeeded"], summary["sms"]["succeeded"]) == (1, 1)


# ---------------------------------------------------------------- 3. Expiry of notifications without a report


class SilentProvider:
    """A provider that accepts every message and never reports delivery (as a real one does until its report)."""

    name = "silent"

    def __init__(self) -> None:
        self.sent: list[EmailMessage | SmsMessage] = []

    async def send(self, message: Any) -> Accepted:
        self.sent.append(message)
        return Accepted(reference=f"ref-{message.notification_id}", delivered=False)

    async def close(self) -> None:
        return None


@dataclass
class Silent:
    varsel: Varsel
    client: httpx.AsyncClient
    email: SilentProvider
    sms: SilentProvider


@pytest.fixture
async def silent(settings: Settings, database: Database, clock: FrozenClock) -> AsyncIterator[Silent]:
    email_provider, sms_provider = SilentProvider(), SilentProvider()
    services = build(settings, clock=clock, database=database, email_provider=email_provider,
                     sms_provider=sms_provider)  # fmt: skip
    app = create_app(services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test") as client:
        yield Silent(services, client, email_provider, sms_provider)
    await services.http.aclose()


@pytest.mark.parametrize(
    ("kind", "recipient", "table", "awaiting"),
    [
        ("email", {"emailAddress": "a@example.com"}, email_notifications, "Succeeded"),
        ("sms", {"mobileNumber": "+4790000001"}, sms_notifications, "Accepted"),
    ],
)
async def test_a_notification_without_delivery_report_expires_after_the_report_grace(
    silent: Silent, auth: Auth, clock: FrozenClock, kind: str, recipient: dict[str, str], table: Table, awaiting: str
) -> None:
    client, varsel = silent.client, silent.varsel
    channel = "Email" if kind == "email" else "Sms"
    order_id = str((await _order(client, auth, _order_body(channel, recipient)))["orderId"])
    await varsel.workers.drain()

    provider = silent.email if kind == "email" else silent.sms
    (message,) = provider.sent
    if isinstance(message, SmsMessage):
        assert message.expiry == NOW + EXPIRY  # NOW is inside the Daytime window
    async with varsel.database.read() as conn:
        row = (await conn.execute(select(table.c.status, table.c.provider, table.c.provider_reference))).one()
    assert (row.status, row.provider, row.provider_reference) == (awaiting, "silent", f"ref-{message.notification_id}")
    # Handed over but unconfirmed: the order is still under way, though the v1 API shows it as Completed.
    assert await _db_order_status(varsel.database, order_id) == "Processed"
    status = await _v1_status(client, auth, order_id)
    assert status["processingStatus"]["status"] == "Completed"
    assert status["notificationsStatusSummary"][kind]["succeeded"] == 1

    # Past expiry, but within the 5 minutes a late report is given: still awaiting it.
    for moment in (NOW + EXPIRY + timedelta(seconds=1), NOW + EXPIRY + ExpirySweeper.REPORT_GRACE):
        clock.set(moment)
        await varsel.workers.drain()
        assert await _statuses(varsel.database, table) == [awaiting]
        assert await _db_order_status(varsel.database, order_id) == "Processed"

    clock.set(NOW + EXPIRY + ExpirySweeper.REPORT_GRACE + timedelta(seconds=1))
    assert await varsel.workers.drain() == 1
    assert await _statuses(varsel.database, table) == ["Failed_TTL"]
    assert await _db_order_status(varsel.database, order_id) == "Completed"
    assert len(provider.sent) == 1  # never sent again
    listed = await _listed(client, auth, order_id, kind)
    assert (listed["generated"], listed["succeeded"]) == (1, 0)
    assert listed["notifications"][0]["sendStatus"]["status"] == "Failed_TTL"
    status = await _v1_status(client, auth, order_id)
    assert status["notificationsStatusSummary"][kind]["succeeded"] == 0


async def test_email_and_sms_completes_when_the_unreported_sms_expires(
    silent: Silent, auth: Auth, clock: FrozenClock
) -> None:
    client, varsel = silent.client, silent.varsel
    body = _order_body("EmailAndSms", {"emailAddress": "a@example.com", "mobileNumber": "+4790000001"})
    order_id = str((await _order(client, auth, body))["orderId"])
    await varsel.workers.drain()
    assert (len(silent.email.sent), len(silent.sms.sent)) == (1, 1)
    assert await _statuses(varsel.database, email_notifications) == ["Succeeded"]
    assert await _statuses(varsel.database, sms_notifications) == ["Accepted"]
    assert await _db_order_status(varsel.database, order_id) == "Processed"
    clock.set(NOW + EXPIRY + ExpirySweeper.REPORT_GRACE + timedelta(seconds=1))
    assert await varsel.workers.drain() == 2
    assert await _statuses(varsel.database, email_notifications) == ["Failed_TTL"]
    assert await _statuses(varsel.database, sms_notifications) == ["Failed_TTL"]
    assert await _db_order_status(varsel.database, order_id) == "Completed"


async def test_a_notification_stuck_in_sending_expires_once_its_lease_runs_out(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    order_id = str((await _order(client, auth, _order_body("Email", {"emailAddress": "a@example.com"})))["orderId"])
    await varsel.workers.processor.run_once()
    # A sender claims it just before expiry and is never heard of again (its process died mid-send).
    clock.set(NOW + EXPIRY - timedelta(minutes=1))
    lease = timedelta(seconds=settings.dispatch.lease_seconds)
    async with varsel.database.transaction() as conn:
        claimed = await repository.claim_notifications(
            conn, email_notifications, "dead-worker", clock.now(), clock.now() + lease, 10
        )
    assert len(claimed) == 1
    lease_end = clock.now() + lease
    assert lease_end > NOW + EXPIRY

    # Past expiry, but the sender may still be handing it over while its lease holds.
    for moment in (NOW + EXPIRY + timedelta(seconds=1), lease_end):
        clock.set(moment)
        assert await varsel.workers.sweeper.run_once() == 0
        assert await _statuses(varsel.database, email_notifications) == ["Sending"]
        assert await _db_order_status(varsel.database, order_id) == "Processed"

    clock.set(lease_end + timedelta(seconds=1))
    assert await varsel.workers.sweeper.run_once() == 1
    assert await _statuses(varsel.database, email_notifications) == ["Failed_TTL"]
    assert await _db_order_status(varsel.database, order_id) == "Completed"
    await varsel.workers.drain()
    assert _emails(settings) == []  # ended, so never sent afterwards


@pytest.mark.parametrize("claimed_by_a_dead_sender", [False, True])
async def test_a_notification_past_its_expiry_is_never_handed_to_the_provider(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    settings: Settings,
    claimed_by_a_dead_sender: bool,
) -> None:
    # varsel is stopped (or its sender dies mid-send) right after generating, and is back after the expiry, say
    # after a weekend: every worker runs again, the senders first, and none may send what has expired.
    order_id = str((await _order(client, auth, _order_body("Email", {"emailAddress": "a@example.com"})))["orderId"])
    await varsel.workers.processor.run_once()
    if claimed_by_a_dead_sender:
        lease = timedelta(seconds=settings.dispatch.lease_seconds)
        async with varsel.database.transaction() as conn:
            claimed = await repository.claim_notifications(
                conn, email_notifications, "dead-worker", clock.now(), clock.now() + lease, 10
            )
        assert len(claimed) == 1
    clock.set(NOW + EXPIRY + timedelta(hours=1))
    await varsel.workers.drain()
    assert _emails(settings) == []
    assert await _statuses(varsel.database, email_notifications) == ["Failed_TTL"]
    assert await _db_order_status(varsel.database, order_id) == "Completed"
