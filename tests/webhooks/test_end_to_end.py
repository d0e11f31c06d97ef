"""From an order to the receiver: a v1 order to a simulated recipient goes through the real pipeline (intake, the
order worker, the email sender, the simulator's delivery report), every status change writes its events, and the
delivery worker posts them, signed and in order, to the subscriber's endpoint."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx

from tests.webhooks.conftest import WEBHOOKS, Receiver
from varsel.app import Varsel
from varsel.clock import FrozenClock

Auth = Callable[..., dict[str, str]]
ALL_KINDS = ["order.completed", "order.send_condition_not_met", "order.cancelled", "notification.status_changed"]


async def test_an_orders_changes_reach_the_endpoint_signed_and_in_order(
    varsel: Varsel, client: httpx.AsyncClient, auth: Auth, receiver: Receiver, clock: FrozenClock
) -> None:
    made = await client.post(WEBHOOKS, json={"url": receiver.url, "events": ALL_KINDS}, headers=auth())
    receiver.secrets.append(made.json()["secret"])
    order = await client.post(
        "/notifications/api/v1/orders/email",
        json={"subject": "Hei", "body": "Les saken.", "recipients": [{"emailAddress": "delivered@simulator.invalid"}]},
        headers=auth(),
    )
    assert order.status_code == 202, order.text
    order_id = order.json()["orderId"]
    await varsel.workers.drain()
    # The simulator's delivery report is applied by the pending-report retry, as a fast provider's is.
    clock.advance(timedelta(seconds=varsel.settings.reports.retry_seconds))
    await varsel.workers.drain()
    assert varsel.workers.webhooks is not None
    delivered = await varsel.workers.webhooks.deliver_due()
    assert delivered == len(receiver.deliveries) > 0

    assert all(d.verified_by == [0] for d in receiver.deliveries)
    bodies = [d.payload for d in receiver.deliveries]
    told = [(b["data"].get("previousStatus"), b["data"]["status"]) for b in bodies[:-1]]
    assert told[0] == (None, "Email_New")
    assert told[-1][1] == "Email_Delivered"
    assert all(previous == before[1] for (previous, _), before in zip(told[1:], told, strict=False))
    assert {b["type"] for b in bodies[:-1]} == {"notification.status_changed"}
    assert (bodies[-1]["type"], bodies[-1]["data"]["shipmentId"]) == ("order.completed", order_id)
    # The events list says the same, in the same order, each delivered once.
    events = (await client.get(f"{WEBHOOKS}/{made.json()['id']}/events", headers=auth())).json()["events"]
    assert [e["id"] for e in events] == [d.webhook_id for d in receiver.deliveries]
    assert {(e["state"], e["attempts"]) for e in events} == {("delivered", 1)}
