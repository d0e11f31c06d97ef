"""Webhook events are written at every status change, in the transaction that makes it (issue #18, item 2), on SQLite
and PostgreSQL: real orders through the v1 and v2 APIs and the workers (frozen clock), with the development outbox or a
LINK Mobility gate on loopback, and the outbox read back per subscription in seq order.

The subscriptions here are disabled (written as an owner's would be, never delivered): events are written for
disabled subscriptions too, and nothing here waits on a receiver. Delivery is tests/webhooks' other files' concern.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text

from tests.conftest import NOW
from tests.dispatch.test_pipeline import ConditionPeer
from tests.providers.linkmobility_peer import LinkMobilityPeer, delivery_report
from tests.recipients.registry_data import load
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import (
    email_notifications,
    sms_notifications,
    webhook_events,
    webhook_subscription_events,
    webhook_subscriptions,
)
from varsel.dispatch import repository
from varsel.providers.guard import GuardSettings
from varsel.settings import Settings
from varsel.webhooks.events import (
    EVENT_KINDS,
    NOTIFICATION_STATUS_CHANGED,
    ORDER_COMPLETED,
    NotificationChange,
    facts_of,
    notification_event,
)

ORG, OTHER = "ttd", "nav"
V1 = "/notifications/api/v1"
SHIPMENT = f"{V1}/future/shipment"
INSTANT = f"{V1}/future/orders/instant"
GATE_USER, GATE_PASSWORD = "linkgate", "rapport-hemmelig"
Auth = Callable[..., dict[str, str]]
STAMP = "2026-03-02T10:00:00Z"  # NOW as the API writes it

EMAIL_STEPS = [
    (None, "Email_New"),
    ("Email_New", "Email_Sending"),
    ("Email_Sending", "Email_Succeeded"),
    ("Email_Succeeded", "Email_Delivered"),
]
SMS_ACCEPTED_STEPS = [(None, "SMS_New"), ("SMS_New", "SMS_Sending"), ("SMS_Sending", "SMS_Accepted")]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The condition peer of the send-condition test is on loopback, allow-listed as an operator would.
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": ["127.0.0.1"]})


@pytest.fixture
async def varsel(settings: Settings, database: Database, clock: FrozenClock) -> AsyncIterator[Varsel]:
    services = build(settings, clock=clock, database=database)
    yield services
    await services.workers.stop()
    await services.http.aclose()


@pytest.fixture
def condition_peer() -> Iterator[ConditionPeer]:
    peer = ConditionPeer()
    yield peer
    peer.close()


async def subscribe(database: Database, creator: str = ORG, kinds: Sequence[str] = EVENT_KINDS) -> UUID:
    """A service owner's subscription to these kinds, as the subscriptions API stores one, but disabled."""
    subscription_id = uuid4()
    async with database.transaction() as conn:
        await conn.execute(
            insert(webhook_subscriptions).values(
                id=subscription_id,
                creator=creator,
                url="https://hooks.example.com/varsel",
                secret="whsec_" + "A" * 43 + "=",
                enabled=False,
                disabled_at=NOW,
                disabled_reason="disabled by the test: events are written, never delivered",
                created=NOW,
                updated=NOW,
            )
        )
        await conn.execute(
            insert(webhook_subscription_events),
            [{"subscription_id": subscription_id, "kind": kind, "creator": creator} for kind in kinds],
        )
    return subscription_id


@dataclass(frozen=True)
class Written:
    seq: int
    id: UUID
    creator: str
    kind: str
    payload: dict[str, Any]
    state: str
    occurred: Any

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.payload["data"]
        return data


async def events_of(database: Database, subscription_id: UUID) -> list[Written]:
    """A subscription's events in the outbox, in seq order (the order its endpoint gets them)."""
    async with database.read() as conn:
        rows = await conn.execute(
            select(webhook_events)
            .where(webhook_events.c.subscription_id == subscription_id)
            .order_by(webhook_events.c.seq)
        )
        return [Written(r.seq, r.id, r.creator, r.kind, r.payload, r.state, r.occurred) for r in rows]


async def all_events(database: Database) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(webhook_events))).scalar_one())


