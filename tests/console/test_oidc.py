"""Sign-in with OpenID Connect against a loopback provider the test serves: as an org and as an admin in the
browser; and refused for a wrong audience, a bad signature, a wrong nonce or state, and a person with no claims."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page
from pydantic import SecretStr

from tests.console.conftest import ConsoleServer, PageProblems
from tests.console.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider
from varsel.clock import FrozenClock
from varsel.console.config import ConsoleSettings, OidcSettings
from varsel.console.sessions import SESSION_COOKIE
from varsel.settings import Settings


@pytest.fixture
async def provider(clock: FrozenClock) -> AsyncIterator[OidcProvider]:
    # On "localhost", another site than the console on 127.0.0.1: the flow crosses sites as with a real provider.
    oidc = OidcProvider(clock, host="localhost")
    async with oidc.server:
        yield oidc


@pytest.fixture
async def oidc_console(
    settings: Settings, clock: FrozenClock, provider: OidcProvider, sqlite_url: str
) -> AsyncIterator[ConsoleServer]:
    oidc = OidcSettings(
        issuer=provider.issuer,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        org_claim="org",
        admin_claim="roles",
        admin_value="varsel-admin",
    )
    server = ConsoleServer(settings.model_copy(update={"console": ConsoleSettings(oidc=oidc)}), clock, sqlite_url)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


async def _sign_in_in_browser(page: Page, console: ConsoleServer) -> None:
    await page.goto(f"{console.url}/console/sign-in")
    await page.click("#oidc-sign-in")
    await page.click("#approve")  # at the provider
    await page.wait_for_url(f"{console.url}/console")


async def test_sign_in_as_an_org(
    oidc_console: ConsoleServer, provider: OidcProvider, page: Page, page_problems: PageProblems
) -> None:
    page_problems.allowed_hosts.add("localhost")
    await _sign_in_in_browser(page, oidc_console)
    assert (await page.text_content(".principal")) == "ttd"
    assert await page.locator("header nav a").all_text_contents() == ["Overview", "Orders", "Webhooks"]
    (session,) = [c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert session["sameSite"] == "Strict"
    assert session["httpOnly"] is True
    # The flow's cookie is gone once it has served.
    assert [c["name"] for c in await page.context.cookies()] == [SESSION_COOKIE]
    assert provider.token_errors == []


async def test_sign_in_as_an_admin(
    oidc_console: ConsoleServer, provider: OidcProvider, page: Page, page_problems: PageProblems
) -> None:
    page_problems.allowed_hosts.add("localhost")
    provider.claims = {"sub": "person-2", "email": "ops@varsel.example", "roles": ["reader", "varsel-admin"]}
    await _sign_in_in_browser(page, oidc_console)
    assert (await page.text_content(".principal")) == "admin"
    await page.click("text=Delivery reports")
    await page.wait_for_url(f"{oidc_console.url}/console/reports")


def _approve_link(authorize: httpx.Response) -> str:
    found = re.search(r'id="approve" href="([^"]+)"', authorize.text)
    assert found, authorize.text
    return html.unescape(found.group(1))


async def _sign_in_over_http(console: ConsoleServer) -> httpx.Response:
    """Follows the flow as a browser would, and answers the console's answer at the callback."""
    async with httpx.AsyncClient(follow_redirects=False, timeout=20) as http:
        start = await http.get(f"{console.url}/console/sign-in/oidc")
        assert start.status_code == 303
        authorize = await http.get(start.headers["location"])
        assert authorize.status_code == 200, authorize.text
        return await http.get(_approve_link(authorize))


async def test_the_flow_over_http_signs_in(oidc_console: ConsoleServer) -> None:
    # The baseline of the refusals below: the same flow, unaltered, signs in.
    answer = await _sign_in_over_http(oidc_console)
    assert answer.status_code == 200
    assert SESSION_COOKIE in answer.cookies


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"audience": "another-client"}, "issued for another application", id="wrong-audience"),
        pytest.param({"forge_signature": True}, "could not be verified", id="bad-signature"),
        pytest.param({"nonce": "a-nonce-of-another-sign-in"}, "nonce", id="wrong-nonce"),
        pytest.param({"state": "a-state-of-another-sign-in"}, "state does not match", id="wrong-state"),
        pytest.param(
            {"claims": {"sub": "p3", "email": "nobody@example.org"}}, "names no service owner", id="no-claims"
        ),
        pytest.param({"claims": {"sub": "p4", "roles": ["reader"], "org": ""}}, "names no service owner", id="no-org"),
    ],
)
async def test_a_sign_in_that_does_not_verify_is_refused(
    oidc_console: ConsoleServer, provider: OidcProvider, change: dict[str, Any], message: str
) -> None:
    for name, value in change.items():
        setattr(provider, name, value)
    answer = await _sign_in_over_http(oidc_console)
    assert answer.status_code == 403
    assert message in answer.text
    assert SESSION_COOKIE not in answer.cookies


async def test_a_callback_without_the_flow_cookie_is_refused(oidc_console: ConsoleServer) -> None:
    async with httpx.AsyncClient(follow_redirects=False, timeout=20) as http:
        start = await http.get(f"{oidc_console.url}/console/sign-in/oidc")
        authorize = await http.get(start.headers["location"])
        http.cookies.clear()  # another browser: it did not start this sign-in
        answer = await http.get(_approve_link(authorize))
    assert answer.status_code == 403
    assert SESSION_COOKIE not in answer.cookies


async def test_a_provider_naming_another_issuer_is_not_trusted(
    oidc_console: ConsoleServer, provider: OidcProvider
) -> None:
    provider.discovery_issuer = "https://issuer.example.org"
    async with httpx.AsyncClient(follow_redirects=False, timeout=20) as http:
        start = await http.get(f"{oidc_console.url}/console/sign-in/oidc")
    assert start.status_code == 500
    assert start.headers["content-type"].startswith("text/html")
    assert "names another issuer" in start.text
    assert "location" not in start.headers


async def test_an_unreachable_provider_gets_a_page(oidc_console: ConsoleServer, provider: OidcProvider) -> None:
    await asyncio.to_thread(provider.server.stop)
    async with httpx.AsyncClient(follow_redirects=False, timeout=20) as http:
        start = await http.get(f"{oidc_console.url}/console/sign-in/oidc")
    assert start.status_code == 500
    assert "cannot be reached" in start.text


async def test_keys_are_read_again_when_the_provider_rotates_them(
    oidc_console: ConsoleServer, provider: OidcProvider
) -> None:
    assert (await _sign_in_over_http(oidc_console)).status_code == 200
    assert (await _sign_in_over_http(oidc_console)).status_code == 200
    assert provider.jwks_fetches == 1  # cached
    provider.rotate_key("test-key-2")
    assert (await _sign_in_over_http(oidc_console)).status_code == 200
    assert provider.jwks_fetches == 2
    # A bad signature under a known key id is refused without fetching the keys again for it.
    provider.forge_signature = True
    provider.forger_key = provider.forger_key.import_key(
        provider.forger_key.as_dict(private=True) | {"kid": "test-key-2"}
    )
    assert (await _sign_in_over_http(oidc_console)).status_code == 403
    assert provider.jwks_fetches == 2
