"""POST /future/orders stores a chain as ordinary orders; its receipt, its Location and GET /orders/chain/{id}; the
422 for recipients without contact details; tenancy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import func, select

from tests.api_v2.helpers import (
    CHAIN,
    V1,
    Auth,
    chain,
    email_recipient,
    external_recipient,
    org_recipient,
    person_recipient,
    post,
    sms_recipient,
)
from tests.conftest import NOW
from tests.recipients.registry_data import load
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import order_chains, order_recipients, orders


def _iso(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


async def _register(varsel: Varsel, clock: FrozenClock, *records: dict[str, Any]) -> None:
    summary = await load(varsel.database, clock, list(records))
    assert summary.rejected == []


PERSON = {"kind": "person", "nationalIdentityNumber": "01017012345", "name": "Ola", "emailAddress": "ola@example.no",
          "mobileNumber": "+4799999999"}  # fmt: skip
ORG = {"kind": "organization", "organizationNumber": "910000001", "name": "Firma", "emailAddresses": ["post@firma.no"]}


async def _order_rows(varsel: Varsel) -> list[Any]:
    async with varsel.database.read() as conn:
        return list((await conn.execute(select(orders).order_by(orders.c.chain_position))).all())


async def test_a_chain_is_a_main_order_and_reminder_orders_read_through_v1(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await _register(varsel, clock, PERSON)
    main_time = NOW + timedelta(hours=2)
    explicit = NOW + timedelta(days=30, hours=3)
    body = chain(
        "chain-1",
        person_recipient(channel="EmailPreferred", resourceId="urn:altinn:resource:app_ttd_x", ignoreReservation=True),
        sendersReference="case-1",
        requestedSendTime=main_time.astimezone().isoformat(),
        conditionEndpoint="https://so.example.no/cond?id=1",
        dialogportenAssociation={"dialogId": "d-1", "transmissionId": "t-1"},
        reminders=[
            {"delayDays": "3", "sendersReference": "case-1-r1", "conditionEndpoint": "https://so.example.no/r1",
             "recipient": sms_recipient("004799999998", sendingTimePolicy="Anytime")},
            {"requestedSendTime": explicit.isoformat().replace("+00:00", "+00:00"),
             "recipient": email_recipient("Kari@Example.COM", contentType="Html", subject="a\r\nb\nc\n\rd")},
        ],
    )  # fmt: skip
    response = await post(client, auth, body)
    assert response.status_code == 201, response.text
    receipt = response.json()
    chain_id = receipt["notificationOrderId"]
    assert response.headers["Location"] == f"http://varsel.test{CHAIN}/{chain_id}"
    main_id = receipt["notification"]["shipmentId"]
    r1, r2 = (r["shipmentId"] for r in receipt["notification"]["reminders"])
    assert receipt == {
        "notificationOrderId": chain_id,
        "notification": {
            "shipmentId": main_id,
            "sendersReference": "case-1",
            "reminders": [{"shipmentId": r1, "sendersReference": "case-1-r1"}, {"shipmentId": r2}],
        },
    }
    assert len({chain_id, main_id, r1, r2}) == 4

    main = (await client.get(f"{V1}/{main_id}", headers=auth())).json()
    assert main["notificationChannel"] == "EmailPreferred"
    assert main["requestedSendTime"] == _iso(main_time)
    assert main["sendersReference"] == "case-1"
    assert main["conditionEndpoint"] == "https://so.example.no/cond?id=1"
    assert main["resourceId"] == "urn:altinn:resource:app_ttd_x"
    assert main["ignoreReservation"] is True
    assert main["recipients"] == [{"nationalIdentityNumber": "01017012345"}]
    assert main["emailTemplate"]["subject"] == "Your case"
    assert main["smsTemplate"]["body"] == "Your case has news"

    first = (await client.get(f"{V1}/{r1}", headers=auth())).json()
    assert first["notificationChannel"] == "Sms"
    assert first["requestedSendTime"] == _iso(main_time + timedelta(days=3))  # by delayDays from the main time
    assert first["recipients"] == [{"mobileNumber": "+4799999998"}]  # normalised to E.164
    assert first["conditionEndpoint"] == "https://so.example.no/r1"
    second = (await client.get(f"{V1}/{r2}", headers=auth())).json()
    assert second["notificationChannel"] == "Email"
    assert second["requestedSendTime"] == _iso(explicit)  # its own time
    assert "sendersReference" not in second
    assert "conditionEndpoint" not in second
    assert second["recipients"] == [{"emailAddress": "Kari@example.com"}]
    assert second["emailTemplate"]["subject"] == "a b c  d"  # each CR LF, CR or LF one space
    assert second["emailTemplate"]["contentType"] == "Html"

    listed = (await client.get(V1, params={"sendersReference": "case-1-r1"}, headers=auth())).json()
    assert [order["id"] for order in listed["orders"]] == [r1]

    rows = await _order_rows(varsel)
    assert [(str(r.id), r.order_type, str(r.chain_id), r.chain_position) for r in rows] == [
        (main_id, "Notification", chain_id, 0),
        (r1, "Reminder", chain_id, 1),
        (r2, "Reminder", chain_id, 2),
    ]
    assert [r.sms_sending_time_policy for r in rows][:2] == ["Daytime", "Anytime"]  # SMS default Daytime
    async with varsel.database.read() as conn:
        stored = (await conn.execute(select(order_chains))).one()
    assert stored.dialogporten_association == {"dialogId": "d-1", "transmissionId": "t-1"}
    assert (stored.creator, stored.family, stored.idempotency_id) == ("ttd", "orders", "chain-1")

    # The Location answers the receipt, each shipment with its delivery manifest.
    located = await client.get(response.headers["Location"].removeprefix("http://varsel.test"), headers=auth())
    assert located.status_code == 200
    answer = located.json()
    manifests = [answer["notification"].pop("manifest")]
    manifests += [reminder.pop("manifest") for reminder in answer["notification"]["reminders"]]
    assert answer == receipt
    assert [(m["shipmentId"], m["type"], m["status"], m["recipients"]) for m in manifests] == [
        (main_id, "Notification", "Order_Registered", []),
        (r1, "Reminder", "Order_Registered", []),
        (r2, "Reminder", "Order_Registered", []),
    ]
    assert [m.get("sendersReference") for m in manifests] == ["case-1", "case-1-r1", None]


@pytest.mark.parametrize(
    ("recipient", "channel", "stored"),
    [
        (email_recipient(), "Email", {"emailAddress": "ola@example.com"}),
        (sms_recipient(), "Sms", {"mobileNumber": "+4799999999"}),
        (person_recipient(channel="SmsPreferred"), "SmsPreferred", {"nationalIdentityNumber": "01017012345"}),
        (org_recipient(channel="EmailAndSms", smsSettings={"body": "x"}), "EmailAndSms",
         {"organizationNumber": "910000001"}),
        (external_recipient("urn:altinn:person:idporten-email:kari@example.com"), "Email", {}),
    ],
    ids=["email", "sms", "person", "organization", "external identity"],
)  # fmt: skip
async def test_each_recipient_kind_is_stored_as_an_order(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    recipient: dict[str, Any],
    channel: str,
    stored: dict[str, str],
) -> None:
    await _register(varsel, clock, PERSON, {**ORG, "mobileNumbers": ["+4791234567"]})
    response = await post(client, auth, chain(recipient=recipient))
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert "reminders" not in receipt["notification"]
    assert "sendersReference" not in receipt["notification"]
    order = (await client.get(f"{V1}/{receipt['notification']['shipmentId']}", headers=auth())).json()
    assert order["notificationChannel"] == channel
    assert order["requestedSendTime"] == _iso(NOW)  # no send time: now
    assert order["recipients"] == [stored]
    if not stored:  # v1 has no field for an external identity: it is stored on the recipient row
        async with varsel.database.read() as conn:
            identity = (await conn.execute(select(order_recipients.c.external_identity))).scalar_one()
        assert identity == "urn:altinn:person:idporten-email:kari@example.com"


async def test_pascal_case_bodies_and_integer_enums_are_accepted(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await _register(varsel, clock, PERSON)
    body = {
        "IdempotencyId": "pascal",
        "SendersReference": "ref",
        "Recipient": {"RecipientSms": {"PhoneNumber": "+4799999999",
                                       "SmsSettings": {"Body": "b", "SendingTimePolicy": 1}}},
        "Reminders": [{"DelayDays": 2, "Recipient": {"recipientperson": {
            "NATIONALIDENTITYNUMBER": "01017012345", "channelSchema": 4,
            "EmailSettings": {"Subject": "s", "Body": "b", "ContentType": 1, "sendingTimePolicy": 1},
            "SMSSETTINGS": {"body": "b", "sendingTimePolicy": 2}}}}],
    }  # fmt: skip
    response = await post(client, auth, body)
    assert response.status_code == 201, response.text
    assert response.json()["notification"]["sendersReference"] == "ref"
    rows = await _order_rows(varsel)
    assert [(r.notification_channel, r.sms_sending_time_policy) for r in rows] == [
        ("Sms", "Anytime"),
        ("EmailAndSms", "Daytime"),
    ]
    assert rows[1].email_content_type == "Html"


async def test_a_chain_with_a_reminder_on_a_route_with_a_trailing_slash(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.post("/notifications/api/v1/future/orders/", json=chain(), headers=auth())
    assert response.status_code == 201


async def test_missing_contact_information_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    # The person is unknown to the registry: missing.
    response = await post(client, auth, chain("k", person_recipient("01017099999")))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem.pop("traceId").startswith("00-")
    assert problem == {
        "type": "urn:altinn:error:NOT-00001",
        "title": "Missing contact information for recipient(s)",
        "status": 422,
        "code": "NOT-00001",
        "statusDescription": "Unprocessable Entity",
    }
    # A reminder's recipient counts too: the main one has contact details, the reminder's organisation none.
    await _register(varsel, clock, PERSON, {"kind": "organization", "organizationNumber": "910000002"})
    body = chain("k", person_recipient(), reminders=[{"delayDays": 1, "recipient": org_recipient("910000002")}])
    assert (await post(client, auth, body)).status_code == 422
    # A person with only a mobile number has nothing for the Email channel.
    await _register(varsel, clock, {**PERSON, "nationalIdentityNumber": "01017000001", "emailAddress": None})
    assert (await post(client, auth, chain("k", person_recipient("01017000001", channel="Email")))).status_code == 422
    assert await _order_rows(varsel) == []
    async with varsel.database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(order_chains))).scalar_one() == 0
    # With contact details the same key is free: nothing was stored under it.
    assert (await post(client, auth, chain("k", person_recipient("01017000001", channel="Sms")))).status_code == 201


async def test_reserved_persons_are_not_missing(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await _register(varsel, clock, {"kind": "person", "nationalIdentityNumber": "01017054321", "isReserved": True})
    for ignore in (False, True):
        body = chain(f"reserved-{ignore}", person_recipient("01017054321", ignoreReservation=ignore))
        response = await post(client, auth, body)
        if ignore:
            # Ignoring the reservation, the person has no contact details at all: missing.
            assert response.status_code == 422
        else:
            assert response.status_code == 201, response.text


async def test_unknown_self_identified_users_are_missing(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await post(client, auth, chain(recipient=external_recipient("urn:altinn:party:username:nobody")))
    assert response.status_code == 422
    assert response.json()["code"] == "NOT-00001"


async def test_another_orgs_chain_and_shipments_are_invisible(client: httpx.AsyncClient, auth: Auth) -> None:
    receipt = (await post(client, auth, chain(reminders=[{"delayDays": 1, "recipient": sms_recipient()}]))).json()
    chain_id = receipt["notificationOrderId"]
    shipments = [receipt["notification"]["shipmentId"], receipt["notification"]["reminders"][0]["shipmentId"]]
    other = await client.get(f"{CHAIN}/{chain_id}", headers=auth("digdir"))
    assert other.status_code == 404
    assert other.headers["content-type"].startswith("application/problem+json")
    for shipment in shipments:
        assert (await client.get(f"{V1}/{shipment}", headers=auth("digdir"))).status_code == 404
        assert (await client.put(f"{V1}/{shipment}/cancel", headers=auth("digdir"))).status_code == 404
        assert (await client.get(f"{V1}/{shipment}", headers=auth())).status_code == 200
    # A shipment id, an unknown id or no id at all is no chain.
    for wrong in (shipments[0], str(UUID(int=1)), "not-an-id"):
        assert (await client.get(f"{CHAIN}/{wrong}", headers=auth())).status_code == 404
    assert (await client.get(f"{CHAIN}/{chain_id}")).status_code == 401


async def test_a_reminder_is_cancelled_alone_through_v1(client: httpx.AsyncClient, auth: Auth) -> None:
    body = chain(
        requestedSendTime=_iso(NOW + timedelta(hours=1)), reminders=[{"delayDays": 1, "recipient": sms_recipient()}]
    )
    receipt = (await post(client, auth, body)).json()["notification"]
    reminder = receipt["reminders"][0]["shipmentId"]
    cancelled = await client.put(f"{V1}/{reminder}/cancel", headers=auth())
    assert cancelled.status_code == 200
    assert cancelled.json()["processingStatus"]["status"] == "Cancelled"
    main = (await client.get(f"{V1}/{receipt['shipmentId']}/status", headers=auth())).json()
    assert main["processingStatus"]["status"] == "Registered"
    chain_id = (await post(client, auth, body)).json()["notificationOrderId"]  # a replay: the same chain
    shown = (await client.get(f"{CHAIN}/{chain_id}", headers=auth())).json()["notification"]
    assert shown["manifest"]["status"] == "Order_Registered"
    assert shown["reminders"][0]["manifest"]["status"] == "Order_Cancelled"


async def test_openapi_documents_the_v2_models_example_and_answers(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/notifications/api/v1/future/orders"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/NotificationOrderChainRequestExt"}
    assert content["example"]["reminders"][0]["delayDays"] == 7
    assert {"200", "201", "400", "401", "403", "422"} <= set(operation["responses"])
    assert "Location" in operation["responses"]["201"]["headers"]
    schemas = spec["components"]["schemas"]
    for name in ("NotificationOrderChainRequestExt", "NotificationOrderChainResponseExt", "AltinnProblemDetails",
                 "RecipientPersonExt", "RecipientExternalIdentityExt", "NotificationReminderExt"):  # fmt: skip
        assert name in schemas
    assert "/notifications/api/v1/orders/chain/{id}" in spec["paths"]
    receipt = schemas["NotificationOrderChainResponseExt"]["examples"][0]
    assert receipt["notification"]["reminders"][0]["shipmentId"]


async def test_the_openapi_example_is_accepted(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    await _register(varsel, clock, PERSON)
    spec = (await client.get("/openapi.json")).json()
    example = spec["paths"]["/notifications/api/v1/future/orders"]["post"]["requestBody"]["content"]["application/json"]
    response = await post(client, auth, example["example"])
    assert response.status_code == 201, response.text
