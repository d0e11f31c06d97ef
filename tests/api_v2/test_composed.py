"""POST /future/orders/composed-email (reference 3): the order it stores (a chain of one Composed order with its
attachments), its receipt and Location, idempotency, the composed scope, tenancy, and the order going through the
ordinary pipeline to the outbox, with its type in the manifest, the feed and v1."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import func, select

from tests.api_v2.composed_helpers import (
    COMPOSED,
    COMPOSED_SCOPE,
    OMIT,
    Auth,
    attachment,
    composed,
    post_composed,
    sas_url,
    stored_attachments,
)
from tests.api_v2.helpers import CHAIN, V1, chain, post
from tests.conftest import CREATE_SCOPE, NOW
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import order_chains, orders
from varsel.settings import Settings

FUTURE = "/notifications/api/v1/future"


async def _count(varsel: Varsel, table: Any) -> int:
    async with varsel.database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _order(varsel: Varsel, order_id: str) -> Any:
    async with varsel.database.read() as conn:
        return (await conn.execute(select(orders).where(orders.c.id == UUID(order_id)))).one()


def _iso(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


async def test_a_composed_email_is_one_composed_order_with_its_attachments(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, settings: Settings
) -> None:
    send_time = NOW + timedelta(hours=1)
    second = sas_url(path="/letters/4711/annex%201.xlsx", se="2026-03-02T11%3A15%3A00Z")
    body = composed(
        "composed-1",
        address="Kari@Example.COM",
        sendersReference="case-4711",
        requestedSendTime=send_time.isoformat(),
        conditionEndpoint="https://so.example.no/cond?id=4711",
        dialogportenAssociation={"dialogId": "d-1", "transmissionId": "t-1"},
        contentType="Html",
        subject="Your\r\ndecision",
        attachments=[
            attachment(),
            attachment(filename="annex 1.xlsx", mimeType="application/VND.ms-excel", sasUrl=second),
        ],
    )
    response = await post_composed(client, auth, body)
    assert response.status_code == 201, response.text
    receipt = response.json()
    chain_id, shipment_id = receipt["notificationOrderId"], receipt["notification"]["shipmentId"]
    # The chain's receipt, never with reminders (reference 3.3, 1.4).
    assert receipt == {"notificationOrderId": chain_id,
                       "notification": {"shipmentId": shipment_id, "sendersReference": "case-4711"}}  # fmt: skip
    assert response.headers["Location"] == f"http://varsel.test{CHAIN}/{chain_id}"

    row = await _order(varsel, shipment_id)
    assert (row.order_type, row.notification_channel, row.creator) == ("Composed", "Email", "ttd")
    assert await stored_attachments(varsel, shipment_id) == [
        {"filename": "contract.pdf", "mimeType": "application/pdf", "url": sas_url()},
        {"filename": "annex 1.xlsx", "mimeType": "application/vnd.ms-excel", "url": second},
    ]
    async with varsel.database.read() as conn:
        stored_chain = (await conn.execute(select(order_chains))).one()
    assert (stored_chain.family, stored_chain.creator) == ("composed", "ttd")

    # An ordinary order: v1 reads it.
    order = (await client.get(f"{V1}/{shipment_id}", headers=auth())).json()
    assert order["notificationChannel"] == "Email"
    assert order["requestedSendTime"] == _iso(send_time)
    assert order["conditionEndpoint"] == "https://so.example.no/cond?id=4711"
    assert order["recipients"] == [{"emailAddress": "Kari@example.com"}]
    template = order["emailTemplate"]
    assert (template["subject"], template["contentType"]) == ("Your decision", "Html")
    assert template["fromAddress"] == settings.defaults.email_from_address  # none given: the configured default
    manifest = (await client.get(f"{FUTURE}/shipment/{shipment_id}", headers=auth())).json()
    assert (manifest["type"], manifest["status"], manifest["recipients"]) == ("Composed", "Order_Registered", [])
    shown = (await client.get(f"{CHAIN}/{chain_id}", headers=auth())).json()
    assert shown["notification"]["manifest"]["type"] == "Composed"
    assert "reminders" not in shown["notification"]


async def test_the_sender_address_given_is_used(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await post_composed(client, auth, composed(senderEmailAddress=" post@etat.example.no "))
    assert response.status_code == 201, response.text
    order = (await client.get(f"{V1}/{response.json()['notification']['shipmentId']}", headers=auth())).json()
    assert order["emailTemplate"]["fromAddress"] == "post@etat.example.no"


async def test_pascal_case_names_and_integer_enums_are_accepted(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    body = {
        "IdempotencyId": "pascal",
        "SendersReference": "pascal-ref",
        "Recipient": {
            "EmailAddress": "ola@example.com",
            "EmailSettings": {
                "Subject": "s",
                "Body": "b",
                "ContentType": 1,
                "SendingTimePolicy": 1,
                "Attachments": [{"FileName": "a.pdf", "MIMETYPE": "application/pdf", "SasURL": sas_url()}],
            },
        },
        "unknownProperty": {"ignored": True},
    }
    response = await post_composed(client, auth, body)
    assert response.status_code == 201, response.text
    shipment_id = response.json()["notification"]["shipmentId"]
    assert response.json()["notification"]["sendersReference"] == "pascal-ref"
    assert (await stored_attachments(varsel, shipment_id))[0]["filename"] == "a.pdf"
    order = (await client.get(f"{V1}/{shipment_id}", headers=auth())).json()
    assert order["emailTemplate"]["contentType"] == "Html"


async def test_without_attachments_it_is_an_email_order_of_its_own_type(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    for key, attachments in (("none", OMIT), ("null", None), ("empty", [])):
        response = await post_composed(client, auth, composed(key, attachments=attachments))
        assert response.status_code == 201, response.text
        row = await _order(varsel, response.json()["notification"]["shipmentId"])
        assert (row.order_type, row.attachments) == ("Composed", None)


async def test_a_route_with_a_trailing_slash_in_another_case(client: httpx.AsyncClient, auth: Auth) -> None:
    headers = auth(scopes=[COMPOSED_SCOPE])
    response = await client.post(f"{FUTURE}/Orders/Composed-Email/", json=composed(), headers=headers)
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------- idempotency


async def test_a_replay_answers_200_with_the_first_receipt_and_ignores_the_new_body(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    first = await post_composed(client, auth, composed("same", sendersReference="a"))
    assert first.status_code == 201
    again = await post_composed(client, auth, composed("same", address="other@example.com", sendersReference="b"))
    assert again.status_code == 200
    assert "Location" not in again.headers
    assert again.json() == first.json()
    assert await _count(varsel, orders) == 1
    # Another spelling is another key.
    assert (await post_composed(client, auth, composed("Same"))).status_code == 201


async def test_a_replay_whose_body_has_since_become_invalid_still_gets_its_receipt(
    client: httpx.AsyncClient, auth: Auth, clock: FrozenClock
) -> None:
    body = composed("late", requestedSendTime=(NOW + timedelta(minutes=10)).isoformat())
    first = await post_composed(client, auth, body)
    assert first.status_code == 201, first.text
    clock.advance(timedelta(days=2))  # the send time has passed
    again = await post_composed(client, auth, body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    body["idempotencyId"] = "late-2"
    refused = await post_composed(client, auth, body)
    assert refused.status_code == 400
    assert set(refused.json()["errors"]) == {"RequestedSendTime"}


async def test_twenty_concurrent_first_requests_make_one_order(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    headers = auth(scopes=[COMPOSED_SCOPE])
    responses = await asyncio.gather(
        *(client.post(COMPOSED, json=composed("race"), headers=headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code >= 300]
    assert len({r.text for r in responses}) == 1
    assert await _count(varsel, order_chains) == 1
    assert await _count(varsel, orders) == 1


async def test_the_composed_family_keeps_its_keys_apart(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    ordered = await post(client, auth, chain("shared-key"))
    assert ordered.status_code == 201
    composed_order = await post_composed(client, auth, composed("shared-key"))
    assert composed_order.status_code == 201, composed_order.text
    assert composed_order.json()["notificationOrderId"] != ordered.json()["notificationOrderId"]
    assert (await post_composed(client, auth, composed("shared-key"))).json() == composed_order.json()
    # And per service owner.
    other = await post_composed(client, auth, composed("shared-key"), org="digdir")
    assert other.status_code == 201
    assert await _count(varsel, order_chains) == 3


# ---------------------------------------------------------------- the scope, the creator, tenancy


async def test_the_create_scope_alone_is_forbidden(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    response = await post_composed(client, auth, composed(), scopes=[CREATE_SCOPE])
    assert response.status_code == 403
    assert COMPOSED_SCOPE in response.json()["detail"]
    both = await post_composed(client, auth, composed(), scopes=[CREATE_SCOPE, COMPOSED_SCOPE])
    assert both.status_code == 201
    assert await _count(varsel, orders) == 1


async def test_a_platform_access_token_alone_is_forbidden(
    client: httpx.AsyncClient, token: Any, varsel: Varsel
) -> None:
    response = await client.post(COMPOSED, json=composed(), headers={"PlatformAccessToken": token(platform=True)})
    assert response.status_code == 403
    assert "platform access token" in response.json()["detail"]
    assert await _count(varsel, orders) == 0


async def test_a_platform_access_token_names_the_creator_beside_a_scoped_bearer_token(
    client: httpx.AsyncClient, token: Any, auth: Auth, varsel: Varsel
) -> None:
    # Reference 0.4: the header's issuer is the creator wherever it is sent; the bearer token carries the scope.
    headers = {**auth("ttd", scopes=[COMPOSED_SCOPE]), "PlatformAccessToken": token("digdir", platform=True)}
    response = await client.post(COMPOSED, json=composed(), headers=headers)
    assert response.status_code == 201, response.text
    row = await _order(varsel, response.json()["notification"]["shipmentId"])
    assert row.creator == "digdir"


async def test_policy_before_body_and_creator_after_it(client: httpx.AsyncClient, auth: Auth, token: Any) -> None:
    assert (await client.post(COMPOSED, json={})).status_code == 401
    # A wrong scope is 403 whatever the body.
    assert (await post_composed(client, auth, {}, scopes=[CREATE_SCOPE])).status_code == 403
    wrong = auth(scopes=[CREATE_SCOPE])
    assert (await client.post(COMPOSED, content=b"x", headers=wrong)).status_code == 403
    right = auth(scopes=[COMPOSED_SCOPE])
    assert (await client.post(COMPOSED, content=b"x", headers=right)).status_code == 415
    # A token without a service owner: the body's rules first (400), then the creator (403), as the reference.
    no_org = {"Authorization": f"Bearer {token('', scopes=[COMPOSED_SCOPE])}"}
    invalid = await client.post(COMPOSED, json=composed(address="nope"), headers=no_org)
    assert invalid.status_code == 400, invalid.text
    valid = await client.post(COMPOSED, json=composed(), headers=no_org)
    assert valid.status_code == 403


async def test_another_owner_cannot_read_the_shipment(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await post_composed(client, auth, composed())
    shipment_id = response.json()["notification"]["shipmentId"]
    chain_id = response.json()["notificationOrderId"]
    other = await client.get(f"{FUTURE}/shipment/{shipment_id}", headers=auth("digdir"))
    assert (other.status_code, other.json()["code"]) == (404, "NOT-00003")
    assert (await client.get(f"{V1}/{shipment_id}", headers=auth("digdir"))).status_code == 404
    assert (await client.get(f"{CHAIN}/{chain_id}", headers=auth("digdir"))).status_code == 404
    assert (await client.get(f"{FUTURE}/shipment/{shipment_id}", headers=auth())).status_code == 200


# ---------------------------------------------------------------- through the pipeline


def _outbox(settings: Settings) -> list[str]:
    return sorted(path.read_text() for path in (settings.data_dir / "outbox" / "email").glob("*.eml"))


async def test_a_composed_email_without_attachments_is_sent_and_reads_as_composed_everywhere(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    response = await post_composed(
        client, auth, composed("sent", address="kari@example.com", sendersReference="case-1", attachments=OMIT)
    )
    assert response.status_code == 201, response.text
    shipment_id = response.json()["notification"]["shipmentId"]
    await varsel.workers.drain()

    sent = _outbox(settings)
    assert len(sent) == 1
    assert "To: kari@example.com" in sent[0]
    assert "Subject: Your decision" in sent[0]
    manifest = (await client.get(f"{FUTURE}/shipment/{shipment_id}", headers=auth())).json()
    assert (manifest["type"], manifest["status"], manifest["sendersReference"]) == (
        "Composed",
        "Order_Completed",
        "case-1",
    )
    assert [(r["type"], r["destination"], r["status"]) for r in manifest["recipients"]] == [
        ("Email", "kari@example.com", "Email_Delivered")
    ]
    clock.advance(timedelta(seconds=3))  # the feed shows entries older than 2 seconds
    feed = (await client.get(f"{FUTURE}/shipment/feed", headers=auth())).json()
    assert [(e["shipmentId"], e["shipmentType"], e["status"]) for e in feed] == [
        (shipment_id, "Composed", "Order_Completed")
    ]
    order = (await client.get(f"{V1}/{shipment_id}", headers=auth())).json()
    assert order["notificationChannel"] == "Email"
    notifications = (await client.get(f"{V1}/{shipment_id}/notifications/email", headers=auth())).json()
    assert notifications["orderId"] == shipment_id
    assert [n["recipient"]["emailAddress"] for n in notifications["notifications"]] == ["kari@example.com"]
    assert (await client.get(f"{FUTURE}/shipment/feed", headers=auth("digdir"))).json() == []


# ---------------------------------------------------------------- OpenAPI, hostile bodies


async def test_openapi_documents_the_route(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"][COMPOSED]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/ComposedEmailRequestExt"}
    assert len(content["example"]["recipient"]["emailSettings"]["attachments"]) == 1
    assert {"200", "201", "400", "401", "403", "413", "415", "503"} <= set(operation["responses"])
    assert "422" not in operation["responses"]
    assert "Location" in operation["responses"]["201"]["headers"]
    assert operation["summary"]
    assert operation["description"]
    for name in ("ComposedEmailRequestExt", "RecipientComposedEmailExt", "ComposedEmailSendingOptionsExt",
                 "SasFileReferenceExt"):  # fmt: skip
        assert name in spec["components"]["schemas"]


async def test_the_openapi_example_is_accepted(client: httpx.AsyncClient, auth: Auth) -> None:
    spec = (await client.get("/openapi.json")).json()
    example = spec["paths"][COMPOSED]["post"]["requestBody"]["content"]["application/json"]["example"]
    response = await post_composed(client, auth, example)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"[" * 100_000, 400),
        (b'{"idempotencyId": "x", "recipient": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", 400),
        (b"\xff\xfe{}", 400),
        (b'{"idempotencyId": "\\ud800", "sendersReference": "hostile"}', 400),
        (b"", 400),
        (b"null", 400),
        (json.dumps(composed(attachments=[attachment(filename="a\x00.pdf")])).encode(), 400),
        (json.dumps(composed(sendersReference="hostile", attachments={"a": 1})).encode(), 400),
        (b"x" * (3 * 1024 * 1024), 413),
    ],
    ids=["100000-brackets", "deep-recipient", "bad-utf8", "lone-surrogate", "empty", "null", "nul-in-filename",
         "attachments-an-object", "3-MiB"],
)  # fmt: skip
async def test_a_hostile_body_is_a_problem_and_nothing_is_stored(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, raw: bytes, status: int
) -> None:
    headers = {**auth(scopes=[COMPOSED_SCOPE]), "Content-Type": "application/json"}
    answer = await client.post(COMPOSED, content=raw, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert await _count(varsel, orders) == 0


async def test_a_thousand_attachments_are_one_order(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    # The reference sets no limit on attachments; the body limit bounds them, and the sender's size cap their bytes.
    body = composed(attachments=[attachment(filename=f"{i}.pdf") for i in range(1000)])
    response = await post_composed(client, auth, body)
    assert response.status_code == 201, response.text
    assert len(await stored_attachments(varsel, response.json()["notification"]["shipmentId"])) == 1000
