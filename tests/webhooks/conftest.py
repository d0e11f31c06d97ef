"""Fixtures for status webhooks: a receiver on loopback that verifies every delivery's signature with the
`standardwebhooks` library, a resolver the test controls (DNS is the outside world), and events written through the
outbox as every status change writes them."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks.webhooks
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.console.conftest import (  # noqa: F401 (fixtures for the console tests here)
    browser,
    console,
    page,
    page_problems,
    playwright,
    screenshots,
    serve_console,
    sqlite_console,
    sqlite_database,
    sqlite_url,
)
from varsel.app import Varsel, build
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import Settings
from varsel.webhooks.outbox import Event, fan_out

ORG = "ttd"
OTHER_ORG = "nav"
WEBHOOKS = "/notifications/api/v1/webhooks"
# The deliveries' timeout in these tests: a slow receiver takes longer than this (real time: the HTTP is real).
TIMEOUT_SECONDS = 0.5


@dataclass
class Delivery:
    """One POST the receiver got: the Standard Webhooks headers, the body, and which of its secrets verified it."""

    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    verified_by: list[int]

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A service owner's endpoint on 127.0.0.1 (allow-listed by the operator, so plain http). `mode`: "ok" (204),
    "fail" (500), "slow" (answers after the delivery's timeout), "redirect" (302) or "hold" (sets `holding` and
    answers only once `release` is set). Stopped and started again on the same port, it is "down" in between."""

    secrets: list[str] = field(default_factory=list)
    mode: str = "ok"
    deliveries: list[Delivery] = field(default_factory=list)
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def ids(self) -> list[str]:
        return [d.webhook_id for d in self.deliveries]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name: value for name, value in self.headers.items()}
                verified = []
                for index, secret in enumerate(receiver.secrets):
                    try:
                        Webhook(secret).verify(body, headers)
                    except WebhookVerificationError:
                        continue
                    verified.append(index)
                receiver.deliveries.append(
                    Delivery(
                        headers.get("webhook-id", ""),
                        headers.get("webhook-timestamp", ""),
                        headers.get("webhook-signature", ""),
                        body,
                        verified,
                    )
                )
                status = {"ok": 204, "fail": 500, "redirect": 302}.get(receiver.mode, 204)
                if receiver.mode == "slow":
                    threading.Event().wait(TIMEOUT_SECONDS * 3)
                if receiver.mode == "hold":
                    receiver.holding.set()
                    receiver.release.wait(60)
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    peer = Receiver()
    peer.start()
    yield peer
    peer.stop()


class FakeResolver:
    """DNS as the test says: host -> addresses; a host it does not know does not resolve."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"{host} does not resolve")
        return self.answers[host]


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        webhooks={"allowed_hosts": ["127.0.0.1"], "timeout_seconds": TIMEOUT_SECONDS},
    )


@pytest.fixture
async def varsel(
    settings: Settings, database: Database, clock: FrozenClock, resolver: FakeResolver
) -> AsyncIterator[Varsel]:
    services = build(settings, clock=clock, database=database, webhook_resolver=resolver)
    yield services
    await services.workers.stop()
    await services.http.aclose()


@pytest.fixture(autouse=True)
def receivers_judge_by_the_clock(clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """standardwebhooks refuses a timestamp more than 5 minutes from its own now: the receiver's now is the test's
    frozen clock, as varsel's is (the library reads datetime.now; nothing else of it is changed)."""

    class ClockTime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock.now()

    monkeypatch.setattr(standardwebhooks.webhooks, "datetime", ClockTime)


async def write_events(database: Database, clock: FrozenClock, count: int, *, creator: str = ORG,
                       kind: str = "order.completed", first: int = 0) -> int:  # fmt: skip
    """`count` events of the creator, each with its number in the payload, in one transaction as a status change
    writes them; answers how many rows fan-out wrote."""
    events = [
        Event(
            creator, kind, clock.now(), {"type": kind, "timestamp": clock.now().isoformat(), "data": {"n": first + i}}
        )
        for i in range(count)
    ]
    async with database.transaction() as conn:
        return await fan_out(conn, events)


def numbers(deliveries: list[Delivery]) -> list[int]:
    return [d.payload["data"]["n"] for d in deliveries]


def later(clock: FrozenClock, **delta: float) -> None:
    clock.advance(timedelta(**delta))
