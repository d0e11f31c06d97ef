"""Review (#17) of OpenID Connect sign-in: a provider answering something other than JSON where JSON is due (its
discovery document or its keys: an issuer URL pointing at a web page, a proxy's error page) gets the console's page
saying so, not an unhandled error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tests.console.oidc_provider import CLIENT_ID, OidcProvider
from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.console.config import ConsoleSettings, OidcSettings
from varsel.console.oidc import OidcRefused, OidcSignIn
from varsel.db.engine import Database
from varsel.settings import Settings

PAGE = "<!doctype html><title>Sign in</title><p>Welcome</p>"


class PageProvider(OidcProvider):
    """Answers a web page instead of its discovery document (or, with ``keys_page``, instead of its keys)."""

    keys_page = False

    async def _discovery(self, request: Request) -> Response:
        if self.keys_page:
            return await super()._discovery(request)
        return HTMLResponse(PAGE)

    async def _jwks(self, request: Request) -> Response:
        return HTMLResponse(PAGE)


@pytest.fixture
async def provider(clock: FrozenClock) -> AsyncIterator[PageProvider]:
    oidc = PageProvider(clock)
    async with oidc.server:
        yield oidc


async def test_a_web_page_for_a_discovery_document_gets_a_page(
    provider: PageProvider, settings: Settings, database: Database, clock: FrozenClock
) -> None:
    oidc = OidcSettings(issuer=provider.issuer, client_id=CLIENT_ID)
    services = build(
        settings.model_copy(update={"console": ConsoleSettings(oidc=oidc)}), clock=clock, database=database
    )
    transport = httpx.ASGITransport(app=create_app(services), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            start = await http.get("/console/sign-in/oidc")
    finally:
        await services.http.aclose()
    assert start.headers["content-type"].startswith("text/html"), start.text[:300]
    assert "location" not in start.headers
    assert "is not a JSON object" in start.text


async def test_a_web_page_for_the_keys_is_a_refusal(provider: PageProvider, clock: FrozenClock) -> None:
    provider.keys_page = True
    async with httpx.AsyncClient() as http:
        sign_in = OidcSignIn.configured(
            OidcSettings(issuer=provider.issuer, client_id=CLIENT_ID), http, clock, "k" * 40
        )
        assert sign_in is not None
        with pytest.raises(OidcRefused):
            await sign_in.verify("e30.e30.sig", "nonce")
