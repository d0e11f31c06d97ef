"""Receipt-driven fallback (issue #18 item 4) through the whole pipeline, on SQLite and PostgreSQL: v1 and v2 orders
by national identity number, a registry holding both addresses, the order and sender workers driven with a frozen
clock, the real provider adapters talking to loopback peers (Azure Communication Services for email, LINK Mobility
for SMS), and delivery reports posted to varsel's own report endpoints in each provider's format.

What the second notification is for, and that it happens once, is read where a client reads it: the v2 manifest and
status feed, the v1 notification lists, and what reached the peers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import event, select, update

from tests.providers.acs_peer import AcsPeer
from tests.providers.linkmobility_peer import LinkMobilityPeer, delivery_report
from tests.recipients.registry_data import load
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import NOTIFICATION_TABLES, notification_fallbacks, orders
from varsel.providers.acs import AcsSettings
from varsel.recipients.lookup import LookupResult, RecipientLookup
from varsel.recipients.registry import LocalRegistry
from varsel.settings import FallbackSettings, Settings

V1 = "/notifications/api/v1"
FUTURE = f"{V1}/future"
LINK_URL = f"{V1}/reports/sms/linkmobility"
ACS_URL = f"{V1}/reports/email/acs"
GATE_USER, GATE_PASSWORD = "linkgate", "rapport-hemmelig"
ACCESS_KEY = "eventgrid-key"
Auth = Callable[..., dict[str, str]]

BOTH = "01017012345"
EMAIL_ONLY = "03039012345"
MOBILE_ONLY = "02028012345"
NOT_REGISTERED = "14029112345"
ANNE = "05059012345"
OLA_EMAIL, OLA_MOBILE = "ola.nordmann@example.com", "+4798765432"
KARI_MOBILE = "+4741234567"

REGISTRY: list[dict[str, Any]] = [
    {"kind": "person", "nationalIdentityNumber": BOTH, "name": "Ola Nordmann", "emailAddress": OLA_EMAIL,
     "mobileNumber": "98765432", "isReserved": False},
    {"kind": "person", "nationalIdentityNumber": EMAIL_ONLY, "name": "Per Epost",
     "emailAddress": "per.epost@example.com", "isReserved": False},
    {"kind": "person", "nationalIdentityNumber": MOBILE_ONLY, "name": "Kari Nordmann",
     "mobileNumber": "41234567", "isReserved": False},
    {"kind": "person", "nationalIdentityNumber": ANNE, "name": "Anne Begge", "emailAddress": "anne@example.com",
     "mobileNumber": "90000005", "isReserved": False},
]  # fmt: skip

# LINK Mobility result codes (varsel.providers.linkmobility): delivered, and "not delivered".
DELIVERED, NOT_DELIVERED = 1001, 1006


@dataclass(frozen=True)
class Sent:
    id: str
    channel: str
    address: str
    status: str
    provider_reference: str | None
    fallback_of: str | None
    fallback_reason: str | None


@dataclass
class Pipeline:
    varsel: Varsel
    client: httpx.AsyncClient
    clock: FrozenClock
    link: LinkMobilityPeer
    acs: AcsPeer
    auth: Auth

    async def drain(self) -> None:
        await self.varsel.workers.drain()

    def advance(self, minutes: float) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    async def v1_order(self, channel: str, nin: str, **extra: Any) -> str:
        body = {
            "notificationChannel": channel,
            "recipients": [{"nationalIdentityNumber": nin}],
            "emailTemplate": {"subject": "Saken din", "body": "Hei $recipientName$"},
            "smsTemplate": {"body": "Saken din har nytt"},
            **extra,
        }
        response = await self.client.post(f"{V1}/orders", json=body, headers=self.auth())
        assert response.status_code == 202, response.text
        return str(response.json()["orderId"])

    async def v2_order(self, channel: str, nin: str, **extra: Any) -> str:
        body = {
            "idempotencyId": str(uuid.uuid4()),
            "recipient": {
                "recipientPerson": {
                    "nationalIdentityNumber": nin,
                    "channelSchema": channel,
                    "emailSettings": {"subject": "Saken din", "body": "Hei"},
                    "smsSettings": {"body": "Saken din har nytt"},
                }
            },
            **extra,
        }
        response = await self.client.post(f"{FUTURE}/orders", json=body, headers=self.auth())
        assert response.status_code == 201, response.text
        return str(response.json()["notification"]["shipmentId"])

    async def notifications(self, order_id: str) -> list[Sent]:
        """The order's notifications, email first, each channel oldest first."""
        found: list[Sent] = []
        async with self.varsel.database.read() as conn:
            for channel, table in NOTIFICATION_TABLES.items():
                address = table.c.email_address if channel == "email" else table.c.mobile_number
                rows = await conn.execute(
                    select(table, address.label("address"))
                    .where(table.c.order_id == uuid.UUID(order_id))
                    .order_by(table.c.created, table.c.id)
                )
                found += [
                    Sent(
                        str(row.id),
                        channel,
                        row.address,
                        row.status,
                        row.provider_reference,
                        str(row.fallback_of) if row.fallback_of else None,
                        row.fallback_reason,
                    )
                    for row in rows
                ]
        return found

    async def order_status(self, order_id: str) -> str:
        async with self.varsel.database.read() as conn:
            result = await conn.execute(select(orders.c.status).where(orders.c.id == uuid.UUID(order_id)))
            return str(result.scalar_one())

    async def report_email(self, sent: Sent, status: str) -> httpx.Response:
        """An Event Grid delivery report for the email, as ACS posts it (its messageId is the notification id)."""
        event = {
            "id": str(uuid.uuid4()),
            "topic": "/subscriptions/x/resourceGroups/y/providers/microsoft.communication/communicationservices/z",
            "subject": f"sender/noreply@varsel.local/message/{sent.id}",
            "eventType": "Microsoft.Communication.EmailDeliveryReportReceived",
            "eventTime": "2026-03-02T10:00:06.822Z",
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "data": {
                "sender": "noreply@varsel.local",
                "recipient": sent.address,
                "messageId": sent.id,
                "status": status,
                "deliveryStatusDetails": {"statusMessage": "550 5.1.1 User unknown" if status != "Delivered" else ""},
                "deliveryAttemptTimeStamp": "2026-03-02T10:00:05.2855749+00:00",
            },
        }
        response = await self.client.post(
            ACS_URL,
            content=json.dumps([event]).encode(),
            headers={"Content-Type": "application/json"},
            params={"accesskey": ACCESS_KEY},
        )
        assert response.status_code == 200, response.text
        return response

    async def report_sms(self, sent: Sent, result_code: int) -> httpx.Response:
        """A LINK Mobility delivery report for the SMS, as its gate posts it."""
        assert sent.provider_reference is not None
        report = delivery_report(sent.id, sent.provider_reference, result_code)
        response = await self.client.post(LINK_URL, json=report, auth=(GATE_USER, GATE_PASSWORD))
        assert response.status_code == 200, response.text
        return response

    def sms_taken(self) -> Counter[str]:
        """What the LINK Mobility peer took, by destination."""
        return Counter(str(message.body["destination"]) for message in self.link.messages)

    def emails_taken(self) -> Counter[str]:
        """What the ACS peer took, by recipient address."""
        return Counter(address for email in self.acs.emails for address in email.to)

    async def fallback_rows(self) -> list[Any]:
        async with self.varsel.database.read() as conn:
            return list(await conn.execute(select(notification_fallbacks)))


