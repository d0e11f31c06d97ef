"""GET /future/shipment/{id}: an order's delivery manifest through its life, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import update

from tests.api_v2.helpers import chain, post, sms_recipient
from tests.conftest import NOW
from tests.dispatch.test_pipeline import ConditionPeer
from tests.recipients.registry_data import load
from tests.shipments.helpers import FUTURE, V1, Auth, email_body, place
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import orders
from varsel.providers.base import Accepted, EmailMessage
from varsel.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": ["127.0.0.1"]})


@pytest.fixture
def condition_peer() -> Iterator[ConditionPeer]:
    peer = ConditionPeer()
    yield peer
    peer.close()


async def _manifest(client: httpx.AsyncClient, auth: Auth, order_id: str, org: str = "ttd") -> dict[str, Any]:
    response = await client.get(f"{FUTURE}/shipment/{order_id}", headers=auth(org))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_v1_order_from_registered_to_completed(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    send_time = NOW + timedelta(hours=1)
    order_id = await place(
        client, auth, email_body("a@example.com", "b@example.com", sendersReference="case-1",
                                 requestedSendTime=send_time.isoformat()),
    )  # fmt: skip
    registered = await _manifest(client, auth, order_id)
    assert registered == {
        "shipmentId": order_id,
        "sendersReference": "case-1",
        "type": "Notification",
        "status": "Order_Registered",
        "lastUpdate": "2026-03-02T10:00:00Z",
        "recipients": [],
    }
    clock.advance(timedelta(hours=1))
    await varsel.workers.processor.run_once()
    processed = await _manifest(client, auth, order_id)
    assert processed["status"] == "Order_Processed"  # as it is, unlike v1
    assert processed["lastUpdate"] == "2026-03-02T11:00:00Z"
    assert sorted(processed["recipients"], key=lambda r: r["destination"]) == [
        {"type": "Email", "destination": d, "status": "Email_New", "lastUpdate": "2026-03-02T11:00:00Z"}
        for d in ("a@example.com", "b@example.com")
    ]
    clock.advance(timedelta(seconds=30))
    await varsel.workers.drain()
    completed = await _manifest(client, auth, order_id)
    assert completed["status"] == "Order_Completed"
    assert completed["lastUpdate"] == "2026-03-02T11:00:30Z"
    assert {(r["destination"], r["status"]) for r in completed["recipients"]} == {
        ("a@example.com", "Email_Delivered"),
        ("b@example.com", "Email_Delivered"),
    }
    # The discriminator is written first, as Altinn's clients read it.
    assert all(next(iter(r)) == "type" for r in completed["recipients"])


async def test_sms_recipients_and_the_type_discriminator(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    order_id = await place(
        client, auth, {"body": "Hei", "recipients": [{"mobileNumber": "+4799999999"}]}, path="/orders/sms"
    )
    await varsel.workers.drain()
    response = await client.get(f"{FUTURE}/shipment/{order_id}", headers=auth())
    assert '"recipients":[{"type":"SMS"' in response.text.replace(" ", "").replace("\n", "")
    (recipient,) = response.json()["recipients"]
    assert recipient == {"type": "SMS", "destination": "+4799999999", "status": "SMS_Delivered",
                         "lastUpdate": "2026-03-02T10:00:00Z"}  # fmt: skip
    assert "sendersReference" not in response.json()  # null is omitted


async def test_reserved_and_unidentified_recipients_have_no_destination(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await load(varsel.database, clock, [
        {"kind": "person", "nationalIdentityNumber": "11876995923", "name": "R", "emailAddress": "r@example.com",
         "isReserved": True},
        {"kind": "person", "nationalIdentityNumber": "01017012345", "name": "O", "emailAddress": "ola@example.com"},
    ])  # fmt: skip
    recipients = [{"nationalIdentityNumber": n} for n in ("11876995923", "99999999999", "01017012345")]
    order_id = await place(client, auth, {"subject": "s", "body": "b", "recipients": recipients})
    await varsel.workers.drain()
    manifest = await _manifest(client, auth, order_id)
    assert manifest["status"] == "Order_Completed"
    assert sorted((r["type"], r["destination"], r["status"]) for r in manifest["recipients"]) == [
        ("Email", "", "Email_Failed_RecipientNotIdentified"),
        ("Email", "", "Email_Failed_RecipientReserved"),
        ("Email", "ola@example.com", "Email_Delivered"),
    ]


async def test_a_cancelled_order(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    send_time = (NOW + timedelta(hours=1)).isoformat()
    order_id = await place(client, auth, email_body("a@example.com", requestedSendTime=send_time))
    assert (await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())).status_code == 200
    manifest = await _manifest(client, auth, order_id)
    assert (manifest["status"], manifest["recipients"]) == ("Order_Cancelled", [])


async def test_a_send_condition_not_met(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, condition_peer: ConditionPeer
) -> None:
    order_id = await place(client, auth, email_body("a@example.com", conditionEndpoint=condition_peer.url + "/no"))
    await varsel.workers.drain()
    manifest = await _manifest(client, auth, order_id)
    assert (manifest["status"], manifest["recipients"]) == ("Order_SendConditionNotMet", [])


async def test_the_order_type_is_the_shipment_type(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, database: Database
) -> None:
    order_id = await place(client, auth, email_body("a@example.com"))
    async with database.transaction() as conn:
        await conn.execute(update(orders).where(orders.c.id == UUID(order_id)).values(order_type="Reminder"))
    assert (await _manifest(client, auth, order_id))["type"] == "Reminder"


async def test_another_orgs_or_an_unknown_shipment_is_not_found(client: httpx.AsyncClient, auth: Auth) -> None:
    order_id = await place(client, auth, email_body("a@example.com"))
    for org, shipment_id in (("nav", order_id), ("ttd", "0190a4d2-5f3e-7b6a-9c1d-2e3f4a5b6c7d")):
        response = await client.get(f"{FUTURE}/shipment/{shipment_id}", headers=auth(org))
        assert response.status_code == 404
        body = response.json()
        assert body.pop("traceId")
        assert body == {"type": "urn:altinn:error:NOT-00003", "title": "Shipment not found", "status": 404,
                        "code": "NOT-00003", "statusDescription": "Not Found"}  # fmt: skip
    assert (await _manifest(client, auth, order_id))["shipmentId"] == order_id


async def test_a_non_guid_is_a_plain_not_found_even_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{FUTURE}/shipment/not-a-guid")
    assert response.status_code == 404
    assert "code" not in response.json()


async def test_a_token_is_required(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{FUTURE}/shipment/0190a4d2-5f3e-7b6a-9c1d-2e3f4a5b6c7d")
    assert response.status_code == 401


class AcceptingProvider:
    """Accepts every email; a delivery report would follow, but never does."""

    name = "acs"

    async def send(self, message: EmailMessage) -> Accepted:
        return Accepted(reference=str(message.notification_id))

    async def close(self) -> None:
        return None


async def test_awaiting_a_report_then_expired(
    settings: Settings, database: Database, clock: FrozenClock, auth: Auth
) -> None:
    varsel = build(settings, clock=clock, database=database, email_provider=AcceptingProvider())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://t") as client:
        order_id = await place(client, auth, email_body("a@example.com"))
        await varsel.workers.drain()
        manifest = await _manifest(client, auth, order_id)
        assert manifest["status"] == "Order_Processed"
        assert [r["status"] for r in manifest["recipients"]] == ["Email_Succeeded"]
        clock.advance(timedelta(hours=49))
        await varsel.workers.drain()
        manifest = await _manifest(client, auth, order_id)
        assert manifest["status"] == "Order_Completed"
        assert [r["status"] for r in manifest["recipients"]] == ["Email_Failed_TTL"]
    await varsel.close()


async def test_a_chains_main_order_and_reminder_are_shipments_with_their_types(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    body = chain(
        "shipments-1",
        sendersReference="case-9",
        reminders=[{"delayDays": 3, "sendersReference": "case-9-r1", "recipient": sms_recipient()}],
    )
    response = await post(client, auth, body)
    assert response.status_code == 201, response.text
    receipt = response.json()["notification"]
    main_id, reminder_id = receipt["shipmentId"], receipt["reminders"][0]["shipmentId"]
    await varsel.workers.drain()
    main = await _manifest(client, auth, main_id)
    assert (main["type"], main["status"], main["sendersReference"]) == ("Notification", "Order_Completed", "case-9")
    assert [(r["type"], r["destination"], r["status"]) for r in main["recipients"]] == [
        ("Email", "ola@example.com", "Email_Delivered")
    ]
    reminder = await _manifest(client, auth, reminder_id)
    assert (reminder["type"], reminder["status"], reminder["recipients"]) == ("Reminder", "Order_Registered", [])
    clock.advance(timedelta(days=3))
    await varsel.workers.drain()
    reminder = await _manifest(client, auth, reminder_id)
    assert (reminder["status"], reminder["sendersReference"]) == ("Order_Completed", "case-9-r1")
    assert [(r["type"], r["destination"], r["status"]) for r in reminder["recipients"]] == [
        ("SMS", "+4799999999", "SMS_Delivered")
    ]
    # Both in the feed, by their types.
    feed = (await client.get(f"{FUTURE}/shipment/feed", headers=auth())).json()
    assert [(e["shipmentId"], e["shipmentType"]) for e in feed] == [
        (main_id, "Notification"),
        (reminder_id, "Reminder"),
    ]
    # Another org sees neither.
    for shipment_id in (main_id, reminder_id):
        other = await client.get(f"{FUTURE}/shipment/{shipment_id}", headers=auth("nav"))
        assert (other.status_code, other.json()["code"]) == (404, "NOT-00003")
