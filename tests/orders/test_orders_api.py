"""The v1 order endpoints: what a service owner sends, what it reads back, status, listing and cancelling."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update

from tests.conftest import NOW
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import email_notifications, orders, sms_notifications

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]

# Spec 003's first example, as a service owner's client sends it.
SPEC_003_EXAMPLE: dict[str, Any] = {
    "sendersReference": "9A547448-FDF4-4E60-87AC-C2F652C8353C",
    "emailTemplate": {
        "subject": "A test email from Altinn Notifications",
        "body": "A message to be sent immediately from an org.",
        "content-type": "Plain",
    },
    "smsTemplate": {"body": "Demo SMS content"},
    "notificationChannel": "emailPreferred",
    "recipients": [{"organizationNumber": "311000179"}, {"nationalIdentityNumber": "11876995923"}],
    "resourceId": "app_ttd_apps-test",
}


def _iso(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


async def _create(client: httpx.AsyncClient, auth: Auth, path: str = "/orders", org: str = "ttd", **body: Any) -> str:
    payload = body or SPEC_003_EXAMPLE
    response = await client.post(f"{V1}{path}", json=payload, headers=auth(org))
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def test_spec_003_example_is_accepted_and_read_back_as_registered(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.post(f"{V1}/orders", json=SPEC_003_EXAMPLE, headers=auth())
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    order_id = response.json()["orderId"]
    assert uuid.UUID(order_id)
    assert response.headers["location"] == f"http://varsel.test{V1}/orders/{order_id}"

    read = await client.get(f"{V1}/orders/{order_id}", headers=auth())
    assert read.status_code == 200
    assert read.json() == {
        "id": order_id,
        "creator": "ttd",
        "sendersReference": "9A547448-FDF4-4E60-87AC-C2F652C8353C",
        "requestedSendTime": _iso(NOW),
        "created": _iso(NOW),
        "notificationChannel": "EmailPreferred",
        "resourceId": "app_ttd_apps-test",
        "recipients": [{"organizationNumber": "311000179"}, {"nationalIdentityNumber": "11876995923"}],
        "emailTemplate": {
            "fromAddress": "noreply@varsel.local",
            "subject": "A test email from Altinn Notifications",
            "body": "A message to be sent immediately from an org.",
            "contentType": "Plain",
        },
        "smsTemplate": {"senderNumber": "Varsel", "body": "Demo SMS content"},
        "links": {
            "self": f"http://varsel.test{V1}/orders/{order_id}",
            "status": f"http://varsel.test{V1}/orders/{order_id}/status",
        },
    }


async def test_order_fields_round_trip(client: httpx.AsyncClient, auth: Auth) -> None:
    body = {
        "sendersReference": "case-17",
        "requestedSendTime": "2026-03-03T09:15:00+01:00",
        "conditionEndpoint": "https://apps.example.com/condition?instance=1",
        "ignoreReservation": True,
        "resourceId": "app_ttd_x",
        "resourceAction": "sign",
        "notificationChannel": "EmailAndSms",
        "emailTemplate": {"fromAddress": "post@example.com", "subject": "S", "body": "<p>B</p>", "contentType": "html"},
        "smsTemplate": {"senderNumber": "Etaten", "body": "SMS"},
        "recipients": [
            {"emailAddress": "one@example.com", "mobileNumber": "0047 98765432"},
            {"mobileNumber": "+4741234567"},
            {"organizationNumber": "312508729"},
        ],
    }
    order_id = await _create(client, auth, **body)
    order = (await client.get(f"{V1}/orders/{order_id}", headers=auth())).json()
    assert order["requestedSendTime"] == "2026-03-03T08:15:00Z"
    assert order["conditionEndpoint"] == "https://apps.example.com/condition?instance=1"
    assert order["ignoreReservation"] is True
    assert order["resourceAction"] == "sign"
    assert order["notificationChannel"] == "EmailAndSms"
    assert order["emailTemplate"] == {
        "fromAddress": "post@example.com",
        "subject": "S",
        "body": "<p>B</p>",
        "contentType": "Html",
    }
    assert order["smsTemplate"] == {"senderNumber": "Etaten", "body": "SMS"}
    # Recipients keep their order; mobile numbers are stored in E.164.
    assert order["recipients"] == [
        {"emailAddress": "one@example.com", "mobileNumber": "+4798765432"},
        {"mobileNumber": "+4741234567"},
        {"organizationNumber": "312508729"},
    ]


async def test_sms_order_endpoint(client: httpx.AsyncClient, auth: Auth) -> None:
    order_id = await _create(
        client,
        auth,
        "/orders/sms",
        senderNumber="+4790000000",
        body="Hei",
        recipients=[{"mobileNumber": "+4790000001"}],
    )
    order = (await client.get(f"{V1}/orders/{order_id}", headers=auth())).json()
    assert order["notificationChannel"] == "Sms"
    assert order["smsTemplate"] == {"senderNumber": "+4790000000", "body": "Hei"}
    assert "emailTemplate" not in order


async def test_status_of_a_new_order(client: httpx.AsyncClient, auth: Auth) -> None:
    order_id = await _create(client, auth)
    status = await client.get(f"{V1}/orders/{order_id}/status", headers=auth())
    assert status.status_code == 200
    url = f"http://varsel.test{V1}/orders/{order_id}"
    assert status.json() == {
        "id": order_id,
        "sendersReference": SPEC_003_EXAMPLE["sendersReference"],
        "requestedSendTime": _iso(NOW),
        "creator": "ttd",
        "created": _iso(NOW),
        "notificationChannel": "EmailPreferred",
        "resourceId": "app_ttd_apps-test",
        "processingStatus": {
            "status": "Registered",
            "description": "Order has been registered and is awaiting requested send time before processing.",
            "lastUpdate": _iso(NOW),
        },
        "notificationsStatusSummary": {
            "email": {"links": {"self": f"{url}/notifications/email"}, "generated": 0, "succeeded": 0},
            "sms": {"links": {"self": f"{url}/notifications/sms"}, "generated": 0, "succeeded": 0},
        },
    }


async def test_status_shows_the_resource_action(client: httpx.AsyncClient, auth: Auth) -> None:
    # The reference added resourceAction to every v1 order answer, /status included (#15).
    order_id = await _create(client, auth, **SPEC_003_EXAMPLE, resourceAction="sign")
    status = await client.get(f"{V1}/orders/{order_id}/status", headers=auth())
    assert (status.json()["resourceId"], status.json()["resourceAction"]) == ("app_ttd_apps-test", "sign")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/orders/email", {"email"}), ("/orders/sms", {"sms"})],
)
async def test_status_summary_names_only_the_channels_the_order_uses(
    client: httpx.AsyncClient, auth: Auth, path: str, expected: set[str]
) -> None:
    body: dict[str, Any] = {"body": "b", "recipients": [{"nationalIdentityNumber": "11876995923"}]}
    if path.endswith("email"):
        body["subject"] = "s"
    order_id = await _create(client, auth, path, **body)
    status = (await client.get(f"{V1}/orders/{order_id}/status", headers=auth())).json()
    assert set(status["notificationsStatusSummary"]) == expected


async def _add_notifications(varsel: Varsel, order_id: str, email: list[str], sms: list[str]) -> None:
    async with varsel.database.transaction() as conn:
        for offset, status in enumerate(email):
            await conn.execute(
                insert(email_notifications).values(
                    id=uuid.uuid4(), order_id=uuid.UUID(order_id), creator="ttd",
                    email_address=f"r{offset}@example.com",
                    status=status, status_changed=NOW + timedelta(seconds=offset),
                    created=NOW + timedelta(seconds=offset), expiry=NOW + timedelta(days=2), send_after=NOW,
                )
            )  # fmt: skip
        for offset, status in enumerate(sms):
            await conn.execute(
                insert(sms_notifications).values(
                    id=uuid.uuid4(), order_id=uuid.UUID(order_id), creator="ttd", mobile_number=f"+479000000{offset}",
                    national_identity_number="11876995923" if offset == 0 else None, is_reserved=False,
                    status=status, status_changed=NOW, created=NOW + timedelta(seconds=offset),
                    expiry=NOW + timedelta(days=2), send_after=NOW,
                )
            )  # fmt: skip


async def test_counts_and_lists_of_notifications(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    order_id = await _create(client, auth)
    await _add_notifications(
        varsel, order_id, email=["Succeeded", "Delivered", "Failed_Bounced"], sms=["Accepted", "Delivered", "New"]
    )
    status = (await client.get(f"{V1}/orders/{order_id}/status", headers=auth())).json()
    summary = status["notificationsStatusSummary"]
    assert (summary["email"]["generated"], summary["email"]["succeeded"]) == (3, 2)
    # varsel counts Delivered SMS as succeeded too (the reference's summary counted only Accepted).
    assert (summary["sms"]["generated"], summary["sms"]["succeeded"]) == (3, 2)

    emails = (await client.get(f"{V1}/orders/{order_id}/notifications/email", headers=auth())).json()
    assert emails["orderId"] == order_id
    assert emails["sendersReference"] == SPEC_003_EXAMPLE["sendersReference"]
    assert (emails["generated"], emails["succeeded"]) == (3, 2)
    assert [n["sendStatus"]["status"] for n in emails["notifications"]] == ["Succeeded", "Delivered", "Failed_Bounced"]
    assert [n["succeeded"] for n in emails["notifications"]] == [True, True, False]
    first = emails["notifications"][0]
    assert first["recipient"] == {"emailAddress": "r0@example.com"}
    assert first["sendStatus"]["description"] == (
        "The email has been accepted by the third party email service and will be sent shortly."
    )
    assert first["sendStatus"]["lastUpdate"] == _iso(NOW)

    sms = (await client.get(f"{V1}/orders/{order_id}/notifications/sms", headers=auth())).json()
    assert [n["succeeded"] for n in sms["notifications"]] == [True, True, False]
    assert sms["notifications"][0]["recipient"] == {
        "mobileNumber": "+4790000000",
        "nationalIdentityNumber": "11876995923",
        "isReserved": False,
    }
    assert sms["notifications"][2]["sendStatus"]["description"] == (
        "The SMS has been created, but has not been picked up for processing yet."
    )


async def test_processed_orders_show_as_completed_in_v1(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    order_id = await _create(client, auth)
    async with varsel.database.transaction() as conn:
        await conn.execute(update(orders).where(orders.c.id == uuid.UUID(order_id)).values(status="Processed"))
    status = (await client.get(f"{V1}/orders/{order_id}/status", headers=auth())).json()
    assert status["processingStatus"]["status"] == "Completed"


async def test_find_orders_by_senders_reference(client: httpx.AsyncClient, auth: Auth) -> None:
    first = await _create(client, auth)
    second = await _create(client, auth)
    await _create(client, auth, org="other")
    other_reference = {**SPEC_003_EXAMPLE, "sendersReference": "something else"}
    await _create(client, auth, **other_reference)

    found = await client.get(
        f"{V1}/orders", params={"sendersReference": SPEC_003_EXAMPLE["sendersReference"]}, headers=auth()
    )
    assert found.status_code == 200
    listing = found.json()
    assert listing["count"] == 2
    assert {order["id"] for order in listing["orders"]} == {first, second}
    assert all(order["creator"] == "ttd" for order in listing["orders"])

    none = await client.get(f"{V1}/orders", params={"sendersReference": "nothing"}, headers=auth())
    assert none.json() == {"count": 0, "orders": []}


async def test_find_orders_needs_the_senders_reference(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.get(f"{V1}/orders", headers=auth())
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == {"SendersReference": ["The sendersReference query parameter is required."]}


@pytest.mark.parametrize("minutes_ahead", [6, 60 * 24 * 30])
async def test_cancel_a_registered_order(
    client: httpx.AsyncClient, auth: Auth, clock: FrozenClock, minutes_ahead: int
) -> None:
    send_time = _iso(NOW + timedelta(minutes=minutes_ahead))
    order_id = await _create(client, auth, **{**SPEC_003_EXAMPLE, "requestedSendTime": send_time})
    clock.advance(timedelta(seconds=30))
    cancelled = await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["id"] == order_id
    assert body["processingStatus"]["status"] == "Cancelled"
    assert body["processingStatus"]["lastUpdate"] == _iso(NOW + timedelta(seconds=30))
    # Cancelling twice is not an error.
    again = await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())
    assert again.status_code == 200
    assert again.json()["processingStatus"]["status"] == "Cancelled"
    status = (await client.get(f"{V1}/orders/{order_id}/status", headers=auth())).json()
    assert status["processingStatus"]["status"] == "Cancelled"


@pytest.mark.parametrize("minutes_ahead", [5, 4, 0])
async def test_cancel_is_refused_within_five_minutes_of_the_send_time(
    client: httpx.AsyncClient, auth: Auth, minutes_ahead: int
) -> None:
    send_time = _iso(NOW + timedelta(minutes=minutes_ahead))
    order_id = await _create(client, auth, **{**SPEC_003_EXAMPLE, "requestedSendTime": send_time})
    refused = await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 409
    status = (await client.get(f"{V1}/orders/{order_id}/status", headers=auth())).json()
    assert status["processingStatus"]["status"] == "Registered"


async def test_cancel_is_refused_once_processing_started(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    send_time = _iso(NOW + timedelta(hours=1))
    order_id = await _create(client, auth, **{**SPEC_003_EXAMPLE, "requestedSendTime": send_time})
    async with varsel.database.transaction() as conn:
        await conn.execute(update(orders).where(orders.c.id == uuid.UUID(order_id)).values(status="Processing"))
    refused = await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())
    assert refused.status_code == 409
    assert "Processing" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("GET", "/status"),
        ("GET", "/notifications/email"),
        ("GET", "/notifications/sms"),
        ("PUT", "/cancel"),
    ],
)
@pytest.mark.parametrize("order_id", ["01a20722-6c4e-7b0b-a3e6-1b3e0dd1b0f2", "not-a-uuid", "1"])
async def test_unknown_orders_are_404_problems(
    client: httpx.AsyncClient, auth: Auth, method: str, suffix: str, order_id: str
) -> None:
    response = await client.request(method, f"{V1}/orders/{order_id}{suffix}", headers=auth())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 404
    assert problem["traceId"].startswith("00-")


async def test_unknown_routes_and_methods_are_problems(client: httpx.AsyncClient, auth: Auth) -> None:
    missing = await client.get("/nothing/here", headers=auth())
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = await client.delete(f"{V1}/orders", headers=auth())
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"


async def test_trace_id_follows_the_callers_traceparent(client: httpx.AsyncClient, auth: Auth) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**auth(), "traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    response = await client.get(f"{V1}/orders/{uuid.uuid4()}", headers=headers)
    assert response.json()["traceId"].split("-")[1] == trace


async def test_openapi_documents_every_endpoint_model_and_error(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        (f"{V1}/orders", "post"),
        (f"{V1}/orders", "get"),
        (f"{V1}/orders/email", "post"),
        (f"{V1}/orders/sms", "post"),
        (f"{V1}/orders/{{id}}", "get"),
        (f"{V1}/orders/{{id}}/status", "get"),
        (f"{V1}/orders/{{id}}/cancel", "put"),
        (f"{V1}/orders/{{id}}/notifications/email", "get"),
        (f"{V1}/orders/{{id}}/notifications/sms", "get"),
    }
    assert {(path, method) for path, ops in paths.items() for method in ops} >= expected
    schemas = spec["components"]["schemas"]

    def refs(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
            for value in node.values():
                found |= refs(value)
            return found
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node)) if node else set()
        return set()

    # Every reference resolves, request bodies included (they are read by varsel, not FastAPI).
    for ref in refs(spec):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    create = paths[f"{V1}/orders"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/NotificationOrderRequest")
    assert {"202", "400", "401", "403", "413", "415"} <= set(create["responses"])
    assert "application/problem+json" in create["responses"]["400"]["content"]
    assert "errors" in schemas["ValidationProblemDetails"]["properties"]
    cancel = paths[f"{V1}/orders/{{id}}/cancel"]["put"]
    assert {"200", "401", "403", "404", "409"} <= set(cancel["responses"])

    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_the_location_follows_each_request_s_host_unless_a_public_url_is_configured(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    # The base URL of a request is remembered per host: a second host must not get the first one's.
    for host in ("a.example", "b.example:8443", "a.example"):
        response = await client.post(f"{V1}/orders", json=SPEC_003_EXAMPLE, headers={**auth(), "Host": host})
        order_id = response.json()["orderId"]
        assert response.headers["location"] == f"http://{host}{V1}/orders/{order_id}"
        read = await client.get(f"{V1}/orders/{order_id}", headers={**auth(), "Host": host})
        assert read.json()["links"]["self"] == f"http://{host}{V1}/orders/{order_id}"

    varsel.settings.public_url = "https://varsel.example.no/"
    sms = {"body": "Hei", "recipients": [{"mobileNumber": "+4799999999"}]}
    response = await client.post(f"{V1}/orders/sms", json=sms, headers={**auth(), "Host": "a.example"})
    order_id = response.json()["orderId"]
    assert response.headers["location"] == f"https://varsel.example.no{V1}/orders/{order_id}"
