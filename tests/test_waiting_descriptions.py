"""Say what it waits for (#20, item 8): an SMS held for the daytime window, and an order whose condition check is to
be retried, are described with what they wait for and until when. The status values clients parse are unchanged,
and each description still begins with the reference's words for its status."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.notifications.statuses import (
    ORDER_STATUS_DESCRIPTIONS,
    SMS_STATUS_DESCRIPTIONS,
    OrderStatus,
    SmsStatus,
)
from varsel.settings import ConditionSettings, Settings

V1 = "/notifications/api/v1/orders"
Auth = Callable[..., dict[str, str]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The failing condition endpoint below is on loopback: allow-listed, as an operator would for an internal one.
    return settings.model_copy(update={"conditions": ConditionSettings(allowed_hosts=["127.0.0.1"])})


def _closed_port() -> int:
    """A loopback port nobody listens on: a condition endpoint there fails at once (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_sms_held_for_the_daytime_window_says_so_and_until_when(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    # 18:30 in Oslo (17:30 UTC, winter time): after the window closed; it opens again at 09:00 tomorrow, 08:00 UTC.
    clock.advance(timedelta(hours=7, minutes=30))
    order = {"body": "Hei", "recipients": [{"mobileNumber": "+4799999999"}]}
    created = await client.post(f"{V1}/sms", json=order, headers=auth())
    assert created.status_code == 202, created.text
    order_id = created.json()["orderId"]
    await varsel.workers.drain()

    listed = (await client.get(f"{V1}/{order_id}/notifications/sms", headers=auth())).json()
    [notification] = listed["notifications"]
    status = notification["sendStatus"]
    assert status["status"] == "New"  # unchanged: what clients parse
    assert status["description"] == (
        f"{SMS_STATUS_DESCRIPTIONS[SmsStatus.NEW]} It is held for the SMS daytime window "
        "(09:00-17:00 Europe/Oslo) and goes out at 2026-03-03T08:00:00Z."
    )

    # Once the window has opened and the SMS is sent, the description is the reference's again.
    clock.advance(timedelta(hours=14, minutes=31))
    await varsel.workers.drain()
    listed = (await client.get(f"{V1}/{order_id}/notifications/sms", headers=auth())).json()
    status = listed["notifications"][0]["sendStatus"]
    assert status["status"] != "New"
    assert status["description"] == SMS_STATUS_DESCRIPTIONS[SmsStatus(status["status"])]


async def test_an_order_whose_condition_check_is_retried_says_so_and_until_when(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    order = {
        "subject": "Hei",
        "body": "Hallo",
        "recipients": [{"emailAddress": "a@example.com"}],
        "conditionEndpoint": f"http://127.0.0.1:{_closed_port()}/condition",
    }
    created = await client.post(f"{V1}/email", json=order, headers=auth())
    assert created.status_code == 202, created.text
    order_id = created.json()["orderId"]
    registered = ORDER_STATUS_DESCRIPTIONS[OrderStatus.REGISTERED]

    # Before any attempt: the reference's words alone (it awaits its requested send time, now).
    before = (await client.get(f"{V1}/{order_id}/status", headers=auth())).json()["processingStatus"]
    assert before == {**before, "status": "Registered", "description": registered}

    await varsel.workers.drain()  # the check fails: retried after condition_retry_seconds
    retry_at = clock.now() + timedelta(seconds=settings.dispatch.condition_retry_seconds)
    waiting = (await client.get(f"{V1}/{order_id}/status", headers=auth())).json()["processingStatus"]
    assert waiting["status"] == "Registered"  # unchanged: what clients parse
    assert waiting["description"].startswith(registered + " ")
    assert "send condition could not be checked" in waiting["description"]
    assert f"checked again at {retry_at.isoformat().replace('+00:00', 'Z')}" in waiting["description"]
    assert waiting["description"].endswith("should that check fail too, the order is sent anyway.")

    # Retried and failed again: sent anyway (the default policy), and described as the reference has it.
    clock.advance(timedelta(seconds=settings.dispatch.condition_retry_seconds))
    await varsel.workers.drain()
    done = (await client.get(f"{V1}/{order_id}/status", headers=auth())).json()["processingStatus"]
    assert done["status"] == "Completed"
    assert done["description"] == ORDER_STATUS_DESCRIPTIONS[OrderStatus.COMPLETED]


async def test_the_skip_policy_is_what_the_waiting_order_says(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    varsel.settings.dispatch.condition_failure_policy = "skip"
    order = {
        "subject": "Hei",
        "body": "Hallo",
        "recipients": [{"emailAddress": "a@example.com"}],
        "conditionEndpoint": f"http://127.0.0.1:{_closed_port()}/condition",
    }
    order_id = (await client.post(f"{V1}/email", json=order, headers=auth())).json()["orderId"]
    await varsel.workers.drain()
    waiting = (await client.get(f"{V1}/{order_id}/status", headers=auth())).json()["processingStatus"]
    assert waiting["description"].endswith("the order is not sent (SendConditionNotMet).")
