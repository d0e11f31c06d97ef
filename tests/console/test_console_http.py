"""The console as served by the API app (over ASGI, on SQLite and PostgreSQL): security headers, static assets from
the package, kept out of the OpenAPI document, error pages instead of JSON problems, the session key kept across
restarts, Secure cookies behind an https public URL, and the reports page's keyset paging."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from tests.conftest import NOW
from tests.console.reports_data import report_row, store_reports
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.console.principal import Principal
from varsel.console.sessions import SESSION_COOKIE
from varsel.console.web import CONTENT_SECURITY_POLICY
from varsel.db.engine import Database
from varsel.settings import Settings

STATIC = Path(__file__).resolve().parents[2] / "src" / "varsel" / "console" / "static"


@pytest.fixture
def app(varsel: Varsel) -> FastAPI:
    return create_app(varsel)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test") as client:
        yield client


def _sign_in(app: FastAPI, http: httpx.AsyncClient, principal: Principal) -> str:
    codec = app.state.console.sessions
    session = codec.new(principal)
    http.cookies.set(SESSION_COOKIE, codec.dumps(session))
    return str(session.csrf)


async def test_pages_carry_the_security_headers(app: FastAPI, http: httpx.AsyncClient) -> None:
    _sign_in(app, http, Principal(org=None, admin=True))
    for path in ["/console", "/console/reports", "/console/sign-in", "/console/no-such-page"]:
        page = await http.get(path)
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-store"
        if page.status_code != 303:  # /console/sign-in sends a signed-in browser on to the console
            assert page.headers["content-type"].startswith("text/html")
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    # The API's own answers are left as they were.
    assert "content-security-policy" not in (await http.get("/health/live")).headers


async def test_no_page_has_an_inline_script_or_style(app: FastAPI, http: httpx.AsyncClient) -> None:
    signed_out = (await http.get("/console/sign-in")).text
    _sign_in(app, http, Principal(org=None, admin=True))
    for path in ["/console", "/console/reports", "/console/nothing"]:
        text = (await http.get(path)).text + signed_out
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text) == [], path
        assert " style=" not in text
        assert "<style" not in text
        assert re.findall(r"\son[a-z]+=", text) == []
        assert "http://" not in text.replace("http://varsel.test", "")  # nothing from elsewhere
        assert "https://" not in text


async def test_static_assets_are_served_from_the_package(http: httpx.AsyncClient) -> None:
    for name, kind in [
        ("htmx.min.js", "javascript"),
        ("uplot.iife.min.js", "javascript"),
        ("uplot.min.css", "text/css"),
        ("console.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        asset = await http.get(f"/console/static/{name}?v=1")
        assert asset.status_code == 200, name
        assert kind in asset.headers["content-type"]
        assert asset.content == (STATIC / name).read_bytes()
        assert asset.headers["x-content-type-options"] == "nosniff"
    # The vendored libraries keep their licences beside them.
    assert "Zero-Clause BSD" in (STATIC / "htmx.LICENSE").read_text()
    assert "MIT License" in (STATIC / "uplot.LICENSE").read_text()
    assert (await http.get("/console/static/../templates/base.html")).status_code == 404


async def test_console_routes_are_not_in_the_openapi_document(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert [path for path in paths if path.startswith("/console")] == []


async def test_console_errors_are_pages(app: FastAPI, http: httpx.AsyncClient) -> None:
    unknown = await http.get("/console/nothing/here")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("text/html")
    assert (await http.get("/console")).headers["location"] == "/console/sign-in"
    # htmx asking without a session is told where to go instead of swapping a redirect's page in.
    fragment = await http.post("/console/reports/retry", headers={"HX-Request": "true"})
    assert fragment.status_code == 403
    assert fragment.headers["hx-redirect"] == "/console/sign-in"


async def test_the_session_key_is_kept_in_the_data_folder(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    # No key configured: one is made once and kept, so a restart keeps everyone signed in.
    first = build(settings, clock=clock, database=database)
    cookie = create_app(first).state.console.sessions.dumps(
        create_app(first).state.console.sessions.new(Principal(org="ttd", admin=False))
    )
    key_file = settings.data_dir / "console-secret-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = build(settings, clock=clock, database=database)
    assert create_app(again).state.console.sessions.loads(cookie) is not None
    # A configured key wins, and changing it ends every session.
    configured = build(
        settings.model_copy(
            update={"console": settings.console.model_copy(update={"secret_key": SecretStr("another")})}
        ),
        clock=clock,
        database=database,
    )
    assert create_app(configured).state.console.sessions.loads(cookie) is None
    for services in (first, again, configured):
        await services.http.aclose()


async def test_cookies_are_secure_behind_an_https_public_url(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    services = build(
        settings.model_copy(update={"public_url": "https://varsel.example.org"}), clock=clock, database=database
    )
    app = create_app(services)
    token = await app.state.console.links.create(Principal(org="ttd", admin=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test") as http:
        # Behind a proxy terminating TLS: the browser's Origin is the public URL's.
        signed_in = await http.post(f"/console/sign-in/link/{token}", headers={"Origin": "https://varsel.example.org"})
    assert signed_in.status_code == 303
    assert "secure" in signed_in.headers["set-cookie"].lower().split("; ")
    await services.http.aclose()


async def test_reports_are_paged_by_keyset(app: FastAPI, http: httpx.AsyncClient, database: Database) -> None:
    # 53 dead reports, some received at the same instant: a page is 50, the next holds the rest, none twice.
    rows = [report_row("dead", NOW - timedelta(minutes=i // 3)) for i in range(53)]
    await store_reports(database, *rows)
    _sign_in(app, http, Principal(org=None, admin=True))
    seen: list[str] = []
    path = "/console/reports"
    pages = 0
    while path:
        page = (await http.get(path)).text
        dead = page.split('<section id="dead">', 1)[1].split("</section>", 1)[0]
        seen += re.findall(r'id="report-([0-9a-f-]{36})"', dead)
        following = re.search(r'href="(/console/reports\?dead_before=[^"]+)"', dead)
        path = following.group(1) if following else ""
        pages += 1
    assert pages == 2
    assert len(seen) == len(set(seen)) == 53
    newest_first = sorted(rows, key=lambda row: (row["received"], row["id"]), reverse=True)
    assert seen == [str(row["id"]) for row in newest_first]
    assert (await http.get("/console/reports?dead_before=garbage")).status_code == 404
