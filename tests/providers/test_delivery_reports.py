"""Delivery-report webhooks through the real app, on SQLite and PostgreSQL: LINK Mobility (SMS) and Event Grid (ACS
email). Orders go in through the v1 API and out through a provider that accepts without knowing of delivery; the
reports are then posted in each provider's own format, and what became of each is checked in the database and the
API."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Table, select

from tests.conftest import NOW
from tests.providers.linkmobility_peer import delivery_report
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import delivery_reports, email_notifications, orders, sms_notifications
from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.providers.base import Accepted, EmailMessage, PermanentEmailError, PermanentSmsError, SmsMessage
from varsel.settings import Settings

V1 = "/notifications/api/v1"
LINK_URL = f"{V1}/reports/sms/linkmobility"
ACS_URL = f"{V1}/reports/email/acs"
GATE_USER, GATE_PASSWORD = "linkgate", "rapport-hemmelig"
ACCESS_KEY = "eg+k3y/with=url&chars"
Auth = Callable[..., dict[str, str]]

# Addresses the test providers refuse outright, so their notifications end failed at send.
REFUSED_NUMBER = "+4799999999"
REFUSED_ADDRESS = "refused@example.com"


class QuietSmsProvider:
    """Takes every SMS (except to REFUSED_NUMBER) and knows nothing of delivery: the gateway's messageId is all."""

    name = "quiet-sms"

    def __init__(self) -> None:
        self.sent: list[SmsMessage] = []
        # Runs while the provider has the message, before it answers (a gateway reporting at once).
        self.during_send: Callable[[SmsMessage], Awaitable[None]] | None = None

    async def send(self, message: SmsMessage) -> Accepted:
        if self.during_send is not None:
            await self.during_send(message)
        if message.to_number == REFUSED_NUMBER:
            raise PermanentSmsError("invalid destination", SmsStatus.FAILED_INVALID_RECIPIENT)
        self.sent.append(message)
        return Accepted(reference=f"lm-{message.notification_id.hex[:12]}", delivered=False)

    async def close(self) -> None:
        return None


class QuietEmailProvider:
    """Takes every email (except to REFUSED_ADDRESS); ACS names the operation after the notification id."""

    name = "quiet-email"

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.during_send: Callable[[EmailMessage], Awaitable[None]] | None = None

    async def send(self, message: EmailMessage) -> Accepted:
        if self.during_send is not None:
            await self.during_send(message)
        if message.to_address == REFUSED_ADDRESS:
            raise PermanentEmailError("invalid format", EmailStatus.FAILED_INVALID_EMAIL_FORMAT)
        self.sent.append(message)
        return Accepted(reference=str(message.notification_id), delivered=False)

    async def close(self) -> None:
        return None


def _event(message_id: str, status: str, **data: Any) -> dict[str, Any]:
    """One Event Grid event (Event Grid schema) as ACS posts an email delivery report."""
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/x/resourceGroups/y/providers/microsoft.communication/communicationservices/z",
        "subject": f"sender/noreply@varsel.local/message/{message_id}",
        "eventType": "Microsoft.Communication.EmailDeliveryReportReceived",
        "eventTime": "2026-03-02T10:00:06.822Z",
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "data": {
            "sender": "noreply@varsel.local",
            "recipient": "a@example.com",
            "messageId": message_id,
            "status": status,
            "deliveryStatusDetails": {"statusMessage": "No error."},
            "deliveryAttemptTimeStamp": "2026-03-02T10:00:05.2855749+00:00",
            **data,
        },
    }


