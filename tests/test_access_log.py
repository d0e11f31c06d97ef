"""The access log (#20, item 6): off by default; VARSEL_ACCESS_LOG=true writes one logfmt line per request with its
method, path, status and latency, never a secret from the query string or the console's sign-in link. And the start
of a long-running command is quiet at the default level: Alembic's lines are below it, one line says what migrated."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from varsel.access_log import logfmt_value, logged_path
from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import Settings

VARSEL = str(Path(sys.executable).parent / "varsel")
LINE = re.compile(r"method=(?P<method>\S+) path=(?P<path>\S+) status=(?P<status>\d+) duration_ms=(?P<ms>\d+\.\d)")
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _client(settings: Settings, database: Database, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    services = build(settings, clock=clock, database=database)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http
    await services.http.aclose()


@pytest.fixture
async def logged(tmp_path: Path, database: Database, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(Settings(data_dir=tmp_path / "var", access_log=True), database, clock):
        yield http


@pytest.fixture
async def unlogged(tmp_path: Path, database: Database, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(Settings(data_dir=tmp_path / "var"), database, clock):
        yield http


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "varsel.access"]


@SQLITE
async def test_each_request_is_one_logfmt_line_with_method_path_status_and_latency(
    logged: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="varsel.access")
    assert (await logged.get("/health/live")).status_code == 200
    assert (await logged.post("/notifications/api/v1/orders", json={})).status_code == 401
    assert (await logged.get("/docs/assets/swagger-ui.css")).status_code == 200
    lines = _lines(caplog)
    assert len(lines) == 3, lines
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    assert [(m["method"], m["path"], m["status"]) for m in parsed if m] == [
        ("GET", "/health/live", "200"),
        ("POST", "/notifications/api/v1/orders", "401"),
        ("GET", "/docs/assets/swagger-ui.css", "200"),
    ]
    record = next(r for r in caplog.records if r.name == "varsel.access")
    assert record.levelno == logging.INFO


@SQLITE
async def test_the_access_log_is_off_by_default(unlogged: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await unlogged.get("/health/live")).status_code == 200
    assert _lines(caplog) == []
    assert Settings().access_log is False


@SQLITE
async def test_no_secret_reaches_the_access_log(logged: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="varsel.access")
    secret = "s3cr3t-Access-Key-value"
    # The ACS webhook's access key travels in the query; the console's sign-in token in the path.
    await logged.post(f"/notifications/api/v1/reports/email/acs?accesskey={secret}", json=[])
    await logged.get(f"/console/sign-in/link/{secret}")
    await logged.post(f"/Console/Sign-In/Link/{secret}/")
    await logged.get(f"/console/orders?q={secret}")
    lines = _lines(caplog)
    assert len(lines) == 4, lines
    assert all(secret not in line for line in lines), lines
    assert all(secret not in record.getMessage() and secret not in str(record.args) for record in caplog.records)
    assert "path=/notifications/api/v1/reports/email/acs " in lines[0]
    assert "path=/console/sign-in/link/… " in lines[1]
    assert "path=/Console/Sign-In/Link/…/ " in lines[2]  # as sent: before the routes' spelling is made lowercase
    assert "path=/console/orders " in lines[3]


@SQLITE
async def test_a_request_refused_before_the_routes_is_logged_too(
    tmp_path: Path, database: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="varsel.access")
    settings = Settings(data_dir=tmp_path / "var", access_log=True, trusted_hosts=["127.0.0.1"])
    async for http in _client(settings, database, clock):
        refused = await http.get("http://evil.example/notifications/api/v1/orders/x")
    assert refused.status_code == 400  # TrustedHostMiddleware's: no route saw it
    assert _lines(caplog)[-1].startswith("method=GET path=/notifications/api/v1/orders/x status=400 ")


def test_logfmt_values_are_quoted_when_they_must_be() -> None:
    assert logfmt_value("/a/b") == "/a/b"
    assert logfmt_value("") == '""'
    assert logfmt_value('a b"c') == '"a b\\"c"'
    assert logfmt_value("a\nb") == '"a\\x0ab"'
    assert logged_path(b"/x?token=1") == "/x"


# ---------------------------------------------------------------- as a user runs it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, **environment: str) -> str:
    """Runs `varsel serve` until one request is answered; answers all it wrote."""
    port = _free_port()
    env = {**os.environ, "VARSEL_DATA_DIR": str(tmp_path / "data"), **environment}
    env.pop("VARSEL_DATABASE_URL", None)
    written = tmp_path / "output.txt"
    # Into a file, not a pipe: at debug the start writes more than a pipe holds, and nobody reads it meanwhile.
    with written.open("w") as sink:
        process = subprocess.Popen([VARSEL, "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health/live?probe=1", timeout=1)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, written.read_text()
                    assert time.monotonic() < deadline, written.read_text()
                    time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
    return written.read_text()


def test_varsel_serve_writes_the_access_log_when_asked_and_starts_quietly(tmp_path: Path) -> None:
    output = _serve(tmp_path, VARSEL_ACCESS_LOG="true")
    line = r"INFO varsel\.access: method=GET path=/health/live status=200 duration_ms=\d+\.\d"
    assert re.search(line, output), output
    assert "probe=1" not in output
    # Alembic's dozen lines are below the default level; one line says what the migrations did.
    assert "alembic" not in output, output
    assert "INFO varsel.db.migrate: database schema migrated from empty to " in output


def test_varsel_serve_shows_alembic_at_debug_and_no_access_log_by_default(tmp_path: Path) -> None:
    output = _serve(tmp_path, VARSEL_LOG_LEVEL="debug")
    assert "alembic.runtime.migration: Running upgrade" in output
    assert "varsel.access" not in output
