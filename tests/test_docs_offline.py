"""The API's own pages work offline (#20, item 4): /docs and /redoc load their scripts and styles from the package,
not from a CDN, and / sends a person to /docs. Served by a real `varsel serve` on loopback; the browser test opens
the pages in headless Chromium that can reach nothing but 127.0.0.1."""

from __future__ import annotations

import fnmatch
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, REQUIRE_BROWSER, PageProblems

VARSEL = str(Path(sys.executable).parent / "varsel")
PAGES = ["/docs", "/redoc"]
# What each kind of asset must be served as (a script served as text/plain is refused under nosniff).
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running `varsel serve` (SQLite in its own data folder) on a free loopback port."""
    data = tmp_path_factory.mktemp("docs") / "data"
    port = _free_port()
    env = {**os.environ, "VARSEL_DATA_DIR": str(data)}
    env.pop("VARSEL_DATABASE_URL", None)
    process = subprocess.Popen(
        [VARSEL, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/health/live", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                process.kill()
                pytest.fail(f"varsel serve did not start:\n{output}")
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()


class _References(HTMLParser):
    """Every URL a page makes the browser fetch by itself: script src, link href (stylesheets, icons), img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "iframe": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def _references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


def test_root_sends_a_person_to_the_api_pages(base: str) -> None:
    answer = httpx.get(f"{base}/", follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["location"] == "/docs"
    page = httpx.get(f"{base}/", follow_redirects=True)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in page.text


@pytest.mark.parametrize("path", PAGES)
def test_page_references_only_its_own_assets_and_each_is_served(base: str, path: str) -> None:
    page = httpx.get(f"{base}{path}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = _references(page.text)
    assert len(urls) >= 2, urls  # a script and the icon at least
    for url in urls:
        # Same origin: a path on this server, never another host (nor a scheme-relative //host/…).
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = httpx.get(urljoin(f"{base}{path}", url))
        assert asset.status_code == 200, url
        suffix = Path(urlsplit(url).path).suffix
        assert CONTENT_TYPES[suffix] in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 0
    # Nor anything fetched from elsewhere by other means (ReDoc's Google Fonts are an @import in a <link>).
    for outside in ("cdn.jsdelivr.net", "fonts.googleapis.com", "unpkg.com", "fastapi.tiangolo.com"):
        assert outside not in page.text


@pytest.mark.parametrize("path", PAGES)
def test_each_asset_is_in_the_package_data(base: str, path: str) -> None:
    """An installed varsel (a wheel, not this checkout) has the assets only if package-data names them."""
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["varsel"]
    for url in _references(httpx.get(f"{base}{path}").text):
        file = urlsplit(url).path.removeprefix("/docs/assets/")
        assert any(fnmatch.fnmatch(f"api/static/{file}", pattern) for pattern in globs), (file, globs)


def test_the_openapi_document_the_pages_read_is_served(base: str) -> None:
    answer = httpx.get(f"{base}/openapi.json")
    assert answer.status_code == 200
    assert "/notifications/api/v1/orders" in answer.json()["paths"]


# ---------------------------------------------------------------- the browser

# Chromium resolves no name at all but loopback's: nothing but 127.0.0.1 is reachable, whatever a page asks for.
OFFLINE_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        missing = f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(f"{missing} (VARSEL_REQUIRE_BROWSER is set, so this is a failure)")
        pytest.skip(missing)
    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=OFFLINE_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[tuple[Page, PageProblems]]:
    problems = PageProblems()
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    tab = await context.new_page()
    tab.on("pageerror", problems.on_page_error)
    tab.on("console", problems.on_console)
    tab.on("request", problems.on_request)
    tab.set_default_timeout(15_000)
    yield tab, problems
    await context.close()


async def test_swagger_ui_lists_the_operations_offline(base: str, page: tuple[Page, PageProblems]) -> None:
    tab, problems = page
    await tab.goto(f"{base}/")  # / leads here
    assert urlsplit(tab.url).path == "/docs"
    # Swagger UI renders one block per operation once its script has run and read /openapi.json.
    operations = tab.locator(".opblock")
    await operations.first.wait_for()
    assert await operations.count() > 10
    listed = await tab.locator(".opblock-summary-path").all_inner_texts()
    assert any(text.replace("\u200b", "") == "/notifications/api/v1/orders" for text in listed), listed
    assert problems.errors == []
    assert all(urlsplit(url).hostname == "127.0.0.1" for url in problems.requests if url.startswith("http"))


async def test_redoc_lists_the_operations_offline(base: str, page: tuple[Page, PageProblems]) -> None:
    tab, problems = page
    await tab.goto(f"{base}/redoc")
    # ReDoc renders each operation as a heading in the page and an entry in its side menu.
    heading = tab.locator("h2", has_text="Order notifications on any channel")
    await heading.first.wait_for()
    assert await tab.locator("[role=menuitem], .menu-content li").count() > 10
    assert problems.errors == []
    assert all(urlsplit(url).hostname == "127.0.0.1" for url in problems.requests if url.startswith("http"))