class SwitchableRegistry(LocalRegistry):
    """The local registry, answering as a remote one would when it is unreachable (`down`): a connection error."""

    down = False
    # The numbers of each call, as a remote registry would see its requests.
    calls: list[list[str]]

    async def persons(self, numbers: Any) -> Any:
        self.calls = [*getattr(self, "calls", []), sorted(numbers)]
        if self.down:
            raise ConnectionRefusedError("the registry is unreachable")
        return await super().persons(numbers)


def _configured(settings: Settings, link: LinkMobilityPeer, acs: AcsPeer, fallback: FallbackSettings) -> Settings:
    acs_settings = AcsSettings(
        connection_string=SecretStr(acs.connection_string),
        timeout_seconds=5,
        poll_interval_seconds=0.01,
        poll_max_seconds=2,
        report_access_key=SecretStr(ACCESS_KEY),
    )
    link_settings = link.settings(
        timeout_seconds=5, report_username=GATE_USER, report_password=SecretStr(GATE_PASSWORD)
    )
    return settings.model_copy(
        update={
            "email": settings.email.model_copy(update={"provider": "acs", "acs": acs_settings}),
            "sms": settings.sms.model_copy(update={"provider": "linkmobility", "linkmobility": link_settings}),
            "fallback": fallback,
        }
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": []})


@pytest.fixture
def make_pipeline(settings: Settings, database: Database, clock: FrozenClock, auth: Auth) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(registry: LocalRegistry | None = None, **fallback: Any) -> AsyncIterator[Pipeline]:
        async with LinkMobilityPeer() as link, AcsPeer(clock=clock) as acs:
            chosen = _configured(settings, link, acs, FallbackSettings(**fallback))
            varsel = build(chosen, clock=clock, database=database, registry=registry)
            summary = await load(database, clock, list(REGISTRY))
            assert summary.rejected == []
            try:
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://varsel.test"
                ) as client:
                    yield Pipeline(varsel, client, clock, link, acs, auth)
            finally:
                await varsel.workers.email_provider.close()
                await varsel.workers.sms_provider.close()
                await varsel.http.aclose()

    return make


