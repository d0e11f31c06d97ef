"""Registries pushing changes over HTTP with the registry scope."""

from __future__ import annotations

from collections.abc import Callable

import httpx

REGISTRY = "/notifications/api/v1/registry/records"
REGISTRY_WRITER = "varsel:registry.write"
Auth = Callable[..., dict[str, str]]

PERSON = {"kind": "person", "nationalIdentityNumber": "01017012345", "name": "Ola", "emailAddress": "ola@example.com"}
SUCCESS = {"status": "Success", "isReserved": [], "missingContact": []}


async def test_a_registry_pushes_records_and_lookups_see_them(client: httpx.AsyncClient, auth: Auth) -> None:
    pushed = await client.post(
        REGISTRY,
        json=[
            PERSON,
            {"kind": "robot"},
            {**PERSON, "name": "Ola N"},
            {"kind": "person", "nationalIdentityNumber": "1"},
        ],
        headers=auth(scopes=[REGISTRY_WRITER]),
    )
    assert pushed.status_code == 200, pushed.text
    result = pushed.json()
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 1, 0)
    assert [r["index"] for r in result["rejected"]] == [1, 3]
    assert "unknown kind 'robot'" in result["rejected"][0]["reason"]

    order = {"subject": "s", "body": "b", "recipients": [{"nationalIdentityNumber": "01017012345"}]}
    created = await client.post("/notifications/api/v1/orders/email", json=order, headers=auth())
    assert created.json()["recipientLookup"] == SUCCESS
    # Every order endpoint answers the look-up: the person has no mobile, so an SMS order cannot reach them.
    sms = {"body": "b", "recipients": [{"nationalIdentityNumber": "01017012345"}]}
    sms_created = await client.post("/notifications/api/v1/orders/sms", json=sms, headers=auth())
    assert sms_created.json()["recipientLookup"] == {**SUCCESS, "status": "Failed", "missingContact": ["01017012345"]}
    any_channel = {
        "notificationChannel": "SmsPreferred",
        "smsTemplate": {"body": "b"},
        "emailTemplate": {"subject": "s", "body": "b"},
        "recipients": order["recipients"],
    }
    preferred = await client.post("/notifications/api/v1/orders", json=any_channel, headers=auth())
    assert preferred.json()["recipientLookup"] == SUCCESS

    deleted = await client.post(
        REGISTRY,
        json=[{"kind": "delete", "nationalIdentityNumber": "01017012345"}],
        headers=auth(scopes=[REGISTRY_WRITER]),
    )
    assert deleted.json()["deleted"] == 1
    again = await client.post("/notifications/api/v1/orders/email", json=order, headers=auth())
    assert again.json()["recipientLookup"]["missingContact"] == ["01017012345"]


async def test_only_the_registry_scope_may_push(
    client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
) -> None:
    assert (await client.post(REGISTRY, json=[PERSON])).status_code == 401
    assert (await client.post(REGISTRY, json=[PERSON], headers=auth())).status_code == 403
    support = auth(scopes=["altinn:notifications.support.admin"])
    assert (await client.post(REGISTRY, json=[PERSON], headers=support)).status_code == 403
    platform = {"PlatformAccessToken": token("ttd", platform=True)}
    assert (await client.post(REGISTRY, json=[PERSON], headers=platform)).status_code == 401
    # Nothing refused was written.
    order = {"subject": "s", "body": "b", "recipients": [{"nationalIdentityNumber": PERSON["nationalIdentityNumber"]}]}
    created = await client.post("/notifications/api/v1/orders/email", json=order, headers=auth())
    assert created.json()["recipientLookup"]["missingContact"] == [PERSON["nationalIdentityNumber"]]


async def test_the_body_is_a_bounded_list_of_objects(client: httpx.AsyncClient, auth: Auth) -> None:
    headers = auth(scopes=[REGISTRY_WRITER])
    not_a_list = await client.post(REGISTRY, json=PERSON, headers=headers)
    assert not_a_list.status_code == 400
    assert "$" in not_a_list.json()["errors"]
    too_many = await client.post(REGISTRY, json=[{}] * 10_001, headers=headers)
    assert too_many.status_code == 400
    assert "10000" in str(too_many.json()["errors"])
