"""The support dashboard API (reference 6) on SQLite and PostgreSQL: its scope, every validation rule with its key
and message, and what a look-up answers (across owners, newest first, the route's identifier, [from, to))."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import NOW
from tests.support.helpers import NIN, ORG_NUMBER, SUPPORT_SCOPE, email, order, seed, sms
from varsel.db.engine import Database

BASE = "/notifications/api/v1/future/dashboard/recipients/notifications"
NIN_ROUTE = f"{BASE}/nin"
ORG_ROUTE = f"{BASE}/orgnumber"

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def support(auth: Auth) -> dict[str, str]:
    """Headers with a support token (no org: the policy needs none)."""
    return auth(scopes=[SUPPORT_SCOPE])


def _iso(moment: Any) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- who may ask


async def test_without_a_token_the_answer_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(NIN_ROUTE, headers={"NationalIdentityNumber": NIN})
    assert response.status_code == 401


@pytest.mark.parametrize("route", [NIN_ROUTE, ORG_ROUTE])
async def test_a_service_owner_token_without_the_support_scope_is_403(
    client: httpx.AsyncClient, auth: Auth, route: str
) -> None:
    # Even with an invalid request: the policy is checked before the request's values (reference 0.4).
    response = await client.get(route, headers=auth())
    assert response.status_code == 403
    assert SUPPORT_SCOPE in response.json()["detail"]


async def test_the_support_scope_is_enough(client: httpx.AsyncClient, support: dict[str, str]) -> None:
    response = await client.get(NIN_ROUTE, headers={**support, "NationalIdentityNumber": NIN})
    assert response.status_code == 200, response.text
    assert response.json() == []
    assert response.headers["cache-control"] == "no-store"


# ---------------------------------------------------------------- validation (reference 6.2)

SEVEN_DAYS_AGO = NOW - timedelta(days=7)
NIN_MISSING = "A value for the 'NationalIdentityNumber' parameter or property was not provided."

# (route, identifier header value or None for absent, query, the problem's errors)
CASES: list[tuple[str, str | None, dict[str, str], dict[str, list[str]]]] = [
    (
        NIN_ROUTE,
        None,
        {},
        {"NationalIdentityNumber": [NIN_MISSING]},
    ),
    (
        ORG_ROUTE,
        None,
        {},
        {"OrganizationNumber": ["A value for the 'OrganizationNumber' parameter or property was not provided."]},
    ),
    (NIN_ROUTE, "", {}, {"NationalIdentityNumber": ["'NationalIdentityNumber' is required and cannot be empty"]}),
    (NIN_ROUTE, "   ", {}, {"NationalIdentityNumber": ["'NationalIdentityNumber' is required and cannot be empty"]}),
    (ORG_ROUTE, "", {}, {"OrganizationNumber": ["'OrganizationNumber' is required and cannot be empty"]}),
    (NIN_ROUTE, "0101701234", {}, {"NationalIdentityNumber": ["National identity number must be 11 digits long."]}),
    (NIN_ROUTE, "0101701234x", {}, {"NationalIdentityNumber": ["National identity number must be 11 digits long."]}),
    (NIN_ROUTE, "010170123456", {}, {"NationalIdentityNumber": ["National identity number must be 11 digits long."]}),
    (ORG_ROUTE, "91000000", {}, {"OrganizationNumber": ["Organization number must be 9 digits long."]}),
    (ORG_ROUTE, NIN, {}, {"OrganizationNumber": ["Organization number must be 9 digits long."]}),
    (NIN_ROUTE, NIN, {"from": "2026-03-01T00:00:00"}, {"From": ["The 'from' value must be UTC."]}),
    (NIN_ROUTE, NIN, {"from": "2026-03-01"}, {"From": ["The 'from' value must be UTC."]}),
    (NIN_ROUTE, NIN, {"to": "2026-03-01T00:00:00"}, {"To": ["The 'to' value must be UTC."]}),
    (
        NIN_ROUTE,
        NIN,
        {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
        {"From": ["'from' must be earlier than 'to'."]},
    ),
    (
        NIN_ROUTE,
        NIN,
        {"from": "2026-03-01T12:00:00+02:00", "to": "2026-03-01T09:00:00Z"},
        {"From": ["'from' must be earlier than 'to'."]},
    ),
    (NIN_ROUTE, NIN, {"from": _iso(NOW + timedelta(seconds=1))}, {"From": ["'from' must not be in the future."]}),
    (
        NIN_ROUTE,
        NIN,
        {"from": "2016-03-02T09:59:59Z"},
        {"From": ["'from' must not be earlier than 10 years ago."]},
    ),
    (NIN_ROUTE, NIN, {"to": _iso(NOW + timedelta(seconds=1))}, {"To": ["'to' must not be in the future."]}),
    (
        NIN_ROUTE,
        NIN,
        {"to": _iso(SEVEN_DAYS_AGO)},
        {"To": ["'to' must be later than the default 'from' (7 days ago)."]},
    ),
    (
        ORG_ROUTE,
        ORG_NUMBER,
        {"to": "2026-01-01T00:00:00Z"},
        {"To": ["'to' must be later than the default 'from' (7 days ago)."]},
    ),
    (NIN_ROUTE, NIN, {"from": "yesterday"}, {"From": ["The value 'yesterday' is not valid for From."]}),
    (NIN_ROUTE, NIN, {"to": "2026-13-01T00:00:00Z"}, {"To": ["The value '2026-13-01T00:00:00Z' is not valid for To."]}),
    # Framework errors are answered alone: the header's and the time's together, no rule's.
    (
        NIN_ROUTE,
        None,
        {"from": "soon", "to": "2026-03-01T00:00:00"},
        {
            "NationalIdentityNumber": [NIN_MISSING],
            "From": ["The value 'soon' is not valid for From."],
        },
    ),
    # Every rule reported together, several for one field.
    (
        NIN_ROUTE,
        "123",
        {"from": "2030-01-01T00:00:00Z", "to": "2029-01-01T00:00:00Z"},
        {
            "NationalIdentityNumber": ["National identity number must be 11 digits long."],
            "From": ["'from' must be earlier than 'to'.", "'from' must not be in the future."],
            "To": ["'to' must not be in the future."],
        },
    ),
    (
        NIN_ROUTE,
        NIN,
        {"from": "2001-01-01T00:00:00", "to": "2001-01-02T00:00:00Z"},
        {"From": ["The 'from' value must be UTC."]},
    ),
]


@pytest.mark.parametrize(("route", "value", "query", "errors"), CASES)
async def test_each_rule_answers_its_key_and_message(
    client: httpx.AsyncClient,
    support: dict[str, str],
    route: str,
    value: str | None,
    query: dict[str, str],
    errors: dict[str, list[str]],
) -> None:
    headers = dict(support)
    if value is not None:
        headers["NationalIdentityNumber" if route == NIN_ROUTE else "OrganizationNumber"] = value
    response = await client.get(route, headers=headers, params=query)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.1"
    assert problem["title"] == "One or more validation errors occurred."
    assert problem["status"] == 400
    assert problem["traceId"]
    assert problem["errors"] == errors


@pytest.mark.parametrize(
    "query",
    [
        {"to": _iso(SEVEN_DAYS_AGO + timedelta(seconds=1))},  # just after the default 'from'
        {"from": "2016-03-02T10:00:00Z"},  # exactly 10 years ago
        {"from": _iso(NOW)},  # now is not the future (the range [now, now) is empty)
        {"to": _iso(NOW)},
        {"from": "2026-03-01T11:00:00+01:00", "to": "2026-03-01T10:00:01Z"},
        {"from": "2026-03-01T11:00:00 01:00"},  # an unencoded "+" arrives as a space
        {"FROM": "2026-03-01T00:00:00Z", "To": "2026-03-02T00:00:00Z"},  # names in any case
    ],
)
async def test_values_on_the_right_side_of_each_rule_are_accepted(
    client: httpx.AsyncClient, support: dict[str, str], query: dict[str, str]
) -> None:
    response = await client.get(NIN_ROUTE, headers={**support, "NationalIdentityNumber": NIN}, params=query)
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- what a look-up answers (reference 6.3)


async def test_a_look_up_finds_every_owners_shipments_newest_first(
    client: httpx.AsyncClient, support: dict[str, str], database: Database
) -> None:
    oldest = order("ttd", NOW - timedelta(days=3), senders_reference="ref-1", resource_id="urn:altinn:resource:a")
    middle = order("digdir", NOW - timedelta(days=2), notification_channel="Sms", order_type="Reminder")
    newest = order("nav", NOW - timedelta(hours=1), notification_channel="EmailAndSms")
    other_person = order("ttd", NOW - timedelta(hours=2))
    direct = order("ttd", NOW - timedelta(hours=3))
    await seed(
        database,
        [oldest, middle, newest, other_person, direct],
        [
            email(oldest, national_identity_number=NIN, status="Failed_RecipientReserved", email_address=None),
            email(newest, national_identity_number=NIN, email_address="kari@example.com", status="Succeeded"),
            email(other_person, national_identity_number="02027012345"),
            # Direct recipients (an address, no identifier) are never found by a look-up.
            email(direct, email_address="kari@example.com"),
        ],
        [
            sms(middle, national_identity_number=NIN, mobile_number="+4791111111", status="Accepted"),
            sms(newest, national_identity_number=NIN, mobile_number="+4792222222", changed=NOW - timedelta(minutes=5)),
            sms(direct, mobile_number="+4792222222"),
        ],
    )
    response = await client.get(NIN_ROUTE, headers={**support, "NationalIdentityNumber": NIN})
    assert response.status_code == 200, response.text
    assert response.json() == [
        {
            "shipmentId": str(newest["id"]),
            "creatorName": "nav",
            "requestedSendTime": "2026-03-02T09:00:00Z",
            "notificationChannel": "EmailAndSms",
            "notificationType": "Notification",
            "deliveryAttempts": [
                {
                    "nationalIdentityNumber": NIN,
                    "channel": "email",
                    "emailAddress": "kari@example.com",
                    "result": "Succeeded",
                    "resultTime": "2026-03-02T09:00:00Z",
                },
                {
                    "nationalIdentityNumber": NIN,
                    "channel": "sms",
                    "mobileNumber": "+4792222222",
                    "result": "Delivered",
                    "resultTime": "2026-03-02T09:55:00Z",
                },
            ],
        },
        {
            "shipmentId": str(middle["id"]),
            "creatorName": "digdir",
            "requestedSendTime": "2026-02-28T10:00:00Z",
            "notificationChannel": "Sms",
            "notificationType": "Reminder",
            "deliveryAttempts": [
                {
                    "nationalIdentityNumber": NIN,
                    "channel": "sms",
                    "mobileNumber": "+4791111111",
                    "result": "Accepted",
                    "resultTime": "2026-02-28T10:00:00Z",
                }
            ],
        },
        {
            "shipmentId": str(oldest["id"]),
            "creatorName": "ttd",
            "resourceId": "urn:altinn:resource:a",
            "sendersReference": "ref-1",
            "requestedSendTime": "2026-02-27T10:00:00Z",
            "notificationChannel": "EmailPreferred",
            "notificationType": "Notification",
            # Reserved: no address, so none is written.
            "deliveryAttempts": [
                {
                    "nationalIdentityNumber": NIN,
                    "channel": "email",
                    "result": "Failed_RecipientReserved",
                    "resultTime": "2026-02-27T10:00:00Z",
                }
            ],
        },
    ]


async def test_the_organisation_route_matches_organisation_numbers_and_names_them(
    client: httpx.AsyncClient, support: dict[str, str], database: Database
) -> None:
    to_org = order("ttd", NOW - timedelta(days=1))
    to_person = order("ttd", NOW - timedelta(days=1))
    await seed(
        database,
        [to_org, to_person],
        [
            # An organisation's contact point may be a person's: the route says which identifier it looked up by.
            email(to_org, organization_number=ORG_NUMBER, national_identity_number=NIN),
            email(to_person, national_identity_number=ORG_NUMBER + "00"),
        ],
    )
    response = await client.get(ORG_ROUTE, headers={**support, "OrganizationNumber": ORG_NUMBER})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [s["shipmentId"] for s in body] == [str(to_org["id"])]
    assert body[0]["deliveryAttempts"] == [
        {
            "organizationNumber": ORG_NUMBER,
            "channel": "email",
            "emailAddress": "ola@example.com",
            "result": "Delivered",
            "resultTime": "2026-03-01T10:00:00Z",
        }
    ]
    # And the NIN route shows that contact point's NIN, not the organisation number.
    by_nin = await client.get(NIN_ROUTE, headers={**support, "NationalIdentityNumber": NIN})
    assert by_nin.json()[0]["deliveryAttempts"][0]["nationalIdentityNumber"] == NIN
    assert "organizationNumber" not in by_nin.json()[0]["deliveryAttempts"][0]


async def test_the_range_is_half_open_on_the_orders_requested_send_time(
    client: httpx.AsyncClient, support: dict[str, str], database: Database
) -> None:
    start, end = NOW - timedelta(days=2), NOW - timedelta(days=1)
    at_start = order(requested=start)
    before = order(requested=start - timedelta(microseconds=1))
    just_before_end = order(requested=end - timedelta(microseconds=1))
    at_end = order(requested=end)
    rows = [at_start, before, just_before_end, at_end]
    # The notification's own times do not matter: only the order's requested send time does.
    await seed(database, rows, [email(o, national_identity_number=NIN, changed=NOW) for o in rows])
    response = await client.get(
        NIN_ROUTE,
        headers={**support, "NationalIdentityNumber": NIN},
        params={"from": _iso(start), "to": _iso(end)},
    )
    assert [s["shipmentId"] for s in response.json()] == [str(just_before_end["id"]), str(at_start["id"])]


async def test_by_default_the_last_seven_days_up_to_now(
    client: httpx.AsyncClient, support: dict[str, str], database: Database
) -> None:
    seven_days_ago = order(requested=NOW - timedelta(days=7))
    older = order(requested=NOW - timedelta(days=7, seconds=1))
    scheduled_now = order(requested=NOW)  # [from, to): now itself is outside
    rows = [seven_days_ago, older, scheduled_now]
    await seed(database, rows, [], [sms(o, national_identity_number=NIN) for o in rows])
    response = await client.get(NIN_ROUTE, headers={**support, "NationalIdentityNumber": NIN})
    assert [s["shipmentId"] for s in response.json()] == [str(seven_days_ago["id"])]
