"""The Delivery reports page in a real browser: retry a dead report with htmx and see it pending in the database;
every asset comes from the package (a request leaving 127.0.0.1 fails the test, see the page fixture); screenshots
of the sign-in and reports pages for the README."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from playwright.async_api import Page

from tests.conftest import NOW
from tests.console.conftest import ConsoleServer, PageProblems
from tests.console.reports_data import report_row, state_of, store_reports
from varsel.db.engine import Database


async def _sign_in(page: Page, console: ConsoleServer, org: str | None = None) -> None:
    await page.goto(console.link(org, admin=org is None))
    await page.click("#sign-in")
    await page.wait_for_url(f"{console.url}/console")


async def test_retry_a_dead_report_from_the_page(
    sqlite_console: ConsoleServer,
    sqlite_database: Database,
    page: Page,
    page_problems: PageProblems,
    screenshots: Path,
) -> None:
    # Fixed references, so that the README's screenshot is the same at each run.
    first = report_row(
        "dead",
        NOW - timedelta(hours=2),
        reference="0b6a4c4e-7f1d-4d55-9a51-3f1b2c9d0e11",
        provider_reference="lm-7d41c2",
        detail="No notification with this reference",
    )
    second = report_row(
        "dead",
        NOW - timedelta(hours=1),
        channel="email",
        provider="acs",
        status="Failed_Bounced",
        reference="5e9f0a1b-2c3d-4e5f-8a7b-6c5d4e3f2a10",
        provider_reference="acs-91e0f3",
    )
    pending = report_row(
        "pending", NOW - timedelta(minutes=3), reference=str(uuid.UUID(int=7)), provider_reference="lm-a11c07"
    )
    await store_reports(sqlite_database, first, second, pending)

    await page.goto(f"{sqlite_console.url}/console/sign-in")
    await page.screenshot(path=screenshots / "sign-in.png")
    await _sign_in(page, sqlite_console)
    await page.click("header nav >> text=Delivery reports")
    await page.wait_for_url(f"{sqlite_console.url}/console/reports")
    # Newest first; each list only its own state.
    dead_rows = page.locator("#dead tbody tr")
    assert await dead_rows.count() == 2
    assert second["reference"] in (await dead_rows.nth(0).text_content() or "")
    assert await page.locator("#pending tbody tr").count() == 1
    await page.screenshot(path=screenshots / "delivery-reports.png", full_page=True)

    # Retry the older one: htmx posts the form (with the CSRF token) and swaps the lists in place.
    loaded = len(page_problems.requests)
    async with page.expect_response(f"{sqlite_console.url}/console/reports/retry") as answer:
        await page.locator(f"#report-{first['id']} button").click()
    assert (await answer.value).status == 200
    await page.locator("#reports .notice").wait_for()
    assert "1 dead report will be tried again now." in (await page.text_content("#reports .notice") or "")
    # A partial update, not a page load: no stylesheet or script was fetched again.
    assert [url for url in page_problems.requests[loaded:] if "/static/" in url] == []
    assert page.url == f"{sqlite_console.url}/console/reports"
    assert await page.locator("#dead tbody tr").count() == 1
    assert await page.locator(f"#pending #report-{first['id']}").count() == 1
    assert await state_of(sqlite_database, first["id"]) == "pending"
    assert await state_of(sqlite_database, second["id"]) == "dead"

    async with page.expect_response(f"{sqlite_console.url}/console/reports/retry"):
        await page.click("#retry-all")
    await page.locator("#dead .empty").wait_for()
    assert await state_of(sqlite_database, second["id"]) == "pending"
    assert await page.locator("#pending tbody tr").count() == 3


async def test_the_pages_load_their_assets_from_the_package(
    sqlite_console: ConsoleServer, page: Page, page_problems: PageProblems
) -> None:
    await _sign_in(page, sqlite_console)
    await page.goto(f"{sqlite_console.url}/console/reports")
    # htmx ran (it only processes the page once loaded) and our stylesheet applies.
    assert await page.evaluate("typeof window.htmx === 'object' && typeof htmx.version === 'string'")
    assert await page.evaluate("getComputedStyle(document.querySelector('header.top')).display") == "flex"
    # The chart library loads and draws under the page's Content-Security-Policy.
    await page.add_script_tag(url=f"{sqlite_console.url}/console/static/uplot.iife.min.js")
    assert await page.evaluate("typeof uPlot === 'function'")
    static = sorted({url.split("?")[0].rsplit("/", 1)[1] for url in page_problems.requests if "/static/" in url})
    assert {"console.css", "favicon.svg", "htmx.min.js", "uplot.iife.min.js"} <= set(static)
    # And every request of the page went to 127.0.0.1 (the page fixture fails the test otherwise).
    assert all(url.startswith(f"{sqlite_console.url}/") for url in page_problems.requests)
