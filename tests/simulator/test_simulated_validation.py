"""Validation accepts the eight simulated recipients everywhere a recipient's address or number is taken, and
nothing else of their reserved ranges; a sender (From) address is never one of them.

`.invalid` is a special-use domain and +44 7700 900xxx a range libphonenumber does not count as valid, so without
the simulator's rule both are refused: these tests fail if the rule goes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api_v2.composed_helpers import composed, post_composed
from varsel.orders.addresses import normalize_email_address, normalize_mobile_number, normalize_sender_address
from varsel.orders.simulated import SIMULATED_EMAIL_ADDRESSES, SIMULATED_MOBILE_NUMBERS

V1 = "/notifications/api/v1/orders"
FUTURE = "/notifications/api/v1/future/orders"
Auth = Callable[..., dict[str, str]]

EMAILS = sorted(SIMULATED_EMAIL_ADDRESSES)
NUMBERS = sorted(SIMULATED_MOBILE_NUMBERS)


def test_there_are_four_of_each() -> None:
    assert [f"{n}@simulator.invalid" for n in ("bounced", "delivered", "silent", "transient")] == EMAILS
    assert NUMBERS == ["+447700900001", "+447700900002", "+447700900003", "+447700900004"]


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("delivered@simulator.invalid", "delivered@simulator.invalid"),
        (" Bounced@Simulator.INVALID ", "bounced@simulator.invalid"),
        ("+447700900001", "+447700900001"),
        ("00447700900002", "+447700900002"),
        ("+44 7700 900003 ", "+447700900003"),
        ("+44 (7700) 900-004", "+447700900004"),
    ],
)
def test_simulated_recipients_are_normalised_to_their_stored_form(written: str, stored: str) -> None:
    normalize = normalize_mobile_number if "@" not in written else normalize_email_address
    assert normalize(written) == stored


@pytest.mark.parametrize(
    "written",
    [
        "other@simulator.invalid",
        "delivered@mail.simulator.invalid",
        "delivered@example.invalid",
        "+447700900000",
        "+447700900005",
        " +447700900001",  # a leading blank is refused for every number (the reference's rule)
        "447700900001",
    ],
)
def test_the_rest_of_the_reserved_ranges_is_still_refused(written: str) -> None:
    normalize = normalize_mobile_number if "@" not in written else normalize_email_address
    assert normalize(written) is None


@pytest.mark.parametrize("address", EMAILS)
def test_a_simulated_address_is_no_sender_address(address: str) -> None:
    assert normalize_sender_address(address) is None
    assert normalize_sender_address("post@etat.example.no") == "post@etat.example.no"


async def test_a_v1_order_takes_every_simulated_recipient(client: httpx.AsyncClient, auth: Auth) -> None:
    email = await client.post(
        f"{V1}/email",
        json={"subject": "S", "body": "B", "recipients": [{"emailAddress": a} for a in EMAILS]},
        headers=auth(),
    )
    assert email.status_code == 202, email.text
    sms = await client.post(
        f"{V1}/sms", json={"body": "B", "recipients": [{"mobileNumber": n} for n in NUMBERS]}, headers=auth()
    )
    assert sms.status_code == 202, sms.text
    # The generic v1 order, whose recipients may carry both.
    both = await client.post(
        V1,
        json={
            "notificationChannel": "EmailPreferred",
            "emailTemplate": {"subject": "S", "body": "B"},
            "smsTemplate": {"body": "B"},
            "recipients": [{"emailAddress": EMAILS[0], "mobileNumber": NUMBERS[0]}],
        },
        headers=auth(),
    )
    assert both.status_code == 202, both.text


async def test_a_v1_order_refuses_a_simulated_sender_address(client: httpx.AsyncClient, auth: Auth) -> None:
    body = {"subject": "S", "body": "B", "fromAddress": EMAILS[0], "recipients": [{"emailAddress": EMAILS[1]}]}
    response = await client.post(f"{V1}/email", json=body, headers=auth())
    assert response.status_code == 400, response.text
    assert "FromAddress" in response.text


def _chain_email(key: str, address: str, **settings: Any) -> dict[str, Any]:
    email = {"emailAddress": address, "emailSettings": {"subject": "S", "body": "B", **settings}}
    return {"idempotencyId": key, "recipient": {"recipientEmail": email}}


def _chain_sms(key: str, number: str) -> dict[str, Any]:
    return {"idempotencyId": key, "recipient": {"recipientSms": {"phoneNumber": number, "smsSettings": {"body": "B"}}}}


async def test_v2_chains_with_reminders_take_every_simulated_recipient(client: httpx.AsyncClient, auth: Auth) -> None:
    for i, (address, number) in enumerate(zip(EMAILS, NUMBERS, strict=True)):
        body = _chain_email(f"e{i}", address)
        body["reminders"] = [{"delayDays": 1, "recipient": _chain_email("", EMAILS[-1 - i])["recipient"]}]
        response = await client.post(FUTURE, json=body, headers=auth())
        assert response.status_code == 201, response.text
        response = await client.post(FUTURE, json=_chain_sms(f"s{i}", number), headers=auth())
        assert response.status_code == 201, response.text
    refused = await client.post(FUTURE, json=_chain_email("x", EMAILS[0], senderEmailAddress=EMAILS[1]), headers=auth())
    assert refused.status_code == 400, refused.text
    assert "SenderEmailAddress" in refused.text


async def test_instant_orders_take_every_simulated_recipient(client: httpx.AsyncClient, auth: Auth) -> None:
    for i, (address, number) in enumerate(zip(EMAILS, NUMBERS, strict=True)):
        email = {"emailAddress": address, "emailSettings": {"subject": "S", "body": "B"}}
        response = await client.post(
            f"{FUTURE}/instant/email", json={"idempotencyId": f"e{i}", "recipientEmail": email}, headers=auth()
        )
        # Accepted by validation: the transient one answers 503 (to be tried again), the rest 201.
        assert response.status_code in (201, 503), response.text
        assert (response.status_code == 503) == address.startswith("transient"), response.text
        sms = {"phoneNumber": number, "timeToLiveInSeconds": 300, "smsSettings": {"body": "B"}}
        response = await client.post(
            f"{FUTURE}/instant/sms", json={"idempotencyId": f"s{i}", "recipientSms": sms}, headers=auth()
        )
        assert (response.status_code == 503) == (number == "+447700900003"), response.text
        assert response.status_code in (201, 503), response.text
    settings = {"subject": "S", "body": "B", "senderEmailAddress": EMAILS[0]}
    sender = {"emailAddress": EMAILS[0], "emailSettings": settings}
    refused = await client.post(
        f"{FUTURE}/instant/email", json={"idempotencyId": "x", "recipientEmail": sender}, headers=auth()
    )
    assert refused.status_code == 400, refused.text


@pytest.mark.parametrize("address", EMAILS)
async def test_a_composed_email_takes_a_simulated_recipient(
    client: httpx.AsyncClient, auth: Auth, address: str
) -> None:
    response = await post_composed(client, auth, composed(address=address))
    assert response.status_code == 201, response.text