async def _sent_first(p: Pipeline, order_id: str, channel: str) -> Sent:
    """The order's one notification, handed to its provider and awaiting a report; the order Processed."""
    await p.drain()
    sent = await p.notifications(order_id)
    assert [(s.channel, s.status, s.fallback_of) for s in sent] == [
        (channel, "Succeeded" if channel == "email" else "Accepted", None)
    ]
    assert await p.order_status(order_id) == "Processed"
    return sent[0]


# ---------------------------------------------------------------- a failure that says the person was not reached


async def test_a_bounced_email_is_followed_by_one_sms_and_the_order_waits_for_it(
    make_pipeline: Callable[..., Any],
) -> None:
    async with make_pipeline(enabled=True) as p:
        order_id = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, order_id, "email")

        await p.report_email(email, "Bounced")
        # The bounce decided the fallback in its own transaction: the order is not complete, something is due.
        assert await p.order_status(order_id) == "Processed"
        assert [(row.state, row.reason) for row in await p.fallback_rows()] == [("due", "Failed_Bounced")]

        await p.drain()
        # The same bounce again, and once more after the SMS went: nothing more is sent.
        await p.report_email(email, "Bounced")
        await p.drain()
        await p.report_email(email, "Bounced")
        await p.drain()
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})
        assert p.emails_taken() == Counter({OLA_EMAIL: 1})
        email_after, sms = await p.notifications(order_id)
        assert (email_after.status, sms.channel, sms.address, sms.status) == (
            "Failed_Bounced",
            "sms",
            OLA_MOBILE,
            "Accepted",
        )
        assert (sms.fallback_of, sms.fallback_reason) == (email.id, "Failed_Bounced")
        assert await p.order_status(order_id) == "Processed"

        await p.report_sms(sms, DELIVERED)
        assert await p.order_status(order_id) == "Completed"

        # Where a client reads it: v1's lists, the v2 manifest and the status feed show both, and why.
        sms_list = (await p.client.get(f"{V1}/orders/{order_id}/notifications/sms", headers=p.auth())).json()
        assert [n["fallbackFor"] for n in sms_list["notifications"]] == [
            {"notificationId": email.id, "channel": "Email", "reason": "Failed_Bounced"}
        ]
        email_list = (await p.client.get(f"{V1}/orders/{order_id}/notifications/email", headers=p.auth())).json()
        assert [("fallbackFor" in n, n["sendStatus"]["status"]) for n in email_list["notifications"]] == [
            (False, "Failed_Bounced")
        ]
        manifest = (await p.client.get(f"{FUTURE}/shipment/{order_id}", headers=p.auth())).json()
        assert [(r["type"], r["destination"], r["status"], r.get("fallbackFor")) for r in manifest["recipients"]] == [
            ("Email", OLA_EMAIL, "Email_Failed_Bounced", None),
            ("SMS", OLA_MOBILE, "SMS_Delivered",
             {"notificationId": email.id, "type": "Email", "reason": "Email_Failed_Bounced"}),
        ]  # fmt: skip
        feed = (await p.client.get(f"{FUTURE}/shipment/feed", headers=p.auth())).json()
        assert [(r["status"], r.get("fallbackFor")) for entry in feed for r in entry["recipients"]] == [
            ("Email_Failed_Bounced", None),
            ("SMS_Delivered", {"notificationId": email.id, "type": "Email", "reason": "Email_Failed_Bounced"}),
        ]


