"""The usage metrics API (reference 7) on SQLite and PostgreSQL: the API key's four refusals, the daily Parquet files
read back with pyarrow (columns, types, rows, headers), and the monthly summary as HTML, JSON and CSV."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import NOW
from tests.support.helpers import email, order, seed, sms
from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import Settings

METRICS = "/notifications/api/v1/metrics"
KEY = "a-long-metrics-key-0123456789"
# NOW is 2026-03-02 10:00 UTC: yesterday is 1 March.
YESTERDAY = NOW.replace(day=1, hour=0)
TODAY = NOW.replace(hour=0)

ClientFactory = Callable[[Settings], Any]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "var", conditions={"allowed_hosts": []}, metrics={"api_key": KEY, "environment": "Test"}
    )


@pytest.fixture
async def unconfigured(tmp_path: Any, database: Database, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with no metrics key configured."""
    services = build(Settings(data_dir=tmp_path / "other"), clock=clock, database=database)
    app = create_app(services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test") as http:
        yield http
    await services.http.aclose()


# ---------------------------------------------------------------- the API key


@pytest.mark.parametrize("channel", ["sms", "email"])
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "API key required for Metrics endpoints"),
        ({"X-API-Key": ""}, "API key cannot be empty"),
        ({"X-API-Key": "   "}, "API key cannot be empty"),
        ({"X-API-Key": KEY[:-1]}, "Invalid API key"),
        ({"X-API-Key": KEY + "0"}, "Invalid API key"),
        ({"X-API-Key": "wrong"}, "Invalid API key"),
    ],
)
async def test_the_export_refuses_without_the_right_key(
    client: httpx.AsyncClient, channel: str, headers: dict[str, str], message: str
) -> None:
    response = await client.post(f"{METRICS}/{channel}", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": message}


@pytest.mark.parametrize("channel", ["sms", "email"])
async def test_with_no_key_configured_every_key_is_refused(unconfigured: httpx.AsyncClient, channel: str) -> None:
    response = await unconfigured.post(f"{METRICS}/{channel}", headers={"X-API-Key": KEY})
    assert response.status_code == 401
    assert response.json() == {"error": "API key validation not configured"}
    # The header's own checks come first, as the reference's.
    missing = await unconfigured.post(f"{METRICS}/{channel}")
    assert missing.json() == {"error": "API key required for Metrics endpoints"}


async def test_an_empty_configured_key_counts_as_none(tmp_path: Any, database: Database, clock: FrozenClock) -> None:
    services = build(Settings(data_dir=tmp_path / "x", metrics={"api_key": ""}), clock=clock, database=database)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as http:
        response = await http.post(f"{METRICS}/sms", headers={"X-API-Key": "x"})
    await services.http.aclose()
    assert response.json() == {"error": "API key validation not configured"}


# ---------------------------------------------------------------- the Parquet files


def _read(body: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(body))


def _check_file_headers(response: httpx.Response, name: str, rows: int) -> None:
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert response.headers["x-file-hash"] == base64.b64encode(hashlib.md5(response.content).digest()).decode()
    assert response.headers["x-file-size"] == str(len(response.content))
    assert response.headers["x-total-filetransfer-count"] == str(rows)
    assert response.headers["x-generated-at"] == "2026-03-02T10:00:00.0000000Z"
    assert response.headers["x-environment"] == "Test"


SMS_SCHEMA = [
    ("SmsId", pa.string()),
    ("ShipmentId", pa.string()),
    ("SendersReference", pa.string()),
    ("RequestedSendTime", pa.string()),
    ("CreatorName", pa.string()),
    ("ResourceId", pa.string()),
    ("Result", pa.string()),
    ("GatewayReference", pa.string()),
    ("Rate", pa.string()),
    ("MobileNumberPrefix", pa.string()),
    ("AltinnSmsCount", pa.int32()),
    ("AltinnSmsBodyLength", pa.int32()),
    ("AltinnSmsCustomBodyLength", pa.int32()),
]

EMAIL_SCHEMA = [
    ("EmailId", pa.string()),
    ("ShipmentId", pa.string()),
    ("SendersReference", pa.string()),
    ("RequestedSendTime", pa.string()),
    ("CreatorName", pa.string()),
    ("ResourceId", pa.string()),
    ("Result", pa.string()),
    ("OperationId", pa.string()),
]


async def test_the_sms_file_holds_yesterdays_final_sms(client: httpx.AsyncClient, database: Database) -> None:
    ttd = order("ttd", NOW - timedelta(days=2), senders_reference="ref-7", resource_id="urn:altinn:resource:r")
    nav = order("nav", NOW - timedelta(days=3), sms_body="12345")
    at = YESTERDAY + timedelta(hours=8)
    delivered = sms(ttd, changed=at, mobile_number="+4791234567", provider_reference="gw-1", segments=2)
    abroad = sms(nav, changed=at + timedelta(hours=1), mobile_number="+46701234567", status="Failed_Undelivered")
    old_style = sms(nav, changed=at + timedelta(hours=2), mobile_number="004791234567", body="Hei Kari")
    nobody = sms(nav, changed=YESTERDAY, mobile_number=None, status="Failed_RecipientNotIdentified", segments=1)
    late_last_night = sms(nav, changed=TODAY - timedelta(microseconds=1), status="Failed_TTL")
    left_out = [
        sms(ttd, changed=at, status="Accepted"),  # not final: a delivery report may still come
        sms(ttd, changed=at, status="Sending"),
        sms(ttd, changed=at, status="New"),
        sms(ttd, changed=TODAY, status="Delivered"),  # today's
        sms(ttd, changed=YESTERDAY - timedelta(microseconds=1), status="Delivered"),  # the day before
    ]
    await seed(database, [ttd, nav], [], [delivered, abroad, old_style, nobody, late_last_night, *left_out])

    response = await client.post(f"{METRICS}/sms", headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    _check_file_headers(response, "20260301_sms_notifications_Test.parquet", 5)
    table = _read(response.content)
    assert [(field.name, field.type) for field in table.schema] == SMS_SCHEMA
    rows = table.to_pylist()
    template = len("Hello from the template")
    assert rows == [
        {
            "SmsId": str(nobody["id"]),
            "ShipmentId": str(nav["id"]),
            "SendersReference": "",
            "RequestedSendTime": "2026-02-27T10:00:00Z",
            "CreatorName": "nav",
            "ResourceId": None,
            "Result": "Failed_RecipientNotIdentified",
            "GatewayReference": "",
            "Rate": "n/a",
            "MobileNumberPrefix": "",
            "AltinnSmsCount": 1,
            "AltinnSmsBodyLength": 5,
            "AltinnSmsCustomBodyLength": 0,
        },
        {
            "SmsId": str(delivered["id"]),
            "ShipmentId": str(ttd["id"]),
            "SendersReference": "ref-7",
            "RequestedSendTime": "2026-02-28T10:00:00Z",
            "CreatorName": "ttd",
            "ResourceId": "urn:altinn:resource:r",
            "Result": "Delivered",
            "GatewayReference": "gw-1",
            "Rate": "innland",
            "MobileNumberPrefix": "+479",
            "AltinnSmsCount": 2,
            "AltinnSmsBodyLength": template,
            "AltinnSmsCustomBodyLength": 0,
        },
        {
            "SmsId": str(abroad["id"]),
            "ShipmentId": str(nav["id"]),
            "SendersReference": "",
            "RequestedSendTime": "2026-02-27T10:00:00Z",
            "CreatorName": "nav",
            "ResourceId": None,
            "Result": "Failed_Undelivered",
            "GatewayReference": "",
            "Rate": "utland",
            "MobileNumberPrefix": "+467",
            "AltinnSmsCount": 1,
            "AltinnSmsBodyLength": 5,
            "AltinnSmsCustomBodyLength": 0,
        },
        {
            "SmsId": str(old_style["id"]),
            "ShipmentId": str(nav["id"]),
            "SendersReference": "",
            "RequestedSendTime": "2026-02-27T10:00:00Z",
            "CreatorName": "nav",
            "ResourceId": None,
            "Result": "Delivered",
            "GatewayReference": "",
            "Rate": "innland",
            "MobileNumberPrefix": "0047",
            "AltinnSmsCount": 1,
            "AltinnSmsBodyLength": 5,
            "AltinnSmsCustomBodyLength": len("Hei Kari"),
        },
        {
            "SmsId": str(late_last_night["id"]),
            "ShipmentId": str(nav["id"]),
            "SendersReference": "",
            "RequestedSendTime": "2026-02-27T10:00:00Z",
            "CreatorName": "nav",
            "ResourceId": None,
            "Result": "Failed_TTL",
            "GatewayReference": "",
            "Rate": "innland",
            "MobileNumberPrefix": "+479",
            "AltinnSmsCount": 1,
            "AltinnSmsBodyLength": 5,
            "AltinnSmsCustomBodyLength": 0,
        },
    ]


async def test_the_email_file_holds_yesterdays_final_emails(
    client: httpx.AsyncClient, database: Database, clock: FrozenClock
) -> None:
    ttd = order("ttd", NOW - timedelta(days=1), senders_reference="ref-9")
    at = YESTERDAY + timedelta(hours=12)
    delivered = email(ttd, changed=at, provider_reference="acs-operation-1")
    bounced = email(ttd, changed=at + timedelta(seconds=1), status="Failed_Bounced")
    left_out = [
        email(ttd, changed=at, status="Succeeded"),  # not final
        email(ttd, changed=at, status="Sending"),
        email(ttd, changed=at, status="New"),
        email(ttd, changed=TODAY, status="Delivered"),
    ]
    await seed(database, [ttd], [delivered, bounced, *left_out])

    response = await client.post(f"{METRICS}/email", headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    _check_file_headers(response, "20260301_email_notifications_Test.parquet", 2)
    table = _read(response.content)
    assert [(field.name, field.type) for field in table.schema] == EMAIL_SCHEMA
    common = {
        "ShipmentId": str(ttd["id"]),
        "SendersReference": "ref-9",
        "RequestedSendTime": "2026-03-01T10:00:00Z",
        "CreatorName": "ttd",
        "ResourceId": None,
    }
    assert table.to_pylist() == [
        {"EmailId": str(delivered["id"]), **common, "Result": "Delivered", "OperationId": "acs-operation-1"},
        {"EmailId": str(bounced["id"]), **common, "Result": "Failed_Bounced", "OperationId": ""},
    ]

    # "Yesterday" follows the clock: a day later, yesterday's file is today's (the Delivered one at midnight).
    clock.advance(timedelta(days=1))
    later = await client.post(f"{METRICS}/email", headers={"X-API-Key": KEY})
    assert later.headers["content-disposition"] == 'attachment; filename="20260302_email_notifications_Test.parquet"'
    assert _read(later.content).column("Result").to_pylist() == ["Delivered"]


async def test_a_day_without_final_notifications_is_an_empty_file_with_the_columns(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{METRICS}/sms", headers={"X-API-Key": KEY})
    assert response.status_code == 200
    _check_file_headers(response, "20260301_sms_notifications_Test.parquet", 0)
    table = _read(response.content)
    assert table.num_rows == 0
    assert [(field.name, field.type) for field in table.schema] == SMS_SCHEMA


# ---------------------------------------------------------------- the monthly summary


async def _march(database: Database) -> None:
    """Three owners' orders around March 2026 (NOW's month)."""
    march = NOW.replace(day=1, hour=0)
    ttd_1 = order("ttd", march)  # the month's first instant
    ttd_2 = order("ttd", NOW)
    nav = order("nav", march + timedelta(days=30, hours=23, minutes=59))  # 31 March 23:59
    february = order("ttd", march - timedelta(microseconds=1))
    april = order("nav", march.replace(month=4))
    hostile = order("<script>alert(1)</script>", NOW)
    await seed(
        database,
        [ttd_1, ttd_2, nav, february, april, hostile],
        [
            email(ttd_1, status="Delivered"),
            email(ttd_1, status="Succeeded"),
            email(ttd_1, status="Failed_Bounced"),
            email(ttd_2, status="New"),
            email(nav, status="Delivered"),
            email(february, status="Delivered"),
            email(april, status="Delivered"),
        ],
        [
            sms(ttd_1, segments=3, status="Delivered"),
            sms(ttd_2, segments=2, status="Accepted"),
            sms(ttd_2, segments=1, status="Failed_Undelivered"),
            sms(nav, segments=4, status="Failed_TTL"),
            sms(february, segments=10, status="Delivered"),
            sms(april, segments=10, status="Delivered"),
        ],
    )


# (org, orders, emails, successful emails, SMS segments, successful SMS)
MARCH = [
    ("<script>alert(1)</script>", 1, 0, 0, 0, 0),
    ("nav", 1, 1, 1, 4, 0),
    ("ttd", 2, 4, 2, 6, 2),
]


async def test_the_summary_as_json(client: httpx.AsyncClient, database: Database) -> None:
    await _march(database)
    response = await client.get(f"{METRICS}/usage", params={"month": "3", "year": "2026"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "month": 3,
        "year": 2026,
        "metrics": [
            {
                "org": org,
                "ordersCreated": orders,
                "emailNotificationsCreated": emails,
                "successfulEmailNotifications": ok_emails,
                "smsNotificationsCreated": segments,
                "successfulSmsNotifications": ok_sms,
                "simulatedEmailNotifications": 0,
                "simulatedSmsNotifications": 0,
            }
            for org, orders, emails, ok_emails, segments, ok_sms in MARCH
        ],
    }


@pytest.mark.parametrize(
    ("params", "headers"),
    [({"month": "3", "year": "2026", "format": "csv"}, {}), ({"Month": "03", "YEAR": "2026"}, {"Accept": "text/csv"})],
)
async def test_the_summary_as_csv(
    client: httpx.AsyncClient, database: Database, params: dict[str, str], headers: dict[str, str]
) -> None:
    await _march(database)
    response = await client.get(f"{METRICS}/usage", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="202603_usage_Test.csv"'
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [
        [
            "Organization",
            "Total orders",
            "Total email notifications",
            "Successful email notifications",
            "Total SMS notifications",
            "Successful SMS notifications",
            "Simulated email notifications",
            "Simulated SMS notifications",
        ],
        *[[str(value) for value in row] + ["0", "0"] for row in MARCH],
    ]


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({}, {"Month": ["The Month field is required."], "Year": ["The Year field is required."]}),
        ({"month": "13", "year": "2026"}, {"Month": ["The field Month must be between 1 and 12."]}),
        ({"month": "0", "year": "2026"}, {"Month": ["The field Month must be between 1 and 12."]}),
        ({"month": "march", "year": "2026"}, {"Month": ["The value 'march' is not valid for Month."]}),
        ({"month": "3", "year": "1999"}, {"Year": ["The field Year must be between 2000 and 9998."]}),
        ({"month": "3", "year": "99999999999"}, {"Year": ["The value '99999999999' is not valid for Year."]}),
        ({"month": "3", "year": "2026", "format": "xlsx"}, {"Format": ["The field Format must be json or csv."]}),
    ],
)
async def test_a_bad_month_is_a_problem_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], errors: dict[str, list[str]]
) -> None:
    response = await client.get(f"{METRICS}/usage", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == errors


async def test_the_html_form(client: httpx.AsyncClient) -> None:
    response = await client.get(METRICS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f'<form method="post" action="{METRICS}">' in page
    # Today's month and year, by the clock, are filled in.
    assert 'name="month" min="1" max="12" required value="3"' in page
    assert 'required value="2026"' in page
    assert "<table>" not in page


async def test_the_html_table_with_the_export_button(client: httpx.AsyncClient, database: Database) -> None:
    await _march(database)
    response = await client.post(METRICS, data={"month": "3", "year": "2026"})
    assert response.status_code == 200, response.text
    page = response.text
    assert "Export metrics to Excel" in page
    assert f'action="{METRICS}/usage"' in page
    assert 'name="format" value="csv"' in page
    for column in ("Organization", "Total orders", "Successful SMS notifications"):
        assert f'<th scope="col">{column}</th>' in page
    assert '<tr><td>ttd</td><td class="number">2</td><td class="number">4</td><td class="number">2</td>' in page
    # ... segments, successful SMS, and nothing to simulated recipients.
    number = '<td class="number">{}</td>'.format
    assert "".join(number(n) for n in (6, 2, 0, 0)) + "</tr>" in page
    # A service owner's name is text, never markup.
    assert "<script>" not in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"month": "13", "year": "2026"}, "Month: The field Month must be between 1 and 12."),
        ({"month": "3"}, "Year: The Year field is required."),
        ({"month": "3", "year": "<b>2026</b>"}, "Year: The value &#39;&lt;b&gt;2026&lt;/b&gt;&#39; is not valid"),
        ({"month": "", "year": "-1"}, "Month: The Month field is required."),
    ],
)
async def test_a_bad_form_is_a_400_page(client: httpx.AsyncClient, form: dict[str, str], message: str) -> None:
    response = await client.post(METRICS, data=form)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert message in response.text
    assert "<b>" not in response.text


async def test_a_form_that_is_no_form_is_refused_with_a_page(client: httpx.AsyncClient) -> None:
    response = await client.post(METRICS, json={"month": 3, "year": 2026})
    assert response.status_code == 415
    assert "application/x-www-form-urlencoded" in response.text
    broken = await client.post(
        METRICS, content=b"month=%ff&year=\xff", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert broken.status_code == 400
