"""Fixtures for the console: the real API served by uvicorn on loopback, one-time sign-in links, and a real headless
Chromium (Debian's package, driven by Playwright) whose pages fail the test on any JavaScript error or any request
leaving 127.0.0.1.

Without /usr/bin/chromium the browser tests are skipped, unless VARSEL_REQUIRE_BROWSER is set (CI): then they fail.
Every server takes a free port and every test its own database and data folder, so they are safe under xdist.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, ConsoleMessage, Page, Playwright, Request, async_playwright

from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.console.principal import Principal
from varsel.console.sessions import SESSION_COOKIE
from varsel.db.engine import Database
from varsel.settings import Settings

CHROMIUM = Path(os.environ.get("VARSEL_CHROMIUM", "/usr/bin/chromium"))
# In CI a browser test that cannot run is a failure, not a skip (as VARSEL_REQUIRE_POSTGRES for PostgreSQL).
REQUIRE_BROWSER = os.environ.get("VARSEL_REQUIRE_BROWSER", "") not in ("", "0", "false")
# Nothing may be fetched from the network: no browser updates, sync, or field trials; no sandbox (CI runs as root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
# The README's screenshots are written by the browser tests when VARSEL_SCREENSHOTS is set (else into the test's
# temporary folder, so a test run leaves the work tree as it was).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

T = TypeVar("T")


class ConsoleServer:
    """The varsel API (console included) served by uvicorn on 127.0.0.1 and a free port, in a thread with its own
    event loop, with its own Database. Its services run on that loop: call them through `call`."""

    def __init__(self, settings: Settings, clock: FrozenClock, database_url: str) -> None:
        self.settings = settings
        self.clock = clock
        self.varsel: Varsel = build(settings, clock=clock, database=Database(database_url))
        self.app = create_app(self.varsel)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_config=None, log_level="warning", access_log=False, lifespan="on", loop="asyncio"
        )
        self._server = uvicorn.Server(config)

        def run() -> None:
            assert self._server is not None
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._server.serve(sockets=[sock]))
            except BaseException as error:
                self._failure = error
            finally:
                loop.close()
                sock.close()

        self._thread = threading.Thread(target=run, name=f"console-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError(f"the console server did not start: {self._failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the console server did not start in time")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(20)

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Runs a coroutine on the server's loop (where its database engine lives) and waits for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(20)

    def link(self, org: str | None = None, *, admin: bool = False) -> str:
        """A fresh one-time sign-in link, as `varsel console login` prints it."""
        token = self.call(self.app.state.console.links.create(Principal(org=org, admin=admin)))
        return f"{self.url}/console/sign-in/link/{token}"

    def session(self, org: str | None = None, *, admin: bool = False) -> tuple[str, str]:
        """A valid session cookie's value, as a sign-in would set it, and its CSRF token."""
        codec = self.app.state.console.sessions
        session = codec.new(Principal(org=org, admin=admin))
        return str(codec.dumps(session)), str(session.csrf)


@pytest.fixture
def serve_console(settings: Settings, clock: FrozenClock) -> Iterator[Callable[[str], ConsoleServer]]:
    """serve_console(database_url): a running console server on that database (stopped after the test)."""
    servers: list[ConsoleServer] = []

    def start(database_url: str) -> ConsoleServer:
        server = ConsoleServer(settings, clock, database_url)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def console(
    serve_console: Callable[[str], ConsoleServer], database: Database, database_url: str
) -> AsyncIterator[ConsoleServer]:
    """A console server on this test's database (SQLite and PostgreSQL)."""
    server = await asyncio.to_thread(serve_console, database_url)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    import shutil

    target = tmp_path / "console.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def sqlite_console(
    serve_console: Callable[[str], ConsoleServer], sqlite_url: str
) -> AsyncIterator[ConsoleServer]:
    """A console server on SQLite only: for the browser tests (the walls run on both databases)."""
    server = await asyncio.to_thread(serve_console, sqlite_url)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture
async def sqlite_database(sqlite_url: str) -> AsyncIterator[Database]:
    """The sqlite_console's database, seen from the test's own loop (to seed rows and read the outcome)."""
    db = Database(sqlite_url)
    yield db
    await db.dispose()


def http_client(server: ConsoleServer, cookie: str | None = None) -> httpx.AsyncClient:
    """An HTTP client for the served console, following no redirects, with a session cookie when given."""
    cookies = {SESSION_COOKIE: cookie} if cookie is not None else None
    return httpx.AsyncClient(base_url=server.url, cookies=cookies, follow_redirects=False, timeout=20)


# ---------------------------------------------------------------- the browser


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where a browser test saves its screenshots: docs/screenshots with VARSEL_SCREENSHOTS=1, else a temporary
    folder."""
    if os.environ.get("VARSEL_SCREENSHOTS", "") not in ("", "0", "false"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path


def _chromium_missing() -> str | None:
    if CHROMIUM.exists():
        return None
    return (
        f"no Chromium at {CHROMIUM}: install Debian's package "
        "(apt-get install chromium) to run the console's browser tests"
    )


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    missing = _chromium_missing()
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail(f"{missing} (VARSEL_REQUIRE_BROWSER is set, so this is a failure)")
        pytest.skip(missing)
    async with async_playwright() as driver:
        yield driver


@pytest.fixture
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield chromium
    await chromium.close()


class PageProblems:
    """What went wrong in the page: JavaScript errors, console errors, requests to anywhere but 127.0.0.1."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        # A test serving a peer under another loopback name (a sign-in provider on "localhost") adds it here.
        self.allowed_hosts = {"127.0.0.1"}

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"JavaScript error: {error}")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def on_request(self, request: Request) -> None:
        self.requests.append(request.url)
        parts = urlsplit(request.url)
        if parts.scheme not in ("data", "blob", "about") and parts.hostname not in self.allowed_hosts:
            self.errors.append(f"request leaving 127.0.0.1: {request.url}")


@pytest.fixture
async def page_problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
async def page(browser: Browser, page_problems: PageProblems) -> AsyncIterator[Page]:
    """A browser tab; the test fails on any JavaScript or console error and any request leaving 127.0.0.1."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    tab = await context.new_page()
    tab.on("pageerror", page_problems.on_page_error)
    tab.on("console", page_problems.on_console)
    tab.on("request", page_problems.on_request)
    tab.set_default_timeout(15_000)
    yield tab
    await context.close()
    assert page_problems.errors == []