async def test_an_undelivered_sms_of_a_v2_order_is_followed_by_one_email(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True) as p:
        order_id = await p.v2_order("SmsPreferred", BOTH)
        sms = await _sent_first(p, order_id, "sms")

        await p.report_sms(sms, NOT_DELIVERED)
        await p.report_sms(sms, NOT_DELIVERED)
        await p.drain()
        await p.report_sms(sms, NOT_DELIVERED)
        await p.drain()

        assert p.emails_taken() == Counter({OLA_EMAIL: 1})
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})
        email, sms_after = await p.notifications(order_id)
        assert (email.address, email.status, email.fallback_of, email.fallback_reason) == (
            OLA_EMAIL,
            "Succeeded",
            sms.id,
            "Failed_Undelivered",
        )
        assert sms_after.status == "Failed_Undelivered"
        await p.report_email(email, "Delivered")
        assert await p.order_status(order_id) == "Completed"
        manifest = (await p.client.get(f"{FUTURE}/shipment/{order_id}", headers=p.auth())).json()
        assert [r.get("fallbackFor") for r in manifest["recipients"]] == [
            {"notificationId": sms.id, "type": "SMS", "reason": "SMS_Failed_Undelivered"},
            None,
        ]


async def test_an_address_the_provider_refuses_at_send_falls_back(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True) as p:
        p.acs.answer_next(400, code="InvalidEmailAddress", message="Invalid format for email address.")
        order_id = await p.v1_order("EmailPreferred", BOTH)
        await p.drain()

        email, sms = await p.notifications(order_id)
        assert (email.status, sms.address, sms.fallback_of, sms.fallback_reason) == (
            "Failed_InvalidEmailFormat",
            OLA_MOBILE,
            email.id,
            "Failed_InvalidEmailFormat",
        )
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})


async def test_an_sms_expired_without_a_report_falls_back(make_pipeline: Callable[..., Any]) -> None:
    # A window longer than the SMS lives: the expiry sweeper's Failed_TTL decides it.
    async with make_pipeline(enabled=True, window_minutes=5000) as p:
        order_id = await p.v1_order("SmsPreferred", BOTH)
        sms = await _sent_first(p, order_id, "sms")

        p.advance(48 * 60 + 6)
        await p.drain()

        email, sms_after = await p.notifications(order_id)
        assert sms_after.status == "Failed_TTL"
        assert (email.address, email.fallback_of, email.fallback_reason) == (OLA_EMAIL, sms.id, "Failed_TTL")
        assert p.emails_taken() == Counter({OLA_EMAIL: 1})


async def test_concurrent_duplicate_reports_make_one_fallback(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True) as p:
        order_id = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, order_id, "email")

        await asyncio.gather(*(p.report_email(email, "Bounced") for _ in range(5)))
        await asyncio.gather(p.drain(), p.drain())
        await p.drain()

        assert p.sms_taken() == Counter({OLA_MOBILE: 1})
        assert [(row.state, row.reason) for row in await p.fallback_rows()] == [("sent", "Failed_Bounced")]


# ---------------------------------------------------------------- the window


async def test_no_report_within_the_window_sends_the_other_channel(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True, window_minutes=30) as p:
        order_id = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, order_id, "email")

        p.advance(29)
        await p.drain()
        assert p.sms_taken() == Counter()
        p.advance(1)
        await p.drain()

        assert p.sms_taken() == Counter({OLA_MOBILE: 1})
        _, sms = await p.notifications(order_id)
        assert (sms.fallback_of, sms.fallback_reason) == (email.id, "NoDeliveryReport")
        # The email's report, late, changes nothing more.
        await p.report_email(email, "Delivered")
        await p.drain()
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})
        assert await p.order_status(order_id) == "Processed"  # the SMS still awaits its report
        await p.report_sms(sms, DELIVERED)
        assert await p.order_status(order_id) == "Completed"
        manifest = (await p.client.get(f"{FUTURE}/shipment/{order_id}", headers=p.auth())).json()
        assert manifest["recipients"][1]["fallbackFor"] == {
            "notificationId": email.id,
            "type": "Email",
            "reason": "NoDeliveryReport",
        }