@dataclass(frozen=True)
class Channel:
    """What differs between the SMS (LINK Mobility) and the email (Event Grid) side of these tests."""

    name: str
    table: Table
    awaiting: str  # the status a report is applied to
    failed: str  # what the failure report below maps to
    provider: str

    @property
    def order_path(self) -> str:
        return f"/orders/{self.name}"

    def order(self, *addresses: str) -> dict[str, Any]:
        if self.name == "sms":
            return {"body": "Hei", "recipients": [{"mobileNumber": a} for a in addresses]}
        return {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": a} for a in addresses]}

    def addresses(self, n: int) -> list[str]:
        if self.name == "sms":
            return [f"+479000000{i}" for i in range(1, n + 1)]
        return [f"r{i}@example.com" for i in range(1, n + 1)]

    @property
    def refused(self) -> str:
        return REFUSED_NUMBER if self.name == "sms" else REFUSED_ADDRESS

    def report(self, reference: str, provider_reference: str, outcome: str = "delivered") -> Any:
        """A report body in the provider's own format; outcome "delivered" or "failed"."""
        if self.name == "sms":
            return delivery_report(reference, provider_reference, 1001 if outcome == "delivered" else 1006)
        return [_event(reference, "Delivered" if outcome == "delivered" else "Bounced")]

    async def post(self, client: httpx.AsyncClient, body: Any, **kwargs: Any) -> httpx.Response:
        content = body if isinstance(body, bytes | AsyncIterable) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        if self.name == "sms":
            kwargs.setdefault("auth", (GATE_USER, GATE_PASSWORD))
            return await client.post(LINK_URL, content=content, headers=headers, **kwargs)
        params = kwargs.pop("params", {"accesskey": ACCESS_KEY})
        return await client.post(ACS_URL, content=content, headers=headers, params=params, **kwargs)


SMS = Channel("sms", sms_notifications, SmsStatus.ACCEPTED.value, SmsStatus.FAILED_UNDELIVERED.value, "linkmobility")
EMAIL = Channel("email", email_notifications, EmailStatus.SUCCEEDED.value, EmailStatus.FAILED_BOUNCED.value, "acs")


@pytest.fixture(params=[SMS, EMAIL], ids=["linkmobility", "acs"])
def channel(request: pytest.FixtureRequest) -> Channel:
    value: Channel = request.param
    return value


def _with_reports(settings: Settings, **report_settings: Any) -> Settings:
    return settings.model_copy(
        update={
            "sms": settings.sms.model_copy(
                update={
                    "linkmobility": settings.sms.linkmobility.model_copy(
                        update={"report_username": GATE_USER, "report_password": SecretStr(GATE_PASSWORD)}
                    )
                }
            ),
            "email": settings.email.model_copy(
                update={"acs": settings.email.acs.model_copy(update={"report_access_key": SecretStr(ACCESS_KEY)})}
            ),
            "reports": settings.reports.model_copy(update=report_settings),
        }
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return _with_reports(Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": []}))


@pytest.fixture
def sms_provider() -> QuietSmsProvider:
    return QuietSmsProvider()


@pytest.fixture
def email_provider() -> QuietEmailProvider:
    return QuietEmailProvider()


@pytest.fixture
async def varsel(
    settings: Settings,
    database: Database,
    clock: FrozenClock,
    sms_provider: QuietSmsProvider,
    email_provider: QuietEmailProvider,
) -> AsyncIterator[Varsel]:
    services = build(settings, clock=clock, database=database, email_provider=email_provider, sms_provider=sms_provider)
    yield services
    await services.http.aclose()


async def _order(client: httpx.AsyncClient, auth: Auth, channel: Channel, *addresses: str) -> str:
    response = await client.post(f"{V1}{channel.order_path}", json=channel.order(*addresses), headers=auth())
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


@dataclass(frozen=True)
class Sent:
    id: str
    address: str
    status: str
    provider_reference: str | None
    status_changed: Any


async def _notifications(database: Database, channel: Channel) -> dict[str, Sent]:
    """The channel's notifications by address."""
    table = channel.table
    address = table.c.mobile_number if channel.name == "sms" else table.c.email_address
    async with database.read() as conn:
        rows = await conn.execute(
            select(
                table.c.id, address.label("address"), table.c.status, table.c.provider_reference, table.c.status_changed
            )
        )
        return {
            row.address: Sent(str(row.id), row.address, row.status, row.provider_reference, row.status_changed)
            for row in rows
        }


async def _order_status(database: Database, order_id: str) -> str:
    async with database.read() as conn:
        rows = await conn.execute(select(orders.c.id, orders.c.status))
        return next(str(row.status) for row in rows if str(row.id) == order_id)


async def _reports(database: Database) -> list[Any]:
    async with database.read() as conn:
        return list(await conn.execute(select(delivery_reports).order_by(delivery_reports.c.received)))


async def _sent_order(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, channel: Channel, *addresses: str
) -> tuple[str, dict[str, Sent]]:
    """An order sent to the provider, its notifications awaiting their reports."""
    order_id = await _order(client, auth, channel, *addresses)
    await varsel.workers.drain()
    sent = await _notifications(varsel.database, channel)
    assert {a: s.status for a, s in sent.items() if a != channel.refused} == dict.fromkeys(
        [a for a in addresses if a != channel.refused], channel.awaiting
    )
    assert await _order_status(varsel.database, order_id) == "Processed"
    return order_id, sent


def _report_of(channel: Channel, sent: Sent, outcome: str = "delivered") -> Any:
    assert sent.provider_reference is not None
    return channel.report(sent.id, sent.provider_reference, outcome)


def _is_problem(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == status


# ---------------------------------------------------------------- applied


async def test_reports_settle_the_notifications_and_complete_the_order(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, channel: Channel
) -> None:
    first, second = channel.addresses(2)
    order_id, sent = await _sent_order(client, auth, varsel, channel, first, second)

    clock.advance(timedelta(minutes=1))
    answer = await channel.post(client, _report_of(channel, sent[first]))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "states": {"applied": 1}}
    now = await _notifications(varsel.database, channel)
    assert (now[first].status, now[second].status) == ("Delivered", channel.awaiting)
    assert now[first].status_changed == NOW + timedelta(minutes=1)
    # One notification still awaits its report: the order is not done yet.
    assert await _order_status(varsel.database, order_id) == "Processed"

    answer = await channel.post(client, _report_of(channel, sent[second], "failed"))
    assert answer.json() == {"received": 1, "states": {"applied": 1}}
    now = await _notifications(varsel.database, channel)
    assert (now[first].status, now[second].status) == ("Delivered", channel.failed)
    assert await _order_status(varsel.database, order_id) == "Completed"

    listed = (await client.get(f"{V1}/orders/{order_id}/notifications/{channel.name}", headers=auth())).json()
    shown = {n["id"]: (n["sendStatus"]["status"], n["succeeded"]) for n in listed["notifications"]}
    assert shown == {sent[first].id: ("Delivered", True), sent[second].id: (channel.failed, False)}
    assert (listed["generated"], listed["succeeded"]) == (2, 1)

    rows = await _reports(varsel.database)
    assert [(str(r.notification_id), r.status, r.state) for r in rows] == [
        (sent[first].id, "Delivered", "applied"),
        (sent[second].id, channel.failed, "applied"),
    ]
    assert all((r.channel, r.provider, r.attempts) == (channel.name, channel.provider, 1) for r in rows)
    assert all(r.resolved == NOW + timedelta(minutes=1) and r.next_attempt is None for r in rows)
    assert rows[0].reference == sent[first].id
    assert rows[0].provider_reference == sent[first].provider_reference
    assert rows[0].occurred is not None


async def test_a_batch_of_reports_answers_what_became_of_each(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, channel: Channel
) -> None:
    first, second = channel.addresses(2)
    order_id, sent = await _sent_order(client, auth, varsel, channel, first, second)
    unknown = str(uuid.uuid4())
    if channel.name == "sms":
        body: Any = [
            delivery_report(sent[first].id, str(sent[first].provider_reference)),
            delivery_report(sent[second].id, str(sent[second].provider_reference), 1006),
            delivery_report(unknown, "lm-unknown"),
            delivery_report(sent[first].id, str(sent[first].provider_reference), 1000),  # intermediate: no report
        ]
    else:
        body = [
            _event(sent[first].id, "Delivered"),
            _event(sent[second].id, "Bounced"),
            _event(unknown, "Delivered"),
            _event(sent[first].id, "Expanded"),  # not final: no report
        ]
    answer = await channel.post(client, body)
    assert answer.json() == {"received": 3, "states": {"applied": 2, "pending": 1}}
    now = await _notifications(varsel.database, channel)
    assert (now[first].status, now[second].status) == ("Delivered", channel.failed)
    assert await _order_status(varsel.database, order_id) == "Completed"
    assert sorted(r.state for r in await _reports(varsel.database)) == ["applied", "applied", "pending"]


async def test_a_report_naming_only_the_providers_id_is_matched_by_it(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    # A gate that does not mirror our refId: the messageId the gateway answered at send still finds the SMS.
    (number,) = SMS.addresses(1)
    order_id, sent = await _sent_order(client, auth, varsel, SMS, number)
    answer = await SMS.post(client, delivery_report("not-our-id", str(sent[number].provider_reference)))
    assert answer.json() == {"received": 1, "states": {"applied": 1}}
    assert (await _notifications(varsel.database, SMS))[number].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"
    (row,) = await _reports(varsel.database)
    assert (row.reference, str(row.notification_id), row.state) == ("not-our-id", sent[number].id, "applied")


async def test_a_cloud_events_report_is_applied_too(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    (address,) = EMAIL.addresses(1)
    order_id, sent = await _sent_order(client, auth, varsel, EMAIL, address)
    classic = _event(sent[address].id, "Delivered")
    cloud_event = {
        "id": classic["id"],
        "source": classic["topic"],
        "specversion": "1.0",
        "type": classic["eventType"],
        "subject": classic["subject"],
        "time": classic["eventTime"],
        "data": classic["data"],
    }
    answer = await EMAIL.post(client, cloud_event, headers={"Content-Type": "application/cloudevents+json"})
    assert answer.json() == {"received": 1, "states": {"applied": 1}}
    assert (await _notifications(varsel.database, EMAIL))[address].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"


# ---------------------------------------------------------------- duplicate, late, superseded


async def test_the_same_report_twice_changes_nothing_the_second_time(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, channel: Channel
) -> None:
    (address,) = channel.addresses(1)
    order_id, sent = await _sent_order(client, auth, varsel, channel, address)
    report = _report_of(channel, sent[address], "failed")
    assert (await channel.post(client, report)).json()["states"] == {"applied": 1}
    settled = (await _notifications(varsel.database, channel))[address]
    clock.advance(timedelta(minutes=3))
    assert (await channel.post(client, report)).json() == {"received": 1, "states": {"duplicate": 1}}
    assert (await _notifications(varsel.database, channel))[address] == settled
    assert settled.status == channel.failed
    assert await _order_status(varsel.database, order_id) == "Completed"
    rows = await _reports(varsel.database)
    assert [(r.state, str(r.notification_id)) for r in rows] == [
        ("applied", sent[address].id),
        ("duplicate", sent[address].id),
    ]


async def test_the_same_report_posted_concurrently_is_applied_once_and_kept_as_duplicates(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, channel: Channel
) -> None:
    (address,) = channel.addresses(1)
    order_id, sent = await _sent_order(client, auth, varsel, channel, address)
    report = _report_of(channel, sent[address])
    # A provider that resends a report it got no answer for, while the first post is still being handled.
    answers = await asyncio.gather(*(channel.post(client, report) for _ in range(4)))
    assert sorted(next(iter(a.json()["states"])) for a in answers) == ["applied", "duplicate", "duplicate", "duplicate"]
    assert (await _notifications(varsel.database, channel))[address].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"
    assert sorted(r.state for r in await _reports(varsel.database)) == [
        "applied",
        "duplicate",
        "duplicate",
        "duplicate",
    ]


@pytest.mark.parametrize("swept", [False, True], ids=["awaiting", "failed-ttl"])
async def test_a_report_after_expiry_is_kept_late_and_changes_nothing(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, channel: Channel, swept: bool
) -> None:
    (address,) = channel.addresses(1)
    order_id, sent = await _sent_order(client, auth, varsel, channel, address)
    # 48 hours to live from the send time; a second past it, the report is too late.
    clock.advance(timedelta(hours=48, seconds=1))
    expected = channel.awaiting
    if swept:
        # Past the sweeper's grace for reports as well: the notification has ended Failed_TTL.
        clock.advance(timedelta(minutes=10))
        await varsel.workers.drain()
        expected = "Failed_TTL"
        assert await _order_status(varsel.database, order_id) == "Completed"
    before = (await _notifications(varsel.database, channel))[address]
    assert before.status == expected
    answer = await channel.post(client, _report_of(channel, sent[address]))
    assert answer.json() == {"received": 1, "states": {"late": 1}}
    assert (await _notifications(varsel.database, channel))[address] == before
    (row,) = await _reports(varsel.database)
    assert (row.state, str(row.notification_id), row.status) == ("late", sent[address].id, "Delivered")
    assert row.next_attempt is None
    await varsel.workers.drain()
    assert (await _notifications(varsel.database, channel))[address].status == expected


async def test_a_report_at_the_moment_of_expiry_still_counts(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, channel: Channel
) -> None:
    (address,) = channel.addresses(1)
    order_id, sent = await _sent_order(client, auth, varsel, channel, address)
    clock.advance(timedelta(hours=48))
    answer = await channel.post(client, _report_of(channel, sent[address]))
    assert answer.json() == {"received": 1, "states": {"applied": 1}}
    assert (await _notifications(varsel.database, channel))[address].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"


async def test_a_final_status_never_moves_back(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, channel: Channel
) -> None:
    (address,) = channel.addresses(1)
    order_id, sent = await _sent_order(client, auth, varsel, channel, address, channel.refused)
    assert sent[channel.refused].status.startswith("Failed_")  # refused at send: final without any report
    assert (await channel.post(client, _report_of(channel, sent[address]))).json()["states"] == {"applied": 1}
    delivered = (await _notifications(varsel.database, channel))[address]
    clock.advance(timedelta(minutes=1))

    # Delivered, then a report of failure: kept, superseded.
    answer = await channel.post(client, _report_of(channel, sent[address], "failed"))
    assert answer.json() == {"received": 1, "states": {"superseded": 1}}
    # Failed at send, then a report of delivery (matched by our id; the refusal left no provider reference).
    refused = sent[channel.refused]
    answer = await channel.post(client, channel.report(refused.id, "lm-none", "delivered"))
    assert answer.json() == {"received": 1, "states": {"superseded": 1}}

    now = await _notifications(varsel.database, channel)
    assert now[address] == delivered
    assert now[channel.refused] == refused
    assert await _order_status(varsel.database, order_id) == "Completed"
    rows = await _reports(varsel.database)
    assert [(r.state, str(r.notification_id)) for r in rows] == [
        ("applied", sent[address].id),
        ("superseded", sent[address].id),
        ("superseded", refused.id),
    ]


# ---------------------------------------------------------------- pending and dead


async def test_a_report_before_our_own_record_of_the_send_is_applied_once_it_lands(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: Channel
) -> None:
    (address,) = channel.addresses(1)
    order_id = await _order(client, auth, channel, address)
    await varsel.workers.processor.run_once()  # generated: New, not yet handed to the provider
    (new,) = (await _notifications(varsel.database, channel)).values()
    assert new.status == "New"
    # A fast provider reports before the sender's write of its answer commits.
    answer = await channel.post(client, channel.report(new.id, f"lm-{uuid.UUID(new.id).hex[:12]}"))
    assert answer.json() == {"received": 1, "states": {"pending": 1}}
    (row,) = await _reports(varsel.database)
    assert (row.state, str(row.notification_id), row.attempts) == ("pending", new.id, 1)
    assert row.next_attempt == NOW + timedelta(seconds=settings.reports.retry_seconds)

    await varsel.workers.drain()  # the send is recorded; the report is not due for another try yet
    assert (await _notifications(varsel.database, channel))[address].status == channel.awaiting
    assert (await _reports(varsel.database))[0].state == "pending"

    clock.advance(timedelta(seconds=settings.reports.retry_seconds))
    await varsel.workers.drain()
    assert (await _notifications(varsel.database, channel))[address].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"
    (row,) = await _reports(varsel.database)
    assert (row.state, row.attempts, row.next_attempt) == ("applied", 2, None)
    assert row.resolved == clock.now()


async def test_a_report_that_arrived_in_time_counts_though_it_is_matched_after_expiry(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: Channel
) -> None:
    (address,) = channel.addresses(1)
    order_id = await _order(client, auth, channel, address)
    await varsel.workers.processor.run_once()
    (new,) = (await _notifications(varsel.database, channel)).values()
    # A second before expiry the provider reports, faster than our record of the hand-over: pending.
    clock.advance(timedelta(hours=48, seconds=-1))
    answer = await channel.post(client, channel.report(new.id, f"lm-{uuid.UUID(new.id).hex[:12]}"))
    assert answer.json() == {"received": 1, "states": {"pending": 1}}
    await varsel.workers.drain()
    assert (await _notifications(varsel.database, channel))[address].status == channel.awaiting
    # Its next try comes after expiry; it arrived in time, so it counts.
    clock.advance(timedelta(seconds=settings.reports.retry_seconds))
    await varsel.workers.drain()
    assert (await _notifications(varsel.database, channel))[address].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"
    assert [row.state for row in await _reports(varsel.database)] == ["applied"]


async def test_a_report_posted_while_the_send_is_under_way_is_applied_after_it(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    settings: Settings,
    channel: Channel,
    sms_provider: QuietSmsProvider,
    email_provider: QuietEmailProvider,
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def report_at_once(message: Any) -> None:
        # The gateway reports delivery before it has answered our send: the notification is still Sending.
        reference = f"lm-{message.notification_id.hex[:12]}"
        status = (await _notifications(varsel.database, channel))[
            message.to_number if channel.name == "sms" else message.to_address
        ].status
        answer = await channel.post(client, channel.report(str(message.notification_id), reference))
        seen.append((status, answer.json()))

    sms_provider.during_send = report_at_once
    email_provider.during_send = report_at_once
    (address,) = channel.addresses(1)
    order_id = await _order(client, auth, channel, address)
    await varsel.workers.drain()
    assert seen == [("Sending", {"received": 1, "states": {"pending": 1}})]
    assert (await _notifications(varsel.database, channel))[address].status == channel.awaiting
    clock.advance(timedelta(seconds=settings.reports.retry_seconds))
    await varsel.workers.drain()
    assert (await _notifications(varsel.database, channel))[address].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"
    assert [r.state for r in await _reports(varsel.database)] == ["applied"]


async def test_a_report_posted_twice_before_the_send_is_recorded_is_applied_once(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: Channel
) -> None:
    (address,) = channel.addresses(1)
    order_id = await _order(client, auth, channel, address)
    await varsel.workers.processor.run_once()
    (new,) = (await _notifications(varsel.database, channel)).values()
    report = channel.report(new.id, f"lm-{uuid.UUID(new.id).hex[:12]}", "failed")
    for _ in range(2):  # the gate posts again when it did not get our answer in time
        assert (await channel.post(client, report)).json()["states"] == {"pending": 1}
    await varsel.workers.drain()
    clock.advance(timedelta(seconds=settings.reports.retry_seconds))
    assert await varsel.reports.run_once() == 2
    assert (await _notifications(varsel.database, channel))[address].status == channel.failed
    assert sorted(r.state for r in await _reports(varsel.database)) == ["applied", "duplicate"]
    assert await _order_status(varsel.database, order_id) == "Completed"


async def test_a_pending_report_whose_notification_failed_at_send_is_superseded(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: Channel
) -> None:
    order_id = await _order(client, auth, channel, channel.refused)
    await varsel.workers.processor.run_once()
    (new,) = (await _notifications(varsel.database, channel)).values()
    assert (await channel.post(client, channel.report(new.id, "lm-x"))).json()["states"] == {"pending": 1}
    await varsel.workers.drain()
    clock.advance(timedelta(seconds=settings.reports.retry_seconds))
    assert await varsel.reports.run_once() == 1
    failed = (await _notifications(varsel.database, channel))[channel.refused]
    assert failed.status.startswith("Failed_")
    assert [r.state for r in await _reports(varsel.database)] == ["superseded"]
    assert await _order_status(varsel.database, order_id) == "Completed"


@pytest.mark.parametrize("reference", ["uuid", "not-a-uuid"])
async def test_a_report_that_never_matches_goes_dead_and_can_be_retried(
    client: httpx.AsyncClient, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: Channel, reference: str
) -> None:
    unknown = str(uuid.uuid4()) if reference == "uuid" else "not-a-uuid"
    answer = await channel.post(client, channel.report(unknown, "lm-unknown"))
    assert answer.json() == {"received": 1, "states": {"pending": 1}}
    retry = timedelta(seconds=settings.reports.retry_seconds)
    window = timedelta(minutes=settings.reports.retry_window_minutes)

    assert await varsel.reports.run_once() == 0  # not due yet
    clock.advance(retry)
    assert await varsel.reports.run_once() == 1
    (row,) = await _reports(varsel.database)
    assert (row.state, row.attempts, row.next_attempt) == ("pending", 2, NOW + 2 * retry)
    assert row.retry_until == NOW + window
    assert await varsel.reports.dead() == []

    clock.set(NOW + window)
    await varsel.workers.drain()
    (row,) = await _reports(varsel.database)
    assert (row.state, row.reference, row.notification_id, row.next_attempt) == ("dead", unknown, None, None)
    assert row.resolved == NOW + window
    (dead,) = await varsel.reports.dead()
    assert (dead.id, dead.reference, dead.channel) == (row.id, unknown, channel.name)
    await varsel.workers.drain()
    assert (await _reports(varsel.database))[0].state == "dead"  # dead stays dead: nothing retries it by itself

    clock.advance(timedelta(hours=1))
    assert await varsel.reports.retry(None) == 1
    assert await varsel.reports.dead() == []
    (row,) = await _reports(varsel.database)
    assert (row.state, row.next_attempt, row.resolved) == ("pending", clock.now(), None)
    assert row.retry_until == clock.now() + window
    assert await varsel.reports.run_once() == 1  # due at once, and tried again for another window
    assert (await _reports(varsel.database))[0].state == "pending"


async def test_a_dead_report_retried_after_its_notification_was_sent_is_applied(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: Channel
) -> None:
    # The report came while the notification waited to be sent, and the sending took longer than the retry window
    # (a provider outage, say): the report went dead. Once the notification is sent, an operator's retry applies it.
    (address,) = channel.addresses(1)
    order_id = await _order(client, auth, channel, address)
    await varsel.workers.processor.run_once()
    (new,) = (await _notifications(varsel.database, channel)).values()
    assert (await channel.post(client, channel.report(new.id, "lm-x"))).json()["states"] == {"pending": 1}
    clock.advance(timedelta(minutes=settings.reports.retry_window_minutes))
    assert await varsel.reports.run_once() == 1
    assert [r.state for r in await varsel.reports.dead()] == ["dead"]

    await varsel.workers.drain()  # now sent; a dead report is not retried by itself
    assert (await _notifications(varsel.database, channel))[address].status == channel.awaiting
    assert await _order_status(varsel.database, order_id) == "Processed"

    assert await varsel.reports.retry(None) == 1
    await varsel.workers.drain()
    assert (await _notifications(varsel.database, channel))[address].status == "Delivered"
    assert await _order_status(varsel.database, order_id) == "Completed"
    (row,) = await _reports(varsel.database)
    assert (row.state, str(row.notification_id), row.attempts) == ("applied", new.id, 3)


async def test_retrying_chosen_dead_reports_leaves_the_others_dead(
    client: httpx.AsyncClient, varsel: Varsel, clock: FrozenClock, settings: Settings, channel: Channel
) -> None:
    for _ in range(2):
        await channel.post(client, channel.report(str(uuid.uuid4()), "lm-unknown"))
    clock.advance(timedelta(minutes=settings.reports.retry_window_minutes))
    assert await varsel.reports.run_once() == 2
    first, second = await varsel.reports.dead()
    assert await varsel.reports.retry([first.id]) == 1
    states = {r.id: r.state for r in await _reports(varsel.database)}
    assert states == {first.id: "pending", second.id: "dead"}


# ---------------------------------------------------------------- refused requests


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        _basic(GATE_USER, "wrong"),
        _basic("someone", GATE_PASSWORD),
        _basic(GATE_USER, ""),
        {"Authorization": f"Bearer {GATE_PASSWORD}"},
        {"Authorization": "Basic not-base64!"},
    ],
    ids=["none", "wrong-password", "wrong-user", "empty-password", "bearer", "garbled"],
)
async def test_linkmobility_reports_without_the_gates_credentials_are_refused(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, headers: dict[str, str]
) -> None:
    (number,) = SMS.addresses(1)
    _, sent = await _sent_order(client, auth, varsel, SMS, number)
    body = json.dumps(_report_of(SMS, sent[number])).encode()
    answer = await client.post(LINK_URL, content=body, headers={"Content-Type": "application/json", **headers})
    _is_problem(answer, 401)
    assert answer.headers["www-authenticate"].startswith("Basic")
    assert await _reports(varsel.database) == []
    assert (await _notifications(varsel.database, SMS))[number].status == SMS.awaiting


@pytest.mark.parametrize(
    "params", [{}, {"accesskey": "wrong"}, {"accesskey": ""}, {"accesskey": ACCESS_KEY.upper()}], ids=str
)
async def test_event_grid_reports_without_the_access_key_are_refused(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, params: dict[str, str]
) -> None:
    (address,) = EMAIL.addresses(1)
    _, sent = await _sent_order(client, auth, varsel, EMAIL, address)
    answer = await EMAIL.post(client, _report_of(EMAIL, sent[address]), params=params)
    _is_problem(answer, 401)
    handshake = await client.options(ACS_URL, params=params, headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    _is_problem(handshake, 401)
    assert "webhook-allowed-origin" not in handshake.headers
    assert await _reports(varsel.database) == []
    assert (await _notifications(varsel.database, EMAIL))[address].status == EMAIL.awaiting


async def test_the_access_key_may_come_in_a_header(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    (address,) = EMAIL.addresses(1)
    _, sent = await _sent_order(client, auth, varsel, EMAIL, address)
    answer = await EMAIL.post(
        client, _report_of(EMAIL, sent[address]), params={}, headers={"x-varsel-access-key": ACCESS_KEY}
    )
    assert answer.json()["states"] == {"applied": 1}


async def test_reports_not_configured_are_not_found(
    database: Database, clock: FrozenClock, tmp_path: Path, channel: Channel
) -> None:
    unconfigured = Settings(data_dir=tmp_path / "var2", conditions={"allowed_hosts": []})
    services = build(
        unconfigured,
        clock=clock,
        database=database,
        email_provider=QuietEmailProvider(),
        sms_provider=QuietSmsProvider(),
    )
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            # Whatever credentials come along: there is nothing to match them against.
            answer = await channel.post(client, channel.report(str(uuid.uuid4()), "lm-1"), params={"accesskey": ""})
            _is_problem(answer, 404)
            if channel.name == "email":
                _is_problem(await client.options(ACS_URL), 404)
    finally:
        await services.http.aclose()
    assert await _reports(database) == []


async def test_an_oversized_report_is_refused_before_it_is_read(
    settings: Settings, database: Database, clock: FrozenClock, channel: Channel
) -> None:
    small = _with_reports(settings, max_body_bytes=1000)
    services = build(
        small, clock=clock, database=database, email_provider=QuietEmailProvider(), sms_provider=QuietSmsProvider()
    )
    if channel.name == "sms":
        body = json.dumps([delivery_report(str(uuid.uuid4()), f"lm-{i}") for i in range(10)]).encode()
    else:
        body = json.dumps([_event(str(uuid.uuid4()), "Delivered") for _ in range(10)]).encode()
    assert len(body) > 1000

    async def streamed() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            _is_problem(await channel.post(client, body), 413)  # declared too long
            _is_problem(await channel.post(client, streamed()), 413)  # no length declared: counted as it comes
            # At the limit it is read (and this one is a valid, if unmatched, report).
            one = json.dumps(channel.report(str(uuid.uuid4()), "lm-1")).encode()
            assert len(one) <= 1000
            assert (await channel.post(client, one)).status_code == 200
    finally:
        await services.http.aclose()
    assert [r.state for r in await _reports(database)] == ["pending"]


@pytest.mark.parametrize(
    ("sms_body", "email_body"),
    [
        (b"not json", b"not json"),
        (b'"a string"', b"42"),
        (json.dumps({"id": "x", "resultCode": 1001}).encode(), json.dumps([{"data": {}}]).encode()),
        (
            json.dumps({"refId": str(uuid.uuid4()), "resultCode": "1001"}).encode(),
            json.dumps([{"eventType": "Microsoft.Communication.EmailDeliveryReportReceived", "data": {}}]).encode(),
        ),
        (
            # One good report and one bad one in a list: all refused, none stored.
            json.dumps([delivery_report(str(uuid.uuid4()), "lm-1"), {"refId": 5}]).encode(),
            json.dumps([_event(str(uuid.uuid4()), "Delivered"), "nonsense"]).encode(),
        ),
    ],
    ids=["not-json", "not-an-object", "no-reference", "wrong-types", "one-bad-in-a-list"],
)
async def test_a_malformed_report_is_a_bad_request(
    client: httpx.AsyncClient, varsel: Varsel, channel: Channel, sms_body: bytes, email_body: bytes
) -> None:
    answer = await channel.post(client, sms_body if channel.name == "sms" else email_body)
    _is_problem(answer, 400)
    assert await _reports(varsel.database) == []


# ---------------------------------------------------------------- Event Grid handshakes


async def test_the_event_grid_subscription_validation_is_answered(client: httpx.AsyncClient, varsel: Varsel) -> None:
    code = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x",
            "subject": "",
            "data": {"validationCode": code, "validationUrl": "https://rp-eastus2.eventgrid.azure.net/validate?id=1"},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-03-02T10:00:00Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    answer = await EMAIL.post(client, validation, headers={"aeg-event-type": "SubscriptionValidation"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"validationResponse": code}
    assert await _reports(varsel.database) == []


async def test_the_cloud_events_handshake_allows_the_origin(client: httpx.AsyncClient, varsel: Varsel) -> None:
    answer = await client.options(
        ACS_URL,
        params={"accesskey": ACCESS_KEY},
        headers={"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert "POST" in answer.headers["allow"]
    assert await _reports(varsel.database) == []
