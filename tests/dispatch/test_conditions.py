"""The condition check never reaches loopback, private, link-local or metadata addresses unless allow-listed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from varsel.dispatch.conditions import ConditionChecker, ConditionResult


@pytest.fixture
def peer() -> Iterator[tuple[str, list[str]]]:
    """A loopback peer: /yes answers true; /to?url=X redirects to X."""
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(self.path)
            if self.path.startswith("/to?url="):
                self.send_response(302)
                self.send_header("Location", self.path.removeprefix("/to?url="))
                self.end_headers()
                return
            body = b'{"sendNotification": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/yes",
        "http://localhost:{port}/yes",
        "http://[::1]:{port}/yes",
        "http://10.0.0.1:{port}/yes",
        "http://192.168.1.1/yes",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]:{port}/yes",
    ],
)
async def test_internal_addresses_are_refused_without_a_request(peer: tuple[str, list[str]], url: str) -> None:
    base, calls = peer
    port = base.rsplit(":", 1)[1]
    async with httpx.AsyncClient() as client:
        answer = await ConditionChecker(client, 2.0, frozenset()).check(url.format(port=port))
    assert answer.result is ConditionResult.FAILED
    assert "not public" in answer.detail or "not a public address" in answer.detail
    assert calls == []


async def test_an_allow_listed_host_is_reached(peer: tuple[str, list[str]]) -> None:
    base, calls = peer
    async with httpx.AsyncClient() as client:
        answer = await ConditionChecker(client, 2.0, frozenset({"127.0.0.1"})).check(f"{base}/yes")
    assert answer.result is ConditionResult.SEND
    assert calls == ["/yes"]


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data", "http://localhost:1/yes"])
async def test_a_redirect_to_an_internal_address_is_refused(peer: tuple[str, list[str]], target: str) -> None:
    base, calls = peer
    async with httpx.AsyncClient() as client:
        answer = await ConditionChecker(client, 2.0, frozenset({"127.0.0.1"})).check(f"{base}/to?url={target}")
    assert answer.result is ConditionResult.FAILED
    assert calls == [f"/to?url={target}"]  # the allow-listed hop only; the internal target was never requested