async def test_the_window_counts_from_the_hand_over(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True, window_minutes=30) as p:
        p.link.fail_next(1, status=503)
        order_id = await p.v1_order("SmsPreferred", BOTH)
        await p.drain()
        # The gateway failed the first attempt: the SMS goes out on its retry, 5 seconds later.
        assert [s.status for s in await p.notifications(order_id)] == ["New"]
        p.clock.advance(timedelta(seconds=5))
        await p.drain()
        assert [s.status for s in await p.notifications(order_id)] == ["Accepted"]

        p.clock.advance(timedelta(minutes=30, seconds=-5))
        await p.drain()
        assert p.emails_taken() == Counter()
        p.clock.advance(timedelta(seconds=5))
        await p.drain()
        assert p.emails_taken() == Counter({OLA_EMAIL: 1})


async def test_only_the_recipient_not_reached_falls_back(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True) as p:
        body = {"recipients": [{"nationalIdentityNumber": n} for n in (NOT_REGISTERED, BOTH, MOBILE_ONLY)]}
        order_id = await p.v1_order("EmailPreferred", BOTH, **body)
        await p.drain()
        sent = {s.address: s for s in await p.notifications(order_id)}
        assert {(s.channel, s.address, s.status) for s in sent.values()} == {
            ("email", None, "Failed_RecipientNotIdentified"),
            ("email", OLA_EMAIL, "Succeeded"),
            ("sms", KARI_MOBILE, "Accepted"),
        }
        await p.report_email(sent[OLA_EMAIL], "Bounced")
        await p.report_sms(sent[KARI_MOBILE], DELIVERED)
        await p.drain()

        assert p.sms_taken() == Counter({KARI_MOBILE: 1, OLA_MOBILE: 1})
        assert p.emails_taken() == Counter({OLA_EMAIL: 1})
        fallback = next(s for s in await p.notifications(order_id) if s.address == OLA_MOBILE)
        assert fallback.fallback_of == sent[OLA_EMAIL].id
        assert await p.order_status(order_id) == "Processed"
        await p.report_sms(fallback, DELIVERED)
        assert await p.order_status(order_id) == "Completed"


async def test_a_success_report_within_the_window_ends_it(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True, window_minutes=30) as p:
        order_id = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, order_id, "email")

        p.advance(10)
        await p.report_email(email, "Delivered")
        # Closed in the report's transaction: the order completes with it.
        assert await p.order_status(order_id) == "Completed"
        assert [row.state for row in await p.fallback_rows()] == ["closed"]
        p.advance(60 * 24)
        await p.drain()

        assert p.sms_taken() == Counter()
        assert [s.channel for s in await p.notifications(order_id)] == ["email"]


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_the_orders_own_window_applies_with_the_setting_off(make_pipeline: Callable[..., Any], api: str) -> None:
    async with make_pipeline(enabled=False, window_minutes=600) as p:
        make = p.v1_order if api == "v1" else p.v2_order
        order_id = await make("SmsPreferred", BOTH, fallbackAfterMinutes=5)
        sms = await _sent_first(p, order_id, "sms")

        p.advance(5)
        await p.drain()

        assert p.emails_taken() == Counter({OLA_EMAIL: 1})
        email, _ = await p.notifications(order_id)
        assert (email.fallback_of, email.fallback_reason) == (sms.id, "NoDeliveryReport")


async def test_a_registry_away_delays_the_fallback_and_a_long_outage_gives_it_up(
    make_pipeline: Callable[..., Any], database: Database
) -> None:
    registry = SwitchableRegistry(database)
    async with make_pipeline(registry=registry, enabled=True) as p:
        order_id = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, order_id, "email")
        second_id = await p.v1_order("EmailPreferred", BOTH)
        second = await _sent_first_of(p, second_id)

        registry.down = True
        await p.report_email(email, "Bounced")
        await p.drain()
        assert p.sms_taken() == Counter()
        assert [row.state for row in await p.fallback_rows() if str(row.order_id) == order_id] == ["due"]
        # Back within the backoff: the SMS goes out.
        registry.down = False
        p.advance(1)
        await p.drain()
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})

        # Away for longer than a notification lives (twice the expiry after the row was written): given up, and
        # the order completes with what it has.
        registry.down = True
        await p.report_email(second, "Bounced")
        await p.drain()
        p.advance(60 * 97)
        await p.drain()
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})
        assert await p.order_status(second_id) == "Completed"


