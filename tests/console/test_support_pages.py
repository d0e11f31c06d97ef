"""The console's support pages (admin only): the recipient look-up across service owners, with the identity number in
the form's body, never the URL; and the monthly usage per service owner with its CSV download."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta
from pathlib import Path

import httpx
from playwright.async_api import Page

from tests.conftest import NOW
from tests.console.conftest import ConsoleServer, http_client
from tests.support.helpers import NIN, ORG_NUMBER, email, order, seed, sms
from varsel.db.engine import Database

OTHER_NIN = "02028012345"


async def _people(database: Database) -> dict[str, dict[str, object]]:
    """Three owners' orders to the same person (two days apart), one to someone else, one to an organisation."""
    ttd = order("ttd", NOW - timedelta(days=1), senders_reference="ttd-ref")
    nav = order("nav", NOW - timedelta(days=3), senders_reference="nav-ref", order_type="Reminder")
    skatt = order("skatt", NOW - timedelta(days=30))  # outside the default seven days
    other = order("ttd", NOW - timedelta(hours=2), senders_reference="someone-else")
    company = order("nav", NOW - timedelta(hours=5), senders_reference="company")
    await seed(
        database,
        [ttd, nav, skatt, other, company],
        [
            email(ttd, national_identity_number=NIN, email_address="ola@example.com"),
            email(other, national_identity_number=OTHER_NIN, email_address="kari@example.com"),
            email(company, organization_number=ORG_NUMBER, email_address="post@firma.no", status="Failed_Bounced"),
        ],
        [
            sms(nav, national_identity_number=NIN, mobile_number="+4799990001", status="Failed_Undelivered"),
            sms(skatt, national_identity_number=NIN, mobile_number="+4799990002"),
        ],
    )
    return {"ttd": ttd, "nav": nav, "skatt": skatt}


async def _admin(console: ConsoleServer) -> tuple[httpx.AsyncClient, str]:
    cookie, csrf = console.session(admin=True)
    return http_client(console, cookie), csrf


async def test_the_look_up_finds_every_owners_notifications_to_the_person_newest_first(
    console: ConsoleServer, database: Database
) -> None:
    await _people(database)
    client, csrf = await _admin(console)
    async with client:
        form = {"csrf": csrf, "kind": "nin", "value": NIN, "start": "2026-02-23", "end": "2026-03-02"}
        answer = await client.post("/console/recipients", data=form)
    assert answer.status_code == 200
    page = answer.text
    # Both owners' shipments to the person in the last seven days, newest first; not the other person's, not the
    # one a month old, and not the organisation's.
    assert page.index("ttd-ref") < page.index("nav-ref")
    assert "ola@example.com" in page
    assert "+4799990001" in page
    assert "Failed_Undelivered" in page
    assert "someone-else" not in page
    assert "kari@example.com" not in page
    assert "+4799990002" not in page
    assert "post@firma.no" not in page
    assert "2 shipments" in page


async def test_the_range_reaches_back_and_the_organisation_number_is_looked_up_too(
    console: ConsoleServer, database: Database
) -> None:
    await _people(database)
    client, csrf = await _admin(console)
    async with client:
        month = await client.post(
            "/console/recipients",
            data={"csrf": csrf, "kind": "nin", "value": NIN, "start": "2026-01-01", "end": "2026-03-02"},
        )
        firm = await client.post(
            "/console/recipients",
            data={"csrf": csrf, "kind": "orgnumber", "value": ORG_NUMBER, "start": "2026-02-23", "end": "2026-03-02"},
        )
    assert "+4799990002" in month.text
    assert "3 shipments" in month.text
    assert "post@firma.no" in firm.text
    assert "Failed_Bounced" in firm.text
    assert "1 shipment," in firm.text
    assert "ola@example.com" not in firm.text


async def test_bad_look_ups_say_what_is_wrong(console: ConsoleServer) -> None:
    client, csrf = await _admin(console)
    cases = [
        ({"kind": "nin", "value": "123", "start": "2026-02-23", "end": "2026-03-02"}, "11 digits"),
        ({"kind": "orgnumber", "value": "12345678901", "start": "2026-02-23", "end": "2026-03-02"}, "9 digits"),
        ({"kind": "passport", "value": NIN, "start": "2026-02-23", "end": "2026-03-02"}, "Choose what to look up"),
        ({"kind": "nin", "value": NIN, "start": "yesterday", "end": "2026-03-02"}, "From must be a date"),
        ({"kind": "nin", "value": NIN, "start": "2026-03-02", "end": "2026-02-01"}, "must not be after To"),
        ({"kind": "nin", "value": NIN, "start": "2026-03-05", "end": "2026-03-06"}, "must not be in the future"),
        ({"kind": "nin", "value": NIN, "start": "2015-01-01", "end": "2026-03-02"}, "more than 10 years ago"),
    ]
    async with client:
        for form, message in cases:
            answer = await client.post("/console/recipients", data={"csrf": csrf, **form})
            assert answer.status_code == 400, form
            assert message in answer.text, form