def steps(events: Sequence[Written]) -> dict[str, list[tuple[str | None, str]]]:
    """Each notification's changes as its events tell them, in seq order."""
    found: dict[str, list[tuple[str | None, str]]] = {}
    for event in events:
        if event.kind == NOTIFICATION_STATUS_CHANGED:
            found.setdefault(event.data["notificationId"], []).append(
                (event.data["previousStatus"], event.data["status"])
            )
    return found


def by_destination(events: Sequence[Written]) -> dict[str, list[tuple[str | None, str]]]:
    told = steps(events)
    destinations = {
        e.data["notificationId"]: e.data["destination"] for e in events if e.kind == NOTIFICATION_STATUS_CHANGED
    }
    return {destinations[notification_id]: changes for notification_id, changes in told.items()}


def kinds(events: Sequence[Written]) -> list[str]:
    return [event.kind for event in events]


async def manifest(client: httpx.AsyncClient, auth: Auth, order_id: str) -> dict[str, Any]:
    response = await client.get(f"{SHIPMENT}/{order_id}", headers=auth())
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def v1_order(client: httpx.AsyncClient, auth: Auth, path: str, body: dict[str, Any]) -> str:
    response = await client.post(f"{V1}{path}", json=body, headers=auth())
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


def email_order(*addresses: str, **extra: Any) -> dict[str, Any]:
    return {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": a} for a in addresses], **extra}


def sms_order(*numbers: str, **extra: Any) -> dict[str, Any]:
    return {"body": "Hei", "recipients": [{"mobileNumber": n} for n in numbers], **extra}


@dataclass
class LinkPipeline:
    varsel: Varsel
    peer: LinkMobilityPeer
    client: httpx.AsyncClient

    async def report(self, number: str, code: int) -> None:
        """The gate's delivery report for the message to this number (1001 delivered, 1006 undelivered)."""
        [message] = [m for m in self.peer.messages if m.body["destination"] == number]
        body = delivery_report(message.ref_id, message.message_id, code)
        answer = await self.client.post(f"{V1}/reports/sms/linkmobility", json=body, auth=(GATE_USER, GATE_PASSWORD))
        assert answer.json() == {"received": 1, "states": {"applied": 1}}


@pytest.fixture
def link_pipeline(settings: Settings, database: Database, clock: FrozenClock) -> Callable[..., Any]:
    """varsel with LINK Mobility as its SMS provider, a gate on loopback: an accepted SMS awaits its report (the
    senders' one-statement write on PostgreSQL, the direct write on SQLite)."""

    @asynccontextmanager
    async def make(**guard: Any) -> AsyncIterator[LinkPipeline]:
        async with LinkMobilityPeer() as peer:
            link = peer.settings(timeout_seconds=5, report_username=GATE_USER, report_password=SecretStr(GATE_PASSWORD))
            chosen = settings.model_copy(
                update={
                    "sms": settings.sms.model_copy(
                        update={"provider": "linkmobility", "linkmobility": link, "guard": GuardSettings(**guard)}
                    )
                }
            )
            varsel = build(chosen, clock=clock, database=database)
            app = create_app(varsel)
            try:
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://varsel.test"
                ) as client:
                    yield LinkPipeline(varsel, peer, client)
            finally:
                await varsel.workers.stop()
                await varsel.workers.email_provider.close()
                await varsel.workers.sms_provider.close()
                await varsel.http.aclose()

    return make


# ---------------------------------------------------------------- v1 orders through the development outbox