async def test_due_fallbacks_are_looked_up_together(make_pipeline: Callable[..., Any], database: Database) -> None:
    registry = SwitchableRegistry(database)
    async with make_pipeline(registry=registry, enabled=True) as p:
        first = await p.v1_order("EmailPreferred", BOTH)
        second = await p.v1_order("EmailPreferred", ANNE)
        await p.drain()
        emails = [(await p.notifications(order_id))[0] for order_id in (first, second)]
        for email in emails:
            await p.report_email(email, "Bounced")
        registry.calls = []
        await p.drain()

        # One registry call for both recipients (as the order worker asks once per order, never per recipient).
        assert registry.calls == [sorted([BOTH, ANNE])]
        assert p.sms_taken() == Counter({OLA_MOBILE: 1, "+4790000005": 1})


async def _sent_first_of(p: Pipeline, order_id: str) -> Sent:
    await p.drain()
    (sent,) = await p.notifications(order_id)
    return sent


# ---------------------------------------------------------------- nothing more


async def test_no_second_address_means_nothing_more_and_the_order_completes(
    make_pipeline: Callable[..., Any],
) -> None:
    async with make_pipeline(enabled=True) as p:
        order_id = await p.v1_order("EmailPreferred", EMAIL_ONLY)
        email = await _sent_first(p, order_id, "email")

        await p.report_email(email, "Bounced")
        assert await p.order_status(order_id) == "Processed"
        await p.drain()

        assert p.sms_taken() == Counter()
        assert [s.channel for s in await p.notifications(order_id)] == ["email"]
        assert [row.state for row in await p.fallback_rows()] == ["no_address"]
        assert await p.order_status(order_id) == "Completed"
        feed = (await p.client.get(f"{FUTURE}/shipment/feed", headers=p.auth())).json()
        assert [entry["shipmentId"] for entry in feed] == [order_id]


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_with_the_setting_off_and_no_property_it_is_altinns_behaviour(
    make_pipeline: Callable[..., Any], api: str
) -> None:
    async with make_pipeline(enabled=False) as p:
        make = p.v1_order if api == "v1" else p.v2_order
        bounced = await make("EmailPreferred", BOTH)
        silent = await make("EmailPreferred", BOTH)
        await p.drain()
        first, second = [(await p.notifications(order_id))[0] for order_id in (bounced, silent)]

        await p.report_email(first, "Bounced")
        assert await p.order_status(bounced) == "Completed"
        p.advance(60 * 24)
        await p.drain()

        assert p.sms_taken() == Counter()
        assert await p.fallback_rows() == []
        assert [s.status for s in await p.notifications(silent)] == ["Succeeded"]
        await p.report_email(second, "Delivered")
        assert await p.order_status(silent) == "Completed"


async def test_channels_that_are_not_preferred_never_fall_back(make_pipeline: Callable[..., Any]) -> None:
    async with make_pipeline(enabled=True) as p:
        order_id = await p.v1_order("Email", BOTH, fallbackAfterMinutes=5)
        email = await _sent_first(p, order_id, "email")
        await p.report_email(email, "Bounced")
        await p.drain()

        assert p.sms_taken() == Counter()
        assert await p.order_status(order_id) == "Completed"


# ---------------------------------------------------------------- a fallback round that fails holds no order up


class MiscountingLookup(RecipientLookup):
    """The recipient look-up answering one recipient fewer than it was asked about (`miscounting`), as a look-up
    with a bug might: which answer is whose cannot be told."""

    miscounting = True

    async def resolve(self, recipients: Any, channel: Any, **options: Any) -> LookupResult:
        found = await super().resolve(recipients, channel, **options)
        return LookupResult(found.recipients[:-1]) if self.miscounting else found


