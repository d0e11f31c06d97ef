"""The console's Webhooks page over HTTP (both databases): an owner sees its own subscriptions, their state and
delivery log, and enables a disabled one again; another owner's is invisible and cannot be enabled; an admin sees
all and enables none. And in a real browser (SQLite): the owner's button."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from playwright.async_api import Page

from tests.console.conftest import ConsoleServer, PageProblems, http_client
from tests.webhooks.conftest import OTHER_ORG, Receiver, write_events
from varsel.db.engine import Database
from varsel.webhooks.repository import Subscription
from varsel.webhooks.service import SubscriptionChange


def _subscribe(console: ConsoleServer, org: str, url: str, *, disabled: bool = False) -> Subscription:
    service = console.varsel.webhooks
    made = console.call(service.create(org, url, ["order.completed"]))
    if disabled:
        made = console.call(service.change(org, made.id, SubscriptionChange(enabled=False)))
    return made


async def test_an_owner_sees_its_own_subscriptions_and_enables_them_again(
    console: ConsoleServer, database: Database, receiver: Receiver
) -> None:
    ours = await asyncio.to_thread(_subscribe, console, "ttd", receiver.url, disabled=True)
    theirs = await asyncio.to_thread(_subscribe, console, OTHER_ORG, receiver.url + "/theirs", disabled=True)
    await write_events(database, console.clock, 1)
    # A delivery, for the log: enabled for a moment and delivered to.
    receiver.secrets.append(ours.secret)
    console.call(console.varsel.webhooks.enable("ttd", ours.id))
    delivery = console.varsel.workers.webhooks
    assert delivery is not None
    assert console.call(delivery.deliver_due()) == 1
    console.call(console.varsel.webhooks.change("ttd", ours.id, SubscriptionChange(enabled=False)))

    cookie, csrf = console.session("ttd")
    async with http_client(console, cookie) as http:
        page = await http.get("/console/webhooks")
        assert page.status_code == 200
        assert str(ours.id) in page.text
        assert str(theirs.id) not in page.text
        assert "Disabled since" in page.text
        assert "Disabled by the service owner." in page.text
        assert receiver.deliveries[0].webhook_id in page.text  # the delivery log
        assert f'action="/console/webhooks/{ours.id}/enable"' in page.text

        # Another owner's: not found, and left disabled.
        refused = await http.post(f"/console/webhooks/{theirs.id}/enable", data={"csrf": csrf})
        assert refused.status_code == 404
        assert (await http.post("/console/webhooks/not-an-id/enable", data={"csrf": csrf})).status_code == 404
        # Without the session's token: refused.
        assert (await http.post(f"/console/webhooks/{ours.id}/enable", data={"csrf": "x"})).status_code == 403
        assert not console.call(console.varsel.webhooks.get("ttd", ours.id)).enabled

        enabled = await http.post(f"/console/webhooks/{ours.id}/enable", data={"csrf": csrf})
        assert enabled.status_code == 303
        assert enabled.headers["location"] == "/console/webhooks?done=enabled"
    assert console.call(console.varsel.webhooks.get("ttd", ours.id)).enabled
    assert not console.call(console.varsel.webhooks.get(OTHER_ORG, theirs.id)).enabled

    cookie, csrf = console.session(admin=True)
    async with http_client(console, cookie) as http:
        page = await http.get("/console/webhooks")
        assert str(ours.id) in page.text
        assert str(theirs.id) in page.text
        assert "/enable" not in page.text  # the owner's action, not the admin's
        assert (await http.post(f"/console/webhooks/{theirs.id}/enable", data={"csrf": csrf})).status_code == 403


async def test_the_owner_enables_a_disabled_endpoint_in_the_browser(
    sqlite_console: ConsoleServer,
    sqlite_database: Database,
    receiver: Receiver,
    page: Page,
    page_problems: PageProblems,
    screenshots: Path,
) -> None:
    console = sqlite_console
    made = await asyncio.to_thread(_subscribe, console, "ttd", receiver.url)
    receiver.secrets.append(made.secret)
    delivery = console.varsel.workers.webhooks
    assert delivery is not None
    # A delivery, then a failure, then the owner disables it: the page shows the log and both states.
    await write_events(sqlite_database, console.clock, 1)
    assert console.call(delivery.deliver_due()) == 1
    receiver.mode = "fail"
    console.clock.advance(timedelta(minutes=3))
    await write_events(sqlite_database, console.clock, 1, first=1)
    assert console.call(delivery.deliver_due()) == 1
    console.call(console.varsel.webhooks.change("ttd", made.id, SubscriptionChange(enabled=False)))

    await page.goto(console.link("ttd"))
    await page.click("#sign-in")
    await page.wait_for_url(f"{console.url}/console")
    await page.click("header nav >> text=Webhooks")
    await page.wait_for_url(f"{console.url}/console/webhooks")
    section = page.locator(f"#webhook-{made.id}")
    state = await section.locator(".state").text_content() or ""
    assert "Disabled since 2026-03-02 10:03:00 UTC: Disabled by the service owner." in state
    assert "Failing since 2026-03-02 10:03:00 UTC" in state
    rows = section.locator("table.attempts tbody tr")
    assert await rows.count() == 2
    assert "HTTP 500." in (await rows.nth(0).text_content() or "")  # newest first
    await page.screenshot(path=screenshots / "webhooks.png", full_page=True)
    receiver.mode = "ok"
    await section.locator("button.enable").click()
    await page.wait_for_url(f"{console.url}/console/webhooks?done=enabled")
    assert "Enabled" in (await page.locator(f"#webhook-{made.id} .state").text_content() or "")
    assert await page.locator(f"#webhook-{made.id} button.enable").count() == 0
    assert "enabled again" in (await page.text_content(".notice") or "")
    assert console.call(console.varsel.webhooks.get("ttd", made.id)).enabled
