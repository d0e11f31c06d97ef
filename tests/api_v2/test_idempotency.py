"""Idempotency of POST /future/orders: a replay answers 200 with the first receipt (also once its send time has
passed), concurrent first requests make one chain and no 5xx, and keys are kept apart per org and per family."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from tests.api_v2.helpers import Auth, chain, email_recipient, person_recipient, post, sms_recipient
from tests.conftest import NOW
from tests.recipients.registry_data import load
from varsel.api.v2.models import NotificationOrderChainRequestExt
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.tables import order_chains, orders
from varsel.orders.vocabulary import IdempotencyFamily


async def _count(varsel: Varsel, table: object) -> int:
    async with varsel.database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_a_replay_answers_200_with_the_first_receipt_and_ignores_the_new_body(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    first = await post(client, auth, chain("same", sendersReference="a", reminders=[
        {"delayDays": 1, "sendersReference": "a-r", "recipient": sms_recipient()}]))  # fmt: skip
    assert first.status_code == 201
    again = await post(client, auth, chain("same", email_recipient("other@example.com"), sendersReference="b"))
    assert again.status_code == 200
    assert "Location" not in again.headers
    assert again.json() == first.json()
    assert await _count(varsel, orders) == 2
    # The key is compared exactly: another spelling is another key.
    assert (await post(client, auth, chain("Same"))).status_code == 201


async def test_a_replay_after_the_send_time_has_passed_still_gets_its_receipt(
    client: httpx.AsyncClient, auth: Auth, clock: FrozenClock
) -> None:
    send_time = (NOW + timedelta(minutes=10)).isoformat()
    body = chain("late", requestedSendTime=send_time, reminders=[
        {"requestedSendTime": (NOW + timedelta(hours=1)).isoformat(), "recipient": sms_recipient()}])  # fmt: skip
    first = await post(client, auth, body)
    assert first.status_code == 201
    clock.advance(timedelta(days=2))
    again = await post(client, auth, body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # Without the key stored, the same body is refused now: its times have passed.
    body["idempotencyId"] = "late-2"
    refused = await post(client, auth, body)
    assert refused.status_code == 400
    assert set(refused.json()["errors"]) == {"RequestedSendTime", "Reminders[0].RequestedSendTime"}


async def test_twenty_concurrent_first_requests_make_one_chain(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    body = chain("race", reminders=[{"delayDays": 1, "recipient": sms_recipient()}])
    headers = auth()
    responses = await asyncio.gather(
        *(client.post("/notifications/api/v1/future/orders", json=body, headers=headers) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code >= 300]
    assert len({r.text for r in responses}) == 1  # every one the winner's receipt
    assert await _count(varsel, order_chains) == 1
    assert await _count(varsel, orders) == 2


async def test_the_same_key_from_another_org_makes_its_own_chain(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    ttd = await post(client, auth, chain("shared"))
    digdir = await post(client, auth, chain("shared"), org="digdir")
    assert (ttd.status_code, digdir.status_code) == (201, 201)
    assert ttd.json()["notificationOrderId"] != digdir.json()["notificationOrderId"]
    assert (await post(client, auth, chain("shared"), org="digdir")).json() == digdir.json()
    assert await _count(varsel, order_chains) == 2


async def test_families_keep_their_keys_apart(client: httpx.AsyncClient, auth: Auth, varsel: Varsel) -> None:
    first = (await post(client, auth, chain("family"))).json()
    assert await varsel.chains.find("ttd", IdempotencyFamily.INSTANT, "family") is None
    draft = varsel.chain_validator.chain(NotificationOrderChainRequestExt.model_validate(chain("family")))
    assert not isinstance(draft, dict)
    instant = await varsel.chains.register("ttd", draft, IdempotencyFamily.INSTANT)
    assert instant.created
    assert str(instant.receipt.chain_id) != first["notificationOrderId"]
    found = await varsel.chains.find("ttd", IdempotencyFamily.ORDERS, "family")
    assert found is not None
    assert str(found.chain_id) == first["notificationOrderId"]
    # And in its own family the key is taken: registering again answers the stored chain.
    again = await varsel.chains.register("ttd", draft, IdempotencyFamily.INSTANT)
    assert not again.created
    assert again.receipt == instant.receipt


async def test_concurrent_chains_with_new_and_taken_keys_are_each_answered_for_their_own(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    headers = auth()
    bodies = [chain(f"own-{i}", sendersReference=f"own-{i}") for i in range(10)]
    bodies += [chain("shared", sendersReference="shared") for _ in range(10)]
    responses = await asyncio.gather(
        *(client.post("/notifications/api/v1/future/orders", json=body, headers=headers) for body in bodies)
    )
    own, shared = responses[:10], responses[10:]
    assert [r.status_code for r in own] == [201] * 10
    assert [r.json()["notification"]["sendersReference"] for r in own] == [f"own-{i}" for i in range(10)]
    assert sorted(r.status_code for r in shared) == [200] * 9 + [201]
    assert len({r.json()["notificationOrderId"] for r in shared}) == 1
    assert await _count(varsel, order_chains) == 11
    assert await _count(varsel, orders) == 11


async def test_a_replay_is_answered_even_when_its_recipient_has_no_contact_details_any_more(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    person = {"kind": "person", "nationalIdentityNumber": "01017012345", "emailAddress": "ola@example.no"}
    assert (await load(varsel.database, clock, [person])).rejected == []
    body = chain("gone", person_recipient(channel="Email"))
    first = await post(client, auth, body)
    assert first.status_code == 201
    delete = {"kind": "delete", "nationalIdentityNumber": "01017012345"}
    assert (await load(varsel.database, clock, [delete])).rejected == []
    again = await post(client, auth, body)
    assert again.status_code == 200
    assert again.json() == first.json()
    body["idempotencyId"] = "gone-2"
    assert (await post(client, auth, body)).status_code == 422