async def test_a_lookup_answering_the_wrong_number_retries_the_fallbacks_and_orders_go_on(
    make_pipeline: Callable[..., Any], database: Database, clock: FrozenClock
) -> None:
    async with make_pipeline(enabled=True) as p:
        first = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, first, "email")
        lookup = MiscountingLookup(LocalRegistry(database), clock)
        # The order worker's fallback round looks up with it (build takes a registry, not a look-up).
        p.varsel.workers.processor.fallback._lookup = lookup

        await p.report_email(email, "Bounced")
        second = await p.v1_order("Email", ANNE)
        await p.drain()
        # The fallback waits for another try; the order placed meanwhile was processed all the same.
        assert p.sms_taken() == Counter()
        assert [row.state for row in await p.fallback_rows() if str(row.order_id) == first] == ["due"]
        assert await p.order_status(second) == "Processed"

        lookup.miscounting = False
        p.advance(1)
        await p.drain()
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})


async def test_a_fallback_round_that_fails_does_not_stop_the_orders(
    make_pipeline: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_pipeline(enabled=True) as p:
        first = await p.v1_order("EmailPreferred", BOTH)
        email = await _sent_first(p, first, "email")
        fallback = p.varsel.workers.processor.fallback
        rounds: list[str] = []

        async def broken() -> int:
            rounds.append("failed")
            raise RuntimeError("a bug the fallback round trips over")

        monkeypatch.setattr(fallback, "run_once", broken)
        await p.report_email(email, "Bounced")
        second = await p.v1_order("Email", ANNE)
        await p.drain()
        assert await p.order_status(second) == "Processed"
        # Tried again with backoff, not in every round: the drain ended.
        assert rounds == ["failed"]

        monkeypatch.undo()
        p.advance(1)
        await p.drain()
        assert p.sms_taken() == Counter({OLA_MOBILE: 1})


async def test_a_fallback_round_reads_its_orders_at_once_and_completes_them_last(
    make_pipeline: Callable[..., Any], database: Database
) -> None:
    """The round's transactions read the claimed rows' recipients and orders with one query each, whatever their
    number, and complete orders (which takes the status feed's lock until commit, on PostgreSQL) after all of it:
    no query waits in the lock that every order's completion queues on."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite's writer has its own connection; the feed's lock is PostgreSQL's")
    async with make_pipeline(enabled=True, window_minutes=5) as p:
        # Three orders with a fallback due, one whose email failed with no second address (it ends, and its order
        # completes, in the round's write), and one whose email was delivered with its watch left open (as when the
        # report's decision was lost): the round's look at it closes it, and its order completes in the claim's
        # transaction.
        ids = [await p.v1_order("EmailPreferred", nin) for nin in (BOTH, ANNE, BOTH)]
        no_second = await p.v1_order("EmailPreferred", EMAIL_ONLY)
        delivered = await p.v1_order("EmailPreferred", ANNE)
        await p.drain()
        for order_id in [*ids, no_second]:
            await p.report_email((await p.notifications(order_id))[0], "Bounced")
        while await p.varsel.workers.reports.run_once():
            pass
        async with database.transaction() as conn:
            table = NOTIFICATION_TABLES["email"]
            await conn.execute(update(table).where(table.c.order_id == uuid.UUID(delivered)).values(status="Delivered"))
        p.advance(5)
        statements: list[str] = []

        def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(" ".join(statement.split()))

        def committed(conn: Any) -> None:
            statements.append("COMMIT")

        engine = database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", executed)
        event.listen(engine, "commit", committed)
        try:
            await p.varsel.workers.processor.fallback.run_once()
        finally:
            event.remove(engine, "before_cursor_execute", executed)
            event.remove(engine, "commit", committed)

        assert len([s for s in statements if s.startswith("SELECT order_recipients.")]) == 1
        assert len([s for s in statements if s.startswith("SELECT orders.")]) == 1
        locks = [i for i, s in enumerate(statements) if "pg_advisory_xact_lock" in s]
        assert len(locks) == 2  # the claim's transaction and the write's each complete an order
        for lock in locks:
            # After the lock: the feed entries (and their webhook events) and the workers' wake-up, nothing else.
            after = statements[lock + 1 : statements.index("COMMIT", lock)]
            assert [s for s in after if not s.startswith(("INSERT INTO status_feed", "SELECT pg_notify("))] == []
        assert await p.order_status(delivered) == "Completed"
        assert await p.order_status(no_second) == "Completed"
        assert p.sms_taken() == Counter()  # handed to the sender worker, not yet sent
