"""Review (#17) of the console's forms: the recipient look-up answers every date its form takes (9999-12-31, and on
29 February) with a page, never a 500; hostile values in the fields of the admin pages and the usage metrics get a
page or a problem, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from varsel.app import Varsel, create_app
from varsel.clock import FrozenClock
from varsel.console.principal import Principal
from varsel.console.sessions import SESSION_COOKIE

NIN = "01017012345"


@pytest.fixture
def app(varsel: Varsel) -> FastAPI:
    return create_app(varsel)


@pytest.fixture
async def admin(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """An HTTP client over ASGI signed in as an admin, and its CSRF token."""
    codec = app.state.console.sessions
    session = codec.new(Principal(org=None, admin=True))
    # raise_app_exceptions=False: an unhandled error is answered 500, as to a browser, for the tests to see.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
        client.cookies.set(SESSION_COOKIE, codec.dumps(session))
        yield client, str(session.csrf)


# ---------------------------------------------------------------- the look-up's dates


async def test_a_look_up_to_the_calendars_last_day_is_answered(admin: tuple[httpx.AsyncClient, str]) -> None:
    client, csrf = admin
    form = {"csrf": csrf, "kind": "nin", "value": NIN, "start": "2026-02-23", "end": "9999-12-31"}
    answer = await client.post("/console/recipients", data=form)
    assert answer.status_code == 200, answer.text[:300]
    assert "Nothing was sent to this recipient in that time." in answer.text


@pytest.fixture
def leap_day(clock: FrozenClock) -> None:
    # Before the admin session is made, which lasts from this moment.
    clock.set(datetime(2028, 2, 29, 12, 0, tzinfo=UTC))


@pytest.mark.usefixtures("leap_day")
async def test_a_look_up_on_29_february_is_answered(admin: tuple[httpx.AsyncClient, str]) -> None:
    client, csrf = admin
    form = {"csrf": csrf, "kind": "nin", "value": NIN, "start": "2028-02-22", "end": "2028-02-29"}
    answer = await client.post("/console/recipients", data=form)
    assert answer.status_code == 200, answer.text[:300]
    too_old = await client.post("/console/recipients", data={**form, "start": "2018-02-27"})
    assert too_old.status_code == 400
    assert "more than 10 years ago" in too_old.text
    assert (await client.post("/console/recipients", data={**form, "start": "2018-02-28"})).status_code == 200


# ---------------------------------------------------------------- hostile values in every field

HOSTILE = ["", " ", "x", "0", "-1", "9" * 30, "1" * 5000, "é€😀", "\x00", "%00", "'\"<>", "9999-12-31",
           "0001-01-01", "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00", "00000000-0000-0000-0000-000000000000",
           "1_2", "١٢"]  # fmt: skip


async def test_hostile_values_get_a_page_or_a_problem_never_a_500(admin: tuple[httpx.AsyncClient, str]) -> None:
    client, csrf = admin
    queries = {
        "/console/reports": ["dead_before", "pending_before"],
        "/console/usage": ["year", "month"],
        "/console/usage.csv": ["year", "month"],
        "/notifications/api/v1/metrics/usage": ["year", "month", "format"],
    }
    forms = {
        "/console/recipients": {"kind": "nin", "value": NIN, "start": "2026-02-23", "end": "2026-03-02"},
        "/console/reports/retry": {"report": "x"},
        "/notifications/api/v1/metrics": {"month": "1", "year": "2026"},
    }
    answered: list[tuple[str, str, str, int]] = []
    for path, names in queries.items():
        for name in names:
            for value in HOSTILE:
                answer = await client.get(path, params={name: value})
                answered.append((path, name, value, answer.status_code))
    for path, form in forms.items():
        for name in form:
            for value in HOSTILE:
                answer = await client.post(path, data={"csrf": csrf, **form, name: value})
                answered.append((path, name, value, answer.status_code))
    assert [case for case in answered if case[3] >= 500] == []
    assert len(answered) == len(HOSTILE) * 16
