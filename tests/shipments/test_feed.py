"""GET /future/shipment/feed and the entries behind it, on SQLite and PostgreSQL: written when an order ends (by
every path), paged by seq in both directions, creator-scoped, and purged after the retention period."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import NOW
from tests.dispatch.test_pipeline import ConditionPeer
from tests.recipients.registry_data import load
from tests.shipments.helpers import FUTURE, V1, Auth, email_body, ended_orders, feed_rows, place
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications
from varsel.notifications.statuses import EmailStatus
from varsel.providers.base import Accepted, DeliveryReport, EmailMessage
from varsel.settings import Settings
from varsel.shipments.repository import write_feed_entries
from varsel.shipments.service import FeedRetention

FEED = f"{FUTURE}/shipment/feed"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": ["127.0.0.1"]})


@pytest.fixture
def condition_peer() -> Iterator[ConditionPeer]:
    peer = ConditionPeer()
    yield peer
    peer.close()


async def _feed(client: httpx.AsyncClient, auth: Auth, query: str = "", org: str = "ttd") -> list[dict[str, Any]]:
    response = await client.get(f"{FEED}{query}", headers=auth(org))
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


async def test_an_order_that_completes_has_one_entry_with_its_notifications(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    order_id = await place(client, auth, email_body("a@example.com", "b@example.com", sendersReference="r1"))
    assert await _feed(client, auth) == []
    await varsel.workers.processor.run_once()
    assert await _feed(client, auth) == []  # Processed is not final
    clock.advance(timedelta(seconds=5))
    await varsel.workers.drain()
    (entry,) = await _feed(client, auth)
    assert isinstance(entry.pop("sequenceNumber"), int)
    entry["recipients"].sort(key=lambda r: r["destination"])
    assert entry == {
        "shipmentId": order_id,
        "sendersReference": "r1",
        "recipients": [
            {"destination": d, "status": "Email_Delivered", "lastUpdate": "2026-03-02T10:00:05Z"}
            for d in ("a@example.com", "b@example.com")
        ],
        "status": "Order_Completed",
        "lastUpdate": "2026-03-02T10:00:05Z",
        "shipmentType": "Notification",
    }
    # Written once: ending it again (a duplicate insert) changes nothing.
    async with varsel.database.transaction() as conn:
        assert await write_feed_entries(conn, [UUID(order_id)], NOW + timedelta(days=1)) == 0
    assert len(await _feed(client, auth)) == 1


async def test_an_order_with_nobody_to_send_to_completes_at_once_with_its_entry(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    order_id = await place(client, auth, {"subject": "s", "body": "b",
                                          "recipients": [{"nationalIdentityNumber": "99999999999"}]})  # fmt: skip
    await varsel.workers.processor.run_once()
    (entry,) = await _feed(client, auth)
    assert (entry["shipmentId"], entry["status"]) == (order_id, "Order_Completed")
    assert entry["recipients"] == [
        {"destination": "", "status": "Email_Failed_RecipientNotIdentified", "lastUpdate": "2026-03-02T10:00:00Z"}
    ]


async def test_a_send_condition_not_met_has_an_entry(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, condition_peer: ConditionPeer
) -> None:
    order_id = await place(client, auth, email_body("a@example.com", conditionEndpoint=condition_peer.url + "/no"))
    await varsel.workers.drain()
    (entry,) = await _feed(client, auth)
    assert (entry["shipmentId"], entry["status"], entry["recipients"]) == (order_id, "Order_SendConditionNotMet", [])


async def test_a_cancelled_order_has_an_entry_unlike_the_reference(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    send_time = (NOW + timedelta(hours=1)).isoformat()
    order_id = await place(client, auth, email_body("a@example.com", requestedSendTime=send_time))
    assert await _feed(client, auth) == []
    assert (await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())).status_code == 200
    # Cancelling again (answered 200 as the reference does) writes nothing more.
    assert (await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())).status_code == 200
    (entry,) = await _feed(client, auth)
    assert (entry["shipmentId"], entry["status"], entry["recipients"]) == (order_id, "Order_Cancelled", [])
    assert entry["lastUpdate"] == "2026-03-02T10:00:00Z"


async def test_an_order_ended_by_the_expiry_sweeper_has_an_entry(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, database: Database
) -> None:
    # Processed, its notification never sent before it expired: the sweeper fails it and completes the order.
    order_id = await place(client, auth, email_body("a@example.com"))
    await varsel.workers.processor.run_once()
    clock.advance(timedelta(hours=49))
    assert await varsel.workers.sweeper.run_once() == 1
    (entry,) = await _feed(client, auth)
    assert (entry["shipmentId"], entry["status"]) == (order_id, "Order_Completed")
    assert [r["status"] for r in entry["recipients"]] == ["Email_Failed_TTL"]


async def test_paging_ascending_and_descending(client: httpx.AsyncClient, auth: Auth, database: Database) -> None:
    ids = [str(i) for i in await ended_orders(database, "ttd", 7, NOW)]
    everything = await _feed(client, auth)
    assert [e["shipmentId"] for e in everything] == ids
    seqs = [e["sequenceNumber"] for e in everything]
    assert seqs == sorted(seqs)
    # Ascending: after seq, oldest first, pageSize at a time; the last seq received is the next request's seq.
    seen, seq = [], 0
    while page := await _feed(client, auth, f"?seq={seq}&pageSize=3"):
        assert len(page) <= 3
        seen += [e["shipmentId"] for e in page]
        seq = page[-1]["sequenceNumber"]
    assert seen == ids
    # Descending: seq 0 is the newest first; then before seq.
    newest = await _feed(client, auth, "?orderBy=desc&pageSize=2")
    assert [e["shipmentId"] for e in newest] == ids[::-1][:2]
    older = await _feed(client, auth, f"?orderby=DESC&pagesize=10&seq={newest[-1]['sequenceNumber']}")
    assert [e["shipmentId"] for e in older] == ids[::-1][2:]
    # Names and values in any case, directions by number too.
    assert [e["shipmentId"] for e in await _feed(client, auth, "?OrderBy=1&PageSize=1")] == [ids[-1]]
    assert [e["shipmentId"] for e in await _feed(client, auth, f"?ORDERBY=0&SEQ={seqs[4]}")] == ids[5:]
    assert await _feed(client, auth, f"?seq={seqs[-1]}") == []


async def test_page_size_is_clamped(client: httpx.AsyncClient, auth: Auth, database: Database) -> None:
    await ended_orders(database, "ttd", 503, NOW)
    assert len(await _feed(client, auth)) == 500  # the default is the maximum
    assert len(await _feed(client, auth, "?pageSize=1000")) == 500
    assert len(await _feed(client, auth, "?pageSize=0")) == 1
    assert len(await _feed(client, auth, "?pageSize=-7")) == 1
    assert len(await _feed(client, auth, "?pageSize=2")) == 2


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("?seq=-1", {"Seq": ["The field Seq must be between 0 and 9.223372036854776E+18."]}),
        ("?seq=abc", {"Seq": ["The value 'abc' is not valid for Seq."]}),
        ("?seq=9223372036854775808", {"Seq": ["The value '9223372036854775808' is not valid for Seq."]}),
        ("?pageSize=x", {"PageSize": ["The value 'x' is not valid for PageSize."]}),
        ("?orderBy=sideways", {"OrderBy": ["The value 'sideways' is not valid for OrderBy."]}),
        ("?orderBy=2", {"OrderBy": ["The value '2' is not valid for OrderBy."]}),
        (
            "?seq=-5&orderBy=up",
            {
                "Seq": ["The field Seq must be between 0 and 9.223372036854776E+18."],
                "OrderBy": ["The value 'up' is not valid for OrderBy."],
            },
        ),
    ],
)
async def test_bad_parameters(client: httpx.AsyncClient, auth: Auth, query: str, errors: dict[str, Any]) -> None:
    response = await client.get(f"{FEED}{query}", headers=auth())
    assert response.status_code == 400
    body = response.json()
    assert body["title"] == "One or more validation errors occurred."
    assert body["errors"] == errors


async def test_a_content_type_other_than_json_is_refused(client: httpx.AsyncClient, auth: Auth) -> None:
    plain = await client.get(FEED, headers={**auth(), "Content-Type": "text/plain"})
    assert plain.status_code == 415
    json_ = await client.get(FEED, headers={**auth(), "Content-Type": "application/json; charset=utf-8"})
    assert (json_.status_code, json_.json()) == (200, [])
    # The token is checked first.
    assert (await client.get(FEED, headers={"Content-Type": "text/plain"})).status_code == 401


async def test_another_orgs_entries_are_invisible(client: httpx.AsyncClient, auth: Auth, database: Database) -> None:
    ours = [str(i) for i in await ended_orders(database, "ttd", 2, NOW)]
    theirs = [str(i) for i in await ended_orders(database, "nav", 3, NOW)]
    assert [e["shipmentId"] for e in await _feed(client, auth)] == ours
    assert [e["shipmentId"] for e in await _feed(client, auth, "?orderBy=desc", org="nav")] == theirs[::-1]
    assert (await client.get(FEED)).status_code == 401


async def test_entries_past_retention_are_purged_in_batches(
    client: httpx.AsyncClient, auth: Auth, database: Database, clock: FrozenClock, varsel: Varsel
) -> None:
    await ended_orders(database, "ttd", 5, NOW)
    recent = await ended_orders(database, "ttd", 2, NOW + timedelta(days=10))
    retention = FeedRetention(database, clock, retention_days=90, batch=2)
    clock.advance(timedelta(days=90) - timedelta(seconds=1))
    assert await retention.run_once() == 0  # not yet 90 days old
    clock.advance(timedelta(seconds=1))
    assert [await retention.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [order_id for _, order_id in await feed_rows(database)] == recent
    # The workers purge too (the expiry worker's round), with the setting's retention: 90 days by default.
    assert varsel.settings.dispatch.feed_retention_days == 90
    clock.advance(timedelta(days=10))
    await varsel.workers.drain()
    # The newest entry of all stays whatever its age, so that SQLite never numbers a new entry with a seq again.
    assert [order_id for _, order_id in await feed_rows(database)] == recent[-1:]
    newer = await ended_orders(database, "ttd", 1, clock.now())
    rows = await feed_rows(database)
    assert [order_id for _, order_id in rows] == [recent[-1], *newer]
    assert rows[1][0] > rows[0][0]


class AcceptingProvider:
    """Accepts every email; its delivery report comes later."""

    name = "acs"

    async def send(self, message: EmailMessage) -> Accepted:
        return Accepted(reference=str(message.notification_id))

    async def close(self) -> None:
        return None


async def test_an_order_completed_by_a_delivery_report_has_an_entry(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    varsel = build(settings, clock=clock, database=database, email_provider=AcceptingProvider())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://t") as client:
        order_id = await place(client, auth, email_body("a@example.com"))
        await varsel.workers.drain()
        assert await _feed(client, auth) == []  # Processed, awaiting the report
        async with database.read() as conn:
            notification_id = (await conn.execute(select(email_notifications.c.id))).scalar_one()
        clock.advance(timedelta(minutes=1))
        report = DeliveryReport(str(notification_id), EmailStatus.DELIVERED)
        assert [s.value for s in await varsel.reports.receive("email", "acs", [report])] == ["applied"]
        (entry,) = await _feed(client, auth)
        assert (entry["shipmentId"], entry["status"], entry["lastUpdate"]) == (
            order_id,
            "Order_Completed",
            "2026-03-02T10:01:00Z",
        )
        assert entry["recipients"] == [
            {"destination": "a@example.com", "status": "Email_Delivered", "lastUpdate": "2026-03-02T10:01:00Z"}
        ]
    await varsel.close()


async def test_an_entry_holds_every_notification_email_first(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await load(varsel.database, clock, [
        {"kind": "organization", "organizationNumber": "311000001", "name": "Testbedrift AS",
         "emailAddresses": ["post@testbedrift.example.com", "varsel@testbedrift.example.com"],
         "mobileNumbers": ["+4790002001"]},
    ])  # fmt: skip
    body = {
        "notificationChannel": "EmailAndSms",
        "sendersReference": "both",
        "recipients": [{"organizationNumber": "311000001"}, {"emailAddress": "x@example.com"}],
        "emailTemplate": {"subject": "s", "body": "b"},
        "smsTemplate": {"body": "b"},
    }
    order_id = await place(client, auth, body, path="/orders")
    await varsel.workers.drain()
    (entry,) = await _feed(client, auth)
    assert entry["shipmentId"] == order_id
    statuses = [(r["destination"], r["status"]) for r in entry["recipients"]]
    assert sorted(statuses[:3]) == [
        ("post@testbedrift.example.com", "Email_Delivered"),
        ("varsel@testbedrift.example.com", "Email_Delivered"),
        ("x@example.com", "Email_Delivered"),
    ]
    assert statuses[3:] == [("+4790002001", "SMS_Delivered")]
    # The manifest says the same, read from the notifications themselves.
    manifest = (await client.get(f"{FUTURE}/shipment/{order_id}", headers=auth())).json()
    assert [(r["destination"], r["status"]) for r in manifest["recipients"]] == statuses
