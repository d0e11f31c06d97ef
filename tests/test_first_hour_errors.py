"""Errors that say what to do (#20, item 5): what a newcomer meets in the first hour names the way out.

The API's refusals keep their keys, and the words the reference fixes (clients may match them exactly): a hint
varsel adds for a person goes into the problem's `detail` (a member ASP.NET's ValidationProblemDetails has, empty
there) or, where the words are varsel's own, into the message itself. The command line's are in
test_first_hour_cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_v2.helpers import ORDERS, chain, sms_recipient
from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import Settings

Auth = Any
V1 = "/notifications/api/v1/orders"
INSTANT_SMS = "/notifications/api/v1/future/orders/instant/sms"
SETTING = "VARSEL_CONDITIONS__ALLOWED_HOSTS"

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no rule here depends on the database


def _sms_order(number: str, **extra: Any) -> dict[str, Any]:
    return {"sendersReference": "first-hour", "body": "Hei", "recipients": [{"mobileNumber": number}], **extra}


def _problem(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    problem: dict[str, Any] = answer.json()
    return problem


@SQLITE
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.1", "[::1]", "condition-service"])
async def test_a_condition_endpoint_refused_for_its_host_names_the_setting_that_allows_it(
    client: httpx.AsyncClient, auth: Auth, host: str
) -> None:
    endpoint = f"http://{host}:8081/condition"
    v1 = _problem(
        await client.post(f"{V1}/sms", json=_sms_order("+4799999999", conditionEndpoint=endpoint), headers=auth())
    )
    v2 = _problem(
        await client.post(ORDERS, json=chain(recipient=sms_recipient(), conditionEndpoint=endpoint), headers=auth())
    )
    for problem in (v1, v2):
        [message] = problem["errors"]["ConditionEndpoint"]
        assert SETTING in message, message


@SQLITE
async def test_a_condition_endpoint_on_a_listed_host_is_taken(
    database: Database, clock: FrozenClock, tmp_path: Path, auth: Auth
) -> None:
    # What the hint says works.
    listed = Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": ["127.0.0.1"]})
    services = build(listed, clock=clock, database=database)
    try:
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            order = _sms_order("+4799999999", conditionEndpoint="http://127.0.0.1:8081/condition")
            answer = await http.post(f"{V1}/sms", json=order, headers=auth())
        assert answer.status_code == 202, answer.text
    finally:
        await services.http.aclose()


@SQLITE
@pytest.mark.parametrize("number", ["99999999", "999 99 999", "4799999999"])
async def test_a_mobile_number_without_its_country_code_says_plus_47_or_0047(
    client: httpx.AsyncClient, auth: Auth, number: str
) -> None:
    v1 = _problem(await client.post(f"{V1}/sms", json=_sms_order(number), headers=auth()))
    v2 = _problem(await client.post(ORDERS, json=chain(recipient=sms_recipient(number)), headers=auth()))
    instant = _problem(
        await client.post(
            INSTANT_SMS,
            json={
                "idempotencyId": "k",
                "recipientSms": {"phoneNumber": number, "timeToLiveInSeconds": 3600, "smsSettings": {"body": "Hei"}},
            },
            headers=auth(),
        )
    )
    # The reference's words and keys, unchanged (clients match them); the hint beside them, in `detail`.
    assert v1["errors"] == {"Recipients[0].MobileNumber": ["Invalid mobile number format."]}
    assert v2["errors"] == {
        "Recipient.RecipientSms.PhoneNumber": ["Recipient phone number is not a valid mobile number."]
    }
    assert instant["errors"] == {"RecipientSms.PhoneNumber": ["Recipient phone number is not a valid mobile number."]}
    for problem, field in (
        (v1, "Recipients[0].MobileNumber"),
        (v2, "Recipient.RecipientSms.PhoneNumber"),
        (instant, "RecipientSms.PhoneNumber"),
    ):
        detail = problem["detail"]
        assert detail.startswith(f"{field}: "), detail
        assert "+47" in detail, detail
        assert "0047" in detail, detail


@SQLITE
@pytest.mark.parametrize("number", ["+47123", "0047 12345", "+4712345678", "not a number"])
async def test_a_number_with_a_country_code_gets_no_country_code_hint(
    client: httpx.AsyncClient, auth: Auth, number: str
) -> None:
    problem = _problem(await client.post(f"{V1}/sms", json=_sms_order(number), headers=auth()))
    assert problem["errors"] == {"Recipients[0].MobileNumber": ["Invalid mobile number format."]}
    assert "detail" not in problem


@SQLITE
async def test_many_numbers_without_country_code_get_one_hint(client: httpx.AsyncClient, auth: Auth) -> None:
    order = {**_sms_order("99999999"), "recipients": [{"mobileNumber": f"9999999{i}"} for i in range(5)]}
    problem = _problem(await client.post(f"{V1}/sms", json=order, headers=auth()))
    assert len(problem["errors"]) == 5
    assert problem["detail"].startswith("Recipients[0].MobileNumber (and 4 more): ")
    assert problem["detail"].count("+47") == 2  # once in the sentence, once in its example


def test_the_hint_never_reaches_errors_as_anything_but_the_message() -> None:
    from varsel.problems import HintedMessage, ValidationProblem

    problem = ValidationProblem({"F": [HintedMessage("The words.", "What to do.")]})
    assert problem.extensions["errors"] == {"F": ["The words."]}
    assert type(problem.extensions["errors"]["F"][0]) is str
    assert problem.detail == "F: What to do."
