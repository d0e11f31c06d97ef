"""Signing in to the console in a real browser: by one-time link, and what the browser keeps of it."""

from __future__ import annotations

from playwright.async_api import Page

from tests.console.conftest import ConsoleServer, PageProblems
from varsel.console.sessions import SESSION_COOKIE


async def test_sign_in_by_link_in_the_browser(sqlite_console: ConsoleServer, page: Page) -> None:
    link = sqlite_console.link("ttd")
    await page.goto(link)
    # Opening the link signs nobody in (a mail scanner fetching it uses nothing up): the button's POST does.
    assert not [c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE]
    await page.click("#sign-in")
    await page.wait_for_url(f"{sqlite_console.url}/console")
    assert (await page.text_content(".principal")) == "ttd"
    # An org sees the org pages in the navigation, not the admin ones.
    navigation = await page.locator("header nav a").all_text_contents()
    assert navigation == ["Overview", "Orders", "Webhooks"]
    (session,) = [c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/console"
    assert session["expires"] > 0  # not a browser-session cookie: it has a lifetime

    # Signing out forgets the session: the console then asks to sign in again.
    await page.click("text=Sign out")
    await page.wait_for_url(f"{sqlite_console.url}/console/sign-in")
    await page.goto(f"{sqlite_console.url}/console")
    assert page.url == f"{sqlite_console.url}/console/sign-in"


async def test_a_replayed_link_is_refused_in_the_browser(
    sqlite_console: ConsoleServer, page: Page, page_problems: PageProblems
) -> None:
    link = sqlite_console.link(admin=True)
    await page.goto(link)
    await page.click("#sign-in")
    await page.wait_for_url(f"{sqlite_console.url}/console")
    await page.context.clear_cookies()

    await page.goto(link)
    async with page.expect_response(link) as answer:
        await page.click("#sign-in")
    assert (await answer.value).status == 403
    assert "cannot be used" in (await page.text_content("main") or "")
    assert not [c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE]
    # Chrome reports the 403 document as a failed resource; that is the refusal this test expects.
    page_problems.errors = [e for e in page_problems.errors if "403" not in e]
