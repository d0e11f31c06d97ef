"""The Overview, Orders and Order pages: over HTTP on both databases (tenancy by URL, cancel's CSRF) and in a real
headless Chromium (find an order by sender's reference, open its timeline, cancel it, the overview's charts)."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from tests.conftest import NOW
from tests.console.conftest import ConsoleServer, http_client
from tests.console.test_repository import attempt_row, notification_row, order_row, store
from varsel.db.engine import Database
from varsel.notifications.statuses import OrderStatus


async def _orders(database: Database) -> dict[str, dict[str, Any]]:
    mine = order_row(
        "ttd",
        senders_reference="invoice-42",
        status=OrderStatus.REGISTERED.value,
        created=NOW - timedelta(minutes=5),
        requested_send_time=NOW + timedelta(hours=2),
    )
    sent = order_row(
        "ttd",
        senders_reference="welcome-7",
        created=NOW - timedelta(minutes=30),
        requested_send_time=NOW - timedelta(minutes=30),
    )
    theirs = order_row(
        "nav",
        senders_reference="invoice-42",
        created=NOW - timedelta(minutes=10),
        requested_send_time=NOW - timedelta(minutes=10),
    )
    delivered = notification_row("email", sent, status_changed=sent["created"] + timedelta(seconds=40))
    failed = notification_row(
        "sms", sent, status="Failed_Undelivered", status_changed=sent["created"] + timedelta(minutes=1)
    )
    await store(
        database,
        [mine, sent, theirs],
        {"email": [delivered, notification_row("email", theirs)], "sms": [failed]},
        [
            attempt_row("email", delivered, sent["created"] + timedelta(seconds=2), provider_reference="msg-1"),
            attempt_row("sms", failed, sent["created"] + timedelta(seconds=3)),
        ],
    )
    return {"mine": mine, "sent": sent, "theirs": theirs}


async def test_an_org_neither_opens_nor_cancels_another_orgs_order_by_url(
    console: ConsoleServer, database: Database
) -> None:
    orders = await _orders(database)
    theirs = orders["theirs"]["id"]
    cookie, csrf = console.session("ttd")
    async with http_client(console, cookie) as client:
        found = await client.get("/console/orders", params={"reference": "invoice-42"})
        opened = await client.get(f"/console/orders/{theirs}")
        cancelled = await client.post(f"/console/orders/{theirs}/cancel", data={"csrf": csrf})
        nonsense = await client.get("/console/orders/not-an-id")
        own = await client.get(f"/console/orders/{orders['sent']['id']}")
        without_token = await client.post(f"/console/orders/{orders['mine']['id']}/cancel", data={})
    assert found.status_code == 200
    assert str(orders["mine"]["id"]) in found.text
    assert str(theirs) not in found.text
    assert opened.status_code == 404
    assert cancelled.status_code == 404
    assert nonsense.status_code == 404
    assert own.status_code == 200
    assert "msg-1" in own.text
    assert "Failed_Undelivered" in own.text
    # No CSRF token: refused, and the order is still Registered.
    assert without_token.status_code == 403
    admin_cookie, _ = console.session(admin=True)
    async with http_client(console, admin_cookie) as admin:
        seen = await admin.get(f"/console/orders/{theirs}")
        mine = await admin.get(f"/console/orders/{orders['mine']['id']}")
    assert seen.status_code == 200
    assert "Cancel this order" in mine.text


async def test_a_bad_search_says_what_is_wrong(console: ConsoleServer) -> None:
    """Each wrong field is named in a 400 page, on both databases (no input reaches the database to fail there)."""
    cookie, _ = console.session("ttd")
    async with http_client(console, cookie) as client:
        bad_id = await client.get("/console/orders", params={"id": "42"})
        bad_status = await client.get("/console/orders", params={"status": "Lost"})
        bad_cursor = await client.get("/console/orders", params={"after": "yesterday"})
        bad_time = await client.get("/console/orders", params={"since": "soon"})
        nul = await client.get("/console/orders", params={"reference": "a\x00b"})
        out_of_calendar = await client.get("/console/orders", params={"until": "9999-12-31T23:59-01:00"})
    assert bad_id.status_code == 400
    assert "must be a UUID" in bad_id.text
    assert bad_status.status_code == 400
    assert "Status must be one of" in bad_status.text
    assert bad_cursor.status_code == 400
    assert bad_time.status_code == 400
    assert "From must be a date" in bad_time.text
    assert nul.status_code == 400
    assert out_of_calendar.status_code == 400
    assert "within years 1 to 9999" in out_of_calendar.text


async def test_find_an_order_open_its_timeline_and_cancel_it_in_a_browser(
    sqlite_console: ConsoleServer, sqlite_database: Database, page: Page, screenshots: Path
) -> None:
    orders = await _orders(sqlite_database)
    await page.goto(sqlite_console.link("ttd"))
    await page.click("#sign-in")
    await page.wait_for_url(f"{sqlite_console.url}/console")
    await page.goto(f"{sqlite_console.url}/console/orders")
    await page.fill("input[name=reference]", "welcome-7")
    await page.click("form.search button[type=submit]")
    # The unfiltered list is there before the search: wait until htmx has swapped in the results.
    await expect(page.locator("#results table.orders td.reference")).to_have_text(["welcome-7"])
    await page.locator("#results table.orders a").first.click()
    await page.wait_for_url(f"**/console/orders/{orders['sent']['id']}")
    timeline = page.locator("ol.timeline li")
    texts = await timeline.all_inner_texts()
    assert any("handed to outbox: accepted" in t and "msg-1" in t for t in texts), texts
    assert any("status now Delivered" in t for t in texts), texts
    await page.screenshot(path=str(screenshots / "order.png"), full_page=True)

    await page.goto(f"{sqlite_console.url}/console/orders")
    await page.fill("input[name=reference]", "invoice-42")
    await page.click("form.search button[type=submit]")
    # One: the org's own, not nav's order with the same reference.
    await expect(page.locator("#results table.orders td.reference")).to_have_text(["invoice-42"])
    await page.screenshot(path=str(screenshots / "orders.png"), full_page=True)
    await page.locator("#results table.orders a").first.click()
    await page.wait_for_url(f"**/console/orders/{orders['mine']['id']}")
    await page.click("form.cancel button")
    await page.wait_for_url(f"**/console/orders/{orders['mine']['id']}")
    assert "Cancelled" in await page.locator("section.order h2 .status").inner_text()
    assert await page.locator("form.cancel").count() == 0


async def test_the_overview_draws_its_charts_with_data(
    sqlite_console: ConsoleServer, sqlite_database: Database, page: Page, screenshots: Path
) -> None:
    await _orders(sqlite_database)
    await page.goto(sqlite_console.link(admin=True))
    await page.click("#sign-in")
    await page.wait_for_url(f"{sqlite_console.url}/console")
    await page.goto(f"{sqlite_console.url}/console/overview?period=hour")
    charts = page.locator("#charts figure.chart")
    await charts.first.wait_for()
    titles = [await charts.nth(i).get_attribute("data-chart") for i in range(await charts.count())]
    assert "email notifications by status" in titles
    assert "sms notifications by status" in titles
    assert await page.locator("#charts figure.chart canvas").count() == len(titles)
    assert await page.locator("table.figures tr.channel-email td.rate").inner_text() == "100.0 %"
    assert await page.locator("table.figures tr.channel-sms td.rate").inner_text() == "0.0 %"
    await page.screenshot(path=str(screenshots / "overview.png"), full_page=True)


async def test_the_next_link_pages_through_every_order_once(console: ConsoleServer, database: Database) -> None:
    # 30 orders, ten of them at one instant: the first page ends inside the tie.
    rows = [
        order_row("ttd", senders_reference=f"page-{i}", created=NOW - timedelta(seconds=max(i, 10))) for i in range(30)
    ]
    await store(database, rows)
    cookie, _ = console.session("ttd")
    seen: list[str] = []
    async with http_client(console, cookie) as client:
        url: str | None = "/console/orders"
        pages = 0
        while url is not None:
            answer = await client.get(url, headers={"HX-Request": "true"})
            assert answer.status_code == 200
            seen += re.findall(r'<td class="reference">(page-\d+)</td>', answer.text)
            found = re.search(r'<a class="next" href="([^"]+)"', answer.text)
            url = html.unescape(found.group(1)) if found else None
            pages += 1
    assert pages == 2
    assert sorted(seen) == sorted(f"page-{i}" for i in range(30))
    assert len(seen) == 30