async def test_the_support_pages_are_the_admins_and_the_look_up_needs_its_token(
    console: ConsoleServer, database: Database
) -> None:
    await _people(database)
    cookie, csrf = console.session("ttd")
    form = {"kind": "nin", "value": NIN, "start": "2026-02-23", "end": "2026-03-02"}
    async with http_client(console, cookie) as org:
        for path in ("/console/recipients", "/console/usage", "/console/usage.csv?year=2026&month=2"):
            assert (await org.get(path)).status_code == 404, path
        refused = await org.post("/console/recipients", data={"csrf": csrf, **form})
        assert refused.status_code == 404
        assert "ola@example.com" not in refused.text
    client, admin_csrf = await _admin(console)
    async with client:
        assert (await client.get("/console/recipients")).status_code == 200
        missing = await client.post("/console/recipients", data=form)
        wrong = await client.post("/console/recipients", data={"csrf": csrf, **form})  # another session's token
    for answer in (missing, wrong):
        assert answer.status_code == 403
        assert "ola@example.com" not in answer.text
    async with http_client(console) as nobody:
        signed_out = await nobody.post("/console/recipients", data={"csrf": admin_csrf, **form})
        assert signed_out.status_code == 403
        assert "ola@example.com" not in signed_out.text


async def test_usage_per_owner_for_the_month_with_totals_and_csv(console: ConsoleServer, database: Database) -> None:
    await _people(database)  # February: nav's reminder (a failed SMS); skatt's is January's, the rest March's
    client, _ = await _admin(console)
    async with client:
        page = await client.get("/console/usage", params={"year": "2026", "month": "2"})
        download = await client.get("/console/usage.csv", params={"year": "2026", "month": "2"})
        march = await client.get("/console/usage", params={"year": "2026", "month": "3"})
        bad = await client.get("/console/usage", params={"year": "2026", "month": "13"})
        bad_csv = await client.get("/console/usage.csv", params={"year": "x", "month": "2"})
    assert page.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert 'filename="varsel-usage-2026-02.csv"' in download.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0][0] == "Organization"
    by_org = {row[0]: row[1:] for row in rows[1:]}
    assert by_org == {"nav": ["1", "0", "0", "1", "0", "0", "0"]}
    assert "<td>nav</td>" in page.text
    assert "<th>All</th>" in page.text
    # March: ttd's two orders (one email each, delivered) and nav's to the company (bounced).
    assert '<td>ttd</td><td class="num">2</td><td class="num">2</td><td class="num">2</td>' in march.text
    assert bad.status_code == 400
    assert "month 1-12" in bad.text
    assert bad_csv.status_code == 400


async def test_a_support_look_up_and_usage_in_the_browser(
    sqlite_console: ConsoleServer, sqlite_database: Database, page: Page, screenshots: Path
) -> None:
    await _people(sqlite_database)
    await page.goto(sqlite_console.link(admin=True))
    await page.click("#sign-in")
    await page.wait_for_url(f"{sqlite_console.url}/console")
    await page.click("header nav >> text=Recipient lookup")
    await page.wait_for_url(f"{sqlite_console.url}/console/recipients")
    await page.fill("#value", NIN)
    await page.fill("#start", "2026-02-23")
    await page.fill("#end", "2026-03-02")
    async with page.expect_response(f"{sqlite_console.url}/console/recipients") as answer:
        await page.click("#look-up")
    assert (await answer.value).request.method == "POST"
    await page.wait_for_selector("#shipments")
    # Swapped in by htmx: the page stayed, and the number never reached the URL.
    assert page.url == f"{sqlite_console.url}/console/recipients"
    rows = await page.locator("#shipments tbody tr").all_text_contents()
    assert len(rows) == 2
    assert "ttd-ref" in rows[0]
    assert "nav-ref" in rows[1]
    await page.screenshot(path=str(screenshots / "recipient-lookup.png"), full_page=True)

    await page.click("header nav >> text=Usage")
    await page.fill("#month", "2")
    await page.fill("#year", "2026")
    await page.click("#show-usage")
    await page.wait_for_selector("#usage")
    assert await page.locator("#usage tbody tr").all_text_contents() == ["nav1001000"]
    async with page.expect_download() as download:
        await page.click("#usage-csv")
    saved = Path(await (await download.value).path())
    assert (await asyncio.to_thread(saved.read_text)).splitlines()[0].startswith("Organization,")
    await page.screenshot(path=str(screenshots / "usage.png"), full_page=True)