async def test_an_email_order_tells_every_change_of_each_notification_then_its_end(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    ours = await subscribe(database)
    theirs = await subscribe(database, OTHER)
    order_id = await v1_order(
        client, auth, "/orders/email", email_order("a@example.com", "b@example.com", sendersReference="case-7")
    )
    await varsel.workers.drain()

    events = await events_of(database, ours)
    assert kinds(events) == [NOTIFICATION_STATUS_CHANGED] * 8 + [ORDER_COMPLETED]
    assert by_destination(events) == {"a@example.com": EMAIL_STEPS, "b@example.com": EMAIL_STEPS}
    first = next(e for e in events if e.data["destination"] == "a@example.com")
    assert first.payload == {
        "type": "notification.status_changed",
        "timestamp": STAMP,
        "data": {
            "shipmentId": order_id,
            "sendersReference": "case-7",
            "notificationId": first.data["notificationId"],
            "channel": "Email",
            "type": "Email",
            "destination": "a@example.com",
            "status": "Email_New",
            "previousStatus": None,
            "lastUpdate": STAMP,
        },
    }
    # The order's end: its manifest exactly as GET /future/shipment/{id} answers it (nothing changes after).
    assert events[-1].payload == {
        "type": "order.completed",
        "timestamp": STAMP,
        "data": await manifest(client, auth, order_id),
    }
    assert events[-1].data["recipients"][0]["status"] == "Email_Delivered"
    assert all(e.creator == ORG and e.state == "pending" and e.occurred == NOW for e in events)
    assert len({e.id for e in events}) == len(events)
    # Another service owner's subscription gets nothing of ours.
    assert await events_of(database, theirs) == []


async def test_nobody_subscribed_writes_no_event(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    await subscribe(database, OTHER)
    await v1_order(client, auth, "/orders/email", email_order("a@example.com"))
    await varsel.workers.drain()
    assert await all_events(database) == 0


async def test_a_subscription_gets_only_the_kinds_it_takes_and_each_subscription_its_own_rows(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    ends = await subscribe(database, kinds=[ORDER_COMPLETED])
    changes = await subscribe(database, kinds=[NOTIFICATION_STATUS_CHANGED])
    everything = await subscribe(database)
    order_id = await v1_order(client, auth, "/orders/sms", sms_order("+4799999999"))
    await varsel.workers.drain()

    [end] = await events_of(database, ends)
    assert (end.kind, end.data["shipmentId"], end.data["status"]) == (ORDER_COMPLETED, order_id, "Order_Completed")
    told = await events_of(database, changes)
    assert set(kinds(told)) == {NOTIFICATION_STATUS_CHANGED}
    assert list(steps(told).values()) == [[*SMS_ACCEPTED_STEPS, ("SMS_Accepted", "SMS_Delivered")]]
    # The same events for another subscription, as rows (and webhook ids) of its own.
    both = await events_of(database, everything)
    assert [e.payload for e in both] == [e.payload for e in told] + [end.payload]
    assert not {e.id for e in both} & {e.id for e in [*told, end]}


async def test_a_subscription_to_notification_changes_alone_is_told_every_change(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    subscription = await subscribe(database, kinds=[NOTIFICATION_STATUS_CHANGED])
    await v1_order(client, auth, "/orders/email", email_order("a@example.com"))
    await varsel.workers.drain()
    events = await events_of(database, subscription)
    assert set(kinds(events)) == {NOTIFICATION_STATUS_CHANGED}
    assert list(steps(events).values()) == [EMAIL_STEPS]


async def test_recipients_not_found_at_generation_are_told_with_their_identifier_then_the_order_completes(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    summary = await load(
        database,
        clock,
        [
            {"kind": "person", "nationalIdentityNumber": "14029112345", "name": "Mona Mangler", "isReserved": False},
            {"kind": "person", "nationalIdentityNumber": "01017012345", "name": "Ola", "isReserved": True},
        ],
    )
    assert summary.rejected == []
    subscription = await subscribe(database)
    order_id = await v1_order(
        client,
        auth,
        "/orders",
        {
            "notificationChannel": "Email",
            "recipients": [{"nationalIdentityNumber": "14029112345"}, {"nationalIdentityNumber": "01017012345"}],
            "emailTemplate": {"subject": "Hei", "body": "Hallo"},
        },
    )
    await varsel.workers.drain()

    events = await events_of(database, subscription)
    assert kinds(events) == [NOTIFICATION_STATUS_CHANGED] * 2 + [ORDER_COMPLETED]
    told = {e.data["nationalIdentityNumber"]: e.data for e in events[:2]}
    assert {nin: (data["previousStatus"], data["status"], data["destination"]) for nin, data in told.items()} == {
        "14029112345": (None, "Email_Failed_RecipientNotIdentified", ""),
        "01017012345": (None, "Email_Failed_RecipientReserved", ""),
    }
    assert "organizationNumber" not in told["14029112345"]
    assert events[-1].data == await manifest(client, auth, order_id)


async def test_a_cancelled_order_is_told_with_its_manifest(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    subscription = await subscribe(database)
    later = (NOW + timedelta(days=1)).isoformat()
    order_id = await v1_order(client, auth, "/orders/email", email_order("a@example.com", requestedSendTime=later))
    response = await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())
    assert response.status_code == 200, response.text
    # Cancelled again: no second event.
    assert (await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())).status_code == 200
    await varsel.workers.drain()

    [cancelled] = await events_of(database, subscription)
    assert cancelled.payload == {
        "type": "order.cancelled",
        "timestamp": STAMP,
        "data": await manifest(client, auth, order_id),
    }
    assert (cancelled.data["status"], cancelled.data["recipients"]) == ("Order_Cancelled", [])


async def test_a_send_condition_not_met_is_told_with_its_manifest(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, condition_peer: ConditionPeer
) -> None:
    subscription = await subscribe(database)
    order_id = await v1_order(
        client,
        auth,
        "/orders/email",
        email_order("a@example.com", sendersReference="cond-1", conditionEndpoint=f"{condition_peer.url}/no"),
    )
    await varsel.workers.drain()

    [ended] = await events_of(database, subscription)
    assert ended.payload == {
        "type": "order.send_condition_not_met",
        "timestamp": STAMP,
        "data": await manifest(client, auth, order_id),
    }
    assert ended.data["status"] == "Order_SendConditionNotMet"
    assert ended.data["sendersReference"] == "cond-1"


# ---------------------------------------------------------------- SMS awaiting reports (LINK Mobility on loopback)


async def test_delivery_reports_are_told_and_the_order_end_after_them(
    link_pipeline: Callable[..., Any], database: Database, auth: Auth
) -> None:
    async with link_pipeline() as p:
        subscription = await subscribe(database)
        order_id = await v1_order(p.client, auth, "/orders/sms", sms_order("+4790000001", "+4790000002"))
        await p.varsel.workers.drain()
        # Accepted, awaiting reports: written by the senders' short way (one statement on PostgreSQL).
        assert by_destination(await events_of(database, subscription)) == {
            "+4790000001": SMS_ACCEPTED_STEPS,
            "+4790000002": SMS_ACCEPTED_STEPS,
        }

        await p.report("+4790000001", 1001)
        await p.report("+4790000002", 1006)
        events = await events_of(database, subscription)
        assert by_destination(events) == {
            "+4790000001": [*SMS_ACCEPTED_STEPS, ("SMS_Accepted", "SMS_Delivered")],
            "+4790000002": [*SMS_ACCEPTED_STEPS, ("SMS_Accepted", "SMS_Failed_Undelivered")],
        }
        assert events[-1].kind == ORDER_COMPLETED
        assert events[-1].data == await manifest(p.client, auth, order_id)
        assert {(r["destination"], r["status"]) for r in events[-1].data["recipients"]} == {
            ("+4790000001", "SMS_Delivered"),
            ("+4790000002", "SMS_Failed_Undelivered"),
        }


async def test_a_transient_failure_goes_back_to_new_and_the_retry_is_told(
    link_pipeline: Callable[..., Any], database: Database, auth: Auth, clock: FrozenClock
) -> None:
    async with link_pipeline(max_concurrency=1, failure_threshold=5) as p:
        subscription = await subscribe(database)
        p.peer.fail_next(1, status=503)
        await v1_order(p.client, auth, "/orders/sms", sms_order("+4790000001"))
        await p.varsel.workers.drain()
        assert list(steps(await events_of(database, subscription)).values()) == [
            [(None, "SMS_New"), ("SMS_New", "SMS_Sending"), ("SMS_Sending", "SMS_New")]
        ]
        clock.advance(timedelta(minutes=30))
        await p.varsel.workers.drain()
        assert list(steps(await events_of(database, subscription)).values()) == [
            [(None, "SMS_New"), ("SMS_New", "SMS_Sending"), ("SMS_Sending", "SMS_New"), *SMS_ACCEPTED_STEPS[1:]]
        ]


async def test_an_accepted_sms_without_report_expires_and_is_told(
    link_pipeline: Callable[..., Any], database: Database, auth: Auth, clock: FrozenClock
) -> None:
    async with link_pipeline() as p:
        subscription = await subscribe(database)
        order_id = await v1_order(p.client, auth, "/orders/sms", sms_order("+4790000001"))
        await p.varsel.workers.drain()
        clock.advance(timedelta(hours=49))
        await p.varsel.workers.drain()
        events = await events_of(database, subscription)
        assert list(steps(events).values()) == [[*SMS_ACCEPTED_STEPS, ("SMS_Accepted", "SMS_Failed_TTL")]]
        assert events[-2].payload["timestamp"] == events[-2].data["lastUpdate"] == "2026-03-04T11:00:00Z"
        assert events[-1].kind == ORDER_COMPLETED
        assert events[-1].data == await manifest(p.client, auth, order_id)


async def test_a_change_rolled_back_writes_no_event(
    link_pipeline: Callable[..., Any], database: Database, auth: Auth, clock: FrozenClock
) -> None:
    """The expiry sweeper's transaction fails at its last statement (the order's feed entry, refused by a trigger):
    neither the notification's Failed_TTL nor its event is written; once the fault is gone, both are."""
    async with link_pipeline() as p:
        subscription = await subscribe(database)
        await v1_order(p.client, auth, "/orders/sms", sms_order("+4790000001"))
        await p.varsel.workers.drain()
        before = await events_of(database, subscription)
        clock.advance(timedelta(hours=49))
        async with refusing_feed_entries(database):
            with pytest.raises(Exception, match="feed refused"):
                await p.varsel.workers.sweeper.run_once()
            assert await events_of(database, subscription) == before
            async with database.read() as conn:
                assert (await conn.execute(select(sms_notifications.c.status))).scalar_one() == "Accepted"
        assert await p.varsel.workers.sweeper.run_once() == 1
        after = await events_of(database, subscription)
        assert kinds(after[len(before) :]) == [NOTIFICATION_STATUS_CHANGED, ORDER_COMPLETED]


@asynccontextmanager
async def refusing_feed_entries(database: Database) -> AsyncIterator[None]:
    """A trigger that makes every insert into the status feed fail (a fault at the end of a transaction)."""
    async with database.transaction() as conn:
        if database.dialect == "postgresql":
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_feed() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'feed refused'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_feed BEFORE INSERT ON status_feed FOR EACH ROW "
                    "EXECUTE FUNCTION refuse_feed()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_feed BEFORE INSERT ON status_feed "
                    "BEGIN SELECT RAISE(ABORT, 'feed refused'); END"
                )
            )
    try:
        yield
    finally:
        async with database.transaction() as conn:
            if database.dialect == "postgresql":
                await conn.execute(text("DROP TRIGGER refuse_feed ON status_feed"))
                await conn.execute(text("DROP FUNCTION refuse_feed()"))
            else:
                await conn.execute(text("DROP TRIGGER refuse_feed"))


# ---------------------------------------------------------------- instant orders (v2)


async def test_an_instant_email_is_told_from_sending_to_delivered_then_its_end(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    subscription = await subscribe(database)
    body = {
        "idempotencyId": "doc-1",
        "sendersReference": "case-1",
        "recipientEmail": {"emailAddress": "ola@example.com", "emailSettings": {"subject": "Hei", "body": "Hallo"}},
    }
    response = await client.post(f"{INSTANT}/email", json=body, headers=auth())
    assert response.status_code == 201, response.text
    order_id = response.json()["notification"]["shipmentId"]
    # The same key again stores and sends nothing, and tells nothing.
    assert (await client.post(f"{INSTANT}/email", json=body, headers=auth())).status_code == 200

    events = await events_of(database, subscription)
    assert kinds(events) == [NOTIFICATION_STATUS_CHANGED] * 3 + [ORDER_COMPLETED]
    # Never New: stored Sending, under this process's claim, while the caller waits.
    assert list(steps(events).values()) == [[(None, "Email_Sending"), *EMAIL_STEPS[2:]]]
    assert events[0].data["sendersReference"] == "case-1"
    assert events[-1].data == await manifest(client, auth, order_id)
    assert events[-1].data["type"] == "Instant"


async def test_an_instant_sms_is_told_as_stored_sent_parked_and_sent_again(
    link_pipeline: Callable[..., Any], database: Database, auth: Auth
) -> None:
    """The instant store and the outcome are each one statement on PostgreSQL (the events in it), direct writes on
    SQLite; a transient failure parks the notification (New) until the caller's retry takes it (Sending)."""
    async with link_pipeline() as p:
        subscription = await subscribe(database)
        theirs = await subscribe(database, OTHER)
        body = {
            "idempotencyId": "otp-1",
            "sendersReference": "login-1",
            "recipientSms": {"phoneNumber": "+4799999999", "timeToLiveInSeconds": 300, "smsSettings": {"body": "123"}},
        }
        p.peer.fail_next(1, status=503)
        first = await p.client.post(f"{INSTANT}/sms", json=body, headers=auth())
        assert first.status_code == 503, first.text
        # The caller's retry with the same key takes the parked notification and sends it.
        again = await p.client.post(f"{INSTANT}/sms", json=body, headers=auth())
        assert again.status_code == 201, again.text

        events = await events_of(database, subscription)
        assert list(steps(events).values()) == [
            [
                (None, "SMS_Sending"),
                ("SMS_Sending", "SMS_New"),
                ("SMS_New", "SMS_Sending"),
                ("SMS_Sending", "SMS_Accepted"),
            ]
        ]
        assert {e.data["sendersReference"] for e in events} == {"login-1"}
        assert {e.data["destination"] for e in events} == {"+4799999999"}
        await p.report("+4799999999", 1001)
        events = await events_of(database, subscription)
        assert (events[-2].data["status"], events[-1].kind) == ("SMS_Delivered", ORDER_COMPLETED)
        assert await events_of(database, theirs) == []


# ---------------------------------------------------------------- a sender's recovery after a failed round


async def test_a_notification_a_sender_gives_back_after_a_failed_round_is_told_back_to_new(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    subscription = await subscribe(database)
    await v1_order(client, auth, "/orders/email", email_order("a@example.com"))
    await varsel.workers.processor.run_once()
    sender = varsel.workers.email
    # Claimed by this sender in a round that then failed (the database away): as varsel.dispatch.senders claims.
    async with database.transaction() as conn:
        await repository.claim_notifications(
            conn, email_notifications, sender._worker, clock.now(), clock.now() + timedelta(seconds=120), 10
        )
    await sender.recover()
    await varsel.workers.drain()
    [told] = steps(await events_of(database, subscription)).values()
    # The claim above was made behind the sender's back (no event of its own); its release is told.
    assert told == [(None, "Email_New"), ("Email_Sending", "Email_New"), *EMAIL_STEPS[1:]]


async def test_a_sender_taking_over_a_lease_that_ran_out_tells_no_change(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    subscription = await subscribe(database)
    await v1_order(client, auth, "/orders/email", email_order("a@example.com"))
    await varsel.workers.processor.run_once()
    # Another worker's claim (made behind the senders' back, so no event of its own), whose worker then died.
    async with database.transaction() as conn:
        await repository.claim_notifications(
            conn, email_notifications, "dead-worker", clock.now(), clock.now() + timedelta(seconds=120), 10
        )
    clock.advance(timedelta(seconds=121))
    await varsel.workers.drain()
    [told] = steps(await events_of(database, subscription)).values()
    # Sending again is no change: the take-over is not told (no Email_Sending -> Email_Sending).
    assert told == [(None, "Email_New"), *EMAIL_STEPS[2:]]


# ---------------------------------------------------------------- a v2 order chain


async def test_a_v2_chain_tells_its_main_order_and_its_reminder_each_in_its_time(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    subscription = await subscribe(database)
    body = {
        "idempotencyId": "chain-1",
        "sendersReference": "case-42",
        "recipient": {"recipientSms": {"phoneNumber": "+4799999999", "smsSettings": {"body": "News"}}},
        "reminders": [
            {
                "delayDays": 1,
                "sendersReference": "case-42-r1",
                "recipient": {
                    "recipientEmail": {
                        "emailAddress": "ola@example.com",
                        "emailSettings": {"subject": "Reminder", "body": "Still news"},
                    }
                },
            }
        ],
    }
    created = await client.post(f"{V1}/future/orders", json=body, headers=auth())
    assert created.status_code == 201, created.text
    receipt = created.json()["notification"]
    main, reminder = receipt["shipmentId"], receipt["reminders"][0]["shipmentId"]
    await varsel.workers.drain()
    events = await events_of(database, subscription)
    assert [(e.kind, e.data["shipmentId"]) for e in events][-1] == (ORDER_COMPLETED, main)
    assert {e.data["sendersReference"] for e in events} == {"case-42"}
    assert list(steps(events).values()) == [[*SMS_ACCEPTED_STEPS, ("SMS_Accepted", "SMS_Delivered")]]
    assert events[-1].data == await manifest(client, auth, main)

    clock.advance(timedelta(days=1))
    await varsel.workers.drain()
    later = (await events_of(database, subscription))[len(events) :]
    assert {e.data["sendersReference"] for e in later} == {"case-42-r1"}
    assert list(steps(later).values()) == [EMAIL_STEPS]
    assert (later[-1].kind, later[-1].data) == (ORDER_COMPLETED, await manifest(client, auth, reminder))
    assert later[-1].data["type"] == "Reminder"


async def test_an_organisations_notification_is_told_with_its_organisation_number(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    record = {"kind": "organization", "organizationNumber": "311000179", "name": "Testbedrift AS",
              "emailAddresses": ["post@testbedrift.example.com"], "mobileNumbers": []}  # fmt: skip
    assert (await load(database, clock, [record])).rejected == []
    subscription = await subscribe(database)
    body = {
        "notificationChannel": "Email",
        "recipients": [{"organizationNumber": "311000179"}],
        "emailTemplate": {"subject": "Hei", "body": "Hallo"},
    }
    await v1_order(client, auth, "/orders", body)
    await varsel.workers.drain()
    told = [e.data for e in await events_of(database, subscription) if e.kind == NOTIFICATION_STATUS_CHANGED]
    assert [(d["previousStatus"], d["status"]) for d in told] == EMAIL_STEPS
    told_to = {(d["destination"], d["organizationNumber"]) for d in told}
    assert told_to == {("post@testbedrift.example.com", "311000179")}
    assert not any("nationalIdentityNumber" in d or "sendersReference" in d for d in told)


# ---------------------------------------------------------------- an outcome whose claim was lost


async def test_an_outcome_whose_claim_was_lost_writes_no_event(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    """The senders' short way (one statement on PostgreSQL, a direct write on SQLite) writes an outcome, and its
    event, only for a notification its worker still holds: another worker's outcome for it changes nothing and tells
    nothing."""
    subscription = await subscribe(database)
    await v1_order(client, auth, "/orders/sms", sms_order("+4799999999"))
    await varsel.workers.processor.run_once()
    async with database.transaction() as conn:
        [row] = await repository.claim_notifications(
            conn, sms_notifications, "holder", clock.now(), clock.now() + timedelta(seconds=120), 10
        )
    facts = facts_of(row, None, "sms")
    values = {"status": "Accepted", "status_changed": clock.now(), "provider": "linkmobility", "status_detail": None}
    change = NotificationChange("sms", row.id, "Sending", "Accepted", clock.now(), facts)

    async def record(worker: str) -> set[UUID]:
        if database.dialect == "postgresql":
            async with database.statement() as conn:
                return await repository.record_pending_outcomes(
                    conn, sms_notifications, worker, [(row.id, values)], [], clock.now()
                )
        return await database.sqlite_write(
            lambda write: repository.record_pending_outcomes_sqlite(
                write, sms_notifications, worker, [(row.id, values)], [], [change]
            )
        )

    before = await events_of(database, subscription)
    assert await record("another") == set()
    assert await events_of(database, subscription) == before
    assert await record("holder") == {row.id}
    [told] = (await events_of(database, subscription))[len(before) :]
    assert (told.data["previousStatus"], told.data["status"]) == ("SMS_Sending", "SMS_Accepted")


# ---------------------------------------------------------------- the senders' short way builds the payload exactly


@pytest.mark.parametrize(
    ("channel", "changed", "facts", "values"),
    [
        # An SMS accepted at a whole second, nobody's reference, a person's identity number.
        ("sms", 0, {"national_identity_number": "07837399275"}, {"status": "Accepted"}),
        # At a time with microseconds, a reference to escape, an organisation, sent as an email's fallback.
        (
            "sms",
            1_230,
            {"organization_number": "910011154", "fallback_of": UUID(int=7), "fallback_reason": "Failed_Bounced"},
            {"status": "Accepted"},
        ),
        # Back to New for a retry (no status_changed: the change happened when it is recorded), waiting for no report.
        ("sms", None, {"fallback_of": UUID(int=8), "fallback_reason": "NoDeliveryReport"}, {"status": "New"}),
        # An email awaiting its report, sent as an SMS's fallback (the SMS status's lifecycle name is a renamed one).
        (
            "email",
            999_999,
            {"fallback_of": UUID(int=9), "fallback_reason": "Failed_InvalidReceiver"},
            {"status": "Succeeded"},
        ),
    ],
)
async def test_the_senders_short_way_writes_the_payload_notification_event_builds(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    database: Database,
    clock: FrozenClock,
    channel: str,
    changed: int | None,
    facts: dict[str, Any],
    values: dict[str, Any],
) -> None:
    """On PostgreSQL the pending-outcome statement builds the notification.status_changed payload itself (so that a
    message nobody subscribes to costs nothing); it must be the body `notification_event` builds in Python (and
    SQLite's short way writes), byte for byte once read: times with or without microseconds, the optional keys left
    out when empty, fallbackFor with the first channel's lifecycle names, text that JSON must escape."""
    subscription = await subscribe(database, kinds=[NOTIFICATION_STATUS_CHANGED])
    reference = 'r\u00e9f "1" \\ \u00c6' if changed else None
    extra = {"sendersReference": reference} if reference else {}
    if channel == "sms":
        await v1_order(client, auth, "/orders/sms", sms_order("+4799999999", **extra))
    else:
        await v1_order(client, auth, "/orders/email", email_order("a@example.com", **extra))
    await varsel.workers.processor.run_once()
    table = sms_notifications if channel == "sms" else email_notifications
    async with database.transaction() as conn:
        await conn.execute(table.update().values(**facts))
        [row] = await repository.claim_notifications(
            conn, table, "holder", clock.now(), clock.now() + timedelta(seconds=120), 10
        )
    clock.advance(timedelta(seconds=3))
    now = clock.now()
    outcome = dict(values, provider="linkmobility" if channel == "sms" else "acs", status_detail=None)
    if changed is not None:
        outcome["status_changed"] = now.replace(microsecond=changed)
    change = NotificationChange(
        channel,
        row.id,
        "Sending",
        values["status"],
        outcome.get("status_changed") or now,
        facts_of(row, reference, channel),
    )
    before = len(await events_of(database, subscription))
    if database.dialect == "postgresql":
        async with database.statement() as conn:
            held = await repository.record_pending_outcomes(conn, table, "holder", [(row.id, outcome)], [], now)
    else:
        held = await database.sqlite_write(
            lambda write: repository.record_pending_outcomes_sqlite(
                write, table, "holder", [(row.id, outcome)], [], [change]
            )
        )
    assert held == {row.id}
    [told] = (await events_of(database, subscription))[before:]
    expected = notification_event(change, change.facts)
    assert told.payload == expected.payload
    assert list(told.data) == list(expected.payload["data"])  # the same keys in the same order
    assert (told.creator, told.kind, told.occurred) == (ORG, NOTIFICATION_STATUS_CHANGED, change.occurred)
