"""A loopback LINK Mobility SMS gateway: a real HTTP server on 127.0.0.1 that speaks the "Common" SMS REST API.

For tests, benchmarks and multi-process runs. It runs uvicorn in a thread of its own (with its own event loop), so
it keeps answering while the code under test blocks its loop, and it works from sync and async code alike::

    async with LinkMobilityPeer() as peer:                  # or: with LinkMobilityPeer() as peer:
        provider = LinkMobilitySmsProvider(peer.settings(), clock)
        await provider.send(message)
        assert peer.counts_by_ref() == {str(message.notification_id): 1}

What it checks, like the gateway (see the docstring of varsel.providers.linkmobility for the formats):

* ``POST /sms/send`` only (anything else is 404), HTTP basic auth with ``username``/``password`` (else 401,
  resultCode 106100).
* A JSON object with platformId and platformPartnerId equal to the configured ones (else 400, 106200/106201),
  a source valid for its sourceTON (ALPHANUMERIC up to 11 characters, MSISDN "+digits", SHORTNUMBER up to 14
  digits; else 400, 2000), an MSISDN destination "+" and 7-15 digits (else 400, 2106 "Invalid destination"),
  string userData/refId, integer relativeValidityTime >= 0, a list of gate ids, and gates whenever
  useDeliveryReport is true, which it is by default (else 400, 106300). Error bodies are
  ``{"resultCode": int, "description": str}``.
* Accepted: 200 ``{"messageId", "resultCode": 1005, "description": "Queued"}``, or 204 without a body unless the
  request says ``"ignoreResponse": false`` (the documented default is true).

What it records: ``requests`` (every request that reached the app, with the status it got) and ``messages``
(every accepted message, with its body and a fresh messageId); ``counts_by_ref()`` counts accepted messages by
refId, so a test can assert each notification arrived exactly once.

Behaviours, switchable at any time from any thread:

* ``ok()``: back to normal (clears everything below).
* ``rate_limit(retry_after, times=None)``: answer 429 with that Retry-After (seconds or an HTTP date), for the
  next ``times`` requests or until ``ok()``.
* ``fail_next(n, status=503)``: answer ``status`` to the next n requests, then carry on.
* ``respond_next(n, status, body, content_type, **headers)``: answer the next n requests with exactly that.
* ``reject_destination(number, result_code=2106)``: answer 400 "Invalid destination" for that number.
* ``delay`` (seconds, attribute): wait this long before answering each request (timeouts, latency benchmarks).
  Stopping the peer cuts pending delays short, so shutdown stays quick.

Delivery reports (optional): given ``report_url``, the peer posts a JSON delivery report there for each accepted
message that asked for one, with basic auth ``report_auth``; ``report_result(number, code)`` sets the resultCode
for a destination (default ``report_result_code``, 1001 delivered). ``reports`` records what was posted and the
answer. ``delivery_report()`` builds the same body for tests that post reports themselves.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from varsel.providers.linkmobility import LinkMobilitySettings

_TONS = {"ALPHANUMERIC", "SHORTNUMBER", "MSISDN"}
_MSISDN = re.compile(r"\+\d{7,15}")
_SHORT_NUMBER = re.compile(r"\d{1,14}")


class LoopbackServer:
    """Serves an ASGI app with uvicorn on 127.0.0.1 and a free port, in a thread with its own event loop."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        # Set when stopping; whatever waits inside the server loop can watch it to finish early.
        self.stopping: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the server is not running"
        return self._loop

    def start(self, timeout: float = 10.0) -> None:
        # Binding here, before the thread starts, fixes the port without the race of asking for a free one. A server
        # started again takes the port it had, so its clients find it back: a provider that was down comes back.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,  # leave the test process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"loopback-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError(f"the loopback server did not start: {self._failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not start in time")
            time.sleep(0.005)

    def _run(self) -> None:
        assert self._server is not None
        assert self._socket is not None
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.stopping = asyncio.Event()
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException as error:  # reported to start(), which would otherwise wait for nothing
            self._failure = error
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        loop, stopping = self._loop, self.stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the loopback server did not stop in time")
        if self._socket is not None:
            self._socket.close()
        self._server = None
        self._thread = None

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LoopbackServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


@dataclass(frozen=True)
class ReceivedRequest:
    """One request that reached the peer, and the HTTP status it was answered with."""

    path: str
    status: int
    body: Any  # the parsed JSON, or None when the body was not JSON


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the peer accepted."""

    message_id: str
    body: dict[str, Any]
    username: str
    received_at: float = field(default_factory=time.monotonic)

    @property
    def ref_id(self) -> str | None:
        value = self.body.get("refId")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class PostedReport:
    body: dict[str, Any]
    status: int | None  # None when the post itself failed
    error: str | None = None


def delivery_report(
    ref_id: str | None,
    message_id: str,
    result_code: int = 1001,
    *,
    timestamp: datetime | None = None,
    operator: str | None = "no.telenor",
) -> dict[str, Any]:
    """A delivery report body as a LINK Mobility gate posts it (document section 0.9)."""
    moment = (timestamp or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "refId": ref_id,
        "id": message_id,
        "operator": operator,
        "sentTimestamp": moment,
        "timestamp": moment,
        "resultCode": result_code,
        "operatorResultCode": None,
        "segments": 1,
        "gateCustomParameters": {},
        "customParameters": {},
    }


class LinkMobilityPeer:
    def __init__(
        self,
        *,
        username: str = "varsel",
        password: str = "hemmelig",
        platform_id: str = "COMMON_API",
        platform_partner_id: str = "4321",
        gates: tuple[str, ...] = ("GATE1",),
        report_url: str | None = None,
        report_auth: tuple[str, str] | None = None,
        report_result_code: int = 1001,
    ) -> None:
        self.username = username
        self.password = password
        self.platform_id = platform_id
        self.platform_partner_id = platform_partner_id
        self.gates = gates
        self.report_url = report_url
        self.report_auth = report_auth
        self.report_result_code = report_result_code

        self.requests: list[ReceivedRequest] = []
        self.messages: list[ReceivedMessage] = []
        self.reports: list[PostedReport] = []
        self.delay: float = 0.0

        self._lock = threading.Lock()
        self._fail_next = 0
        self._fail_status = 503
        self._canned: list[tuple[int, bytes, dict[str, str]]] = []
        self._rate_limit_retry_after: str | None = None
        self._rate_limit_times: int | None = None
        self._rejected: dict[str, int] = {}
        self._report_codes: dict[str, int] = {}
        self._report_tasks: set[asyncio.Task[None]] = set()
        self._report_client: httpx.AsyncClient | None = None

        app = Starlette(routes=[Route("/sms/send", self._send, methods=["POST"])])
        self._server = LoopbackServer(app)

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        if self._report_tasks or self._report_client is not None:
            # The report posts and their client live on the server's loop: end them there, before it stops.
            asyncio.run_coroutine_threadsafe(self._stop_reports(), self._server.loop).result(timeout=10)
        self._server.stop()

    def __enter__(self) -> LinkMobilityPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LinkMobilityPeer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def settings(self, **overrides: Any) -> LinkMobilitySettings:
        """Settings that make varsel's adapter talk to this peer; keyword arguments override fields."""
        values: dict[str, Any] = {
            "base_url": self.url,
            "username": self.username,
            "password": SecretStr(self.password),
            "platform_id": self.platform_id,
            "platform_partner_id": self.platform_partner_id,
            "delivery_report_gate": self.gates[0] if self.gates else None,
        }
        values.update(overrides)
        return LinkMobilitySettings(**values)

    # -- behaviours ------------------------------------------------------------------------------------------

    def ok(self) -> None:
        with self._lock:
            self._fail_next = 0
            self._canned = []
            self._rate_limit_retry_after = None
            self._rate_limit_times = None
            self._rejected.clear()
            self.delay = 0.0

    def rate_limit(self, retry_after: int | float | str = 1, times: int | None = None) -> None:
        with self._lock:
            self._rate_limit_retry_after = str(retry_after)
            self._rate_limit_times = times

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail_next = n
            self._fail_status = status

    def respond_next(
        self, n: int, status: int = 200, body: bytes = b"", content_type: str = "text/plain", **headers: str
    ) -> None:
        """Answer the next n requests with exactly this, whatever they are (garbled answers, odd statuses)."""
        with self._lock:
            self._canned = [(status, body, {"content-type": content_type, **headers})] * n

    def reject_destination(self, number: str, result_code: int = 2106) -> None:
        with self._lock:
            self._rejected[number] = result_code

    def report_result(self, number: str, result_code: int) -> None:
        with self._lock:
            self._report_codes[number] = result_code

    # -- what arrived ----------------------------------------------------------------------------------------

    def counts_by_ref(self) -> Counter[str | None]:
        with self._lock:
            return Counter(message.ref_id for message in self.messages)

    def statuses(self) -> list[int]:
        with self._lock:
            return [request.status for request in self.requests]

    # -- the gateway -----------------------------------------------------------------------------------------

    async def _send(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        response = await self._answer(request, body)
        with self._lock:
            self.requests.append(ReceivedRequest(path=request.url.path, status=response.status_code, body=body))
        return response

    async def _answer(self, request: Request, body: Any) -> Response:
        if self.delay > 0:
            stopping = self._server.stopping
            assert stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.delay)
        with self._lock:
            if self._canned:
                status, content, headers = self._canned.pop(0)
                return Response(content, status_code=status, headers=headers)
            if self._fail_next > 0:
                self._fail_next -= 1
                return _error(self._fail_status, 106000, "Injected failure")
            if self._rate_limit_retry_after is not None:
                retry_after = self._rate_limit_retry_after
                if self._rate_limit_times is not None:
                    self._rate_limit_times -= 1
                    if self._rate_limit_times <= 0:
                        self._rate_limit_retry_after = None
                        self._rate_limit_times = None
                return _error(429, 106000, "Too many requests", headers={"Retry-After": retry_after})

        username = self._authenticated(request)
        if username is None:
            return _error(401, 106100, "Invalid authentication. Please check your username and password.")
        if not isinstance(body, dict):
            return _error(400, 106000, "The request body must be a JSON object")
        problem = self._invalid(body)
        if problem is not None:
            return _error(400, *problem)
        with self._lock:
            rejected = self._rejected.get(body["destination"])
        if rejected is not None:
            return _error(400, rejected, f"Invalid destination {body['destination']}")

        message = ReceivedMessage(message_id=secrets.token_urlsafe(18), body=body, username=username)
        with self._lock:
            self.messages.append(message)
        if self.report_url is not None and body.get("useDeliveryReport", True):
            task = asyncio.create_task(self._post_report(message))
            self._report_tasks.add(task)
            task.add_done_callback(self._report_tasks.discard)
        if body.get("ignoreResponse", True) is not False:
            return Response(status_code=204)
        return JSONResponse({"messageId": message.message_id, "resultCode": 1005, "description": "Queued"})

    def _authenticated(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if secrets.compare_digest(username, self.username) and secrets.compare_digest(password, self.password):
            return username
        return None

    def _invalid(self, body: dict[str, Any]) -> tuple[int, str] | None:
        if body.get("platformId") != self.platform_id:
            return 106200, "Invalid or missing platformId. Please check your platformId."
        if body.get("platformPartnerId") != self.platform_partner_id:
            return 106201, "Invalid or missing platformPartnerId. Please check your platformPartnerId."
        source, source_ton = body.get("source"), body.get("sourceTON", "ALPHANUMERIC")
        if source_ton not in _TONS:
            return 2000, f"Invalid sourceTON {source_ton!r}"
        if not isinstance(source, str) or not _valid_address(source, source_ton):
            return 2000, f"Invalid source {source!r} for sourceTON {source_ton}"
        destination, destination_ton = body.get("destination"), body.get("destinationTON", "MSISDN")
        if destination_ton != "MSISDN" or not isinstance(destination, str) or not _MSISDN.fullmatch(destination):
            return 2106, f"Invalid destination {destination!r}"
        for name in ("userData", "refId"):
            if name in body and not isinstance(body[name], str):
                return 106000, f"{name} must be a string"
        validity = body.get("relativeValidityTime")
        if validity is not None and (not isinstance(validity, int) or isinstance(validity, bool) or validity < 0):
            return 106000, "relativeValidityTime must be a non-negative integer (milliseconds)"
        use_report = body.get("useDeliveryReport", True)
        if not isinstance(use_report, bool):
            return 106000, "useDeliveryReport must be a boolean"
        gates = body.get("deliveryReportGates", [])
        if not isinstance(gates, list) or not all(isinstance(gate, str) for gate in gates):
            return 106000, "deliveryReportGates must be a list of gate ids"
        if use_report and not gates:
            return 106300, "No gates available: give deliveryReportGates or set useDeliveryReport to false"
        unknown = [gate for gate in gates if gate not in self.gates]
        if unknown:
            return 106301, f"Specified gate unavailable: {unknown[0]}. Please check your gateId."
        return None

    async def _post_report(self, message: ReceivedMessage) -> None:
        assert self.report_url is not None
        if self._report_client is None:
            self._report_client = httpx.AsyncClient(timeout=10)
        with self._lock:
            code = self._report_codes.get(message.body["destination"], self.report_result_code)
        report = delivery_report(message.ref_id, message.message_id, code)
        auth = httpx.BasicAuth(*self.report_auth) if self.report_auth is not None else httpx.USE_CLIENT_DEFAULT
        try:
            answer = await self._report_client.post(self.report_url, json=report, auth=auth)
        except httpx.HTTPError as error:
            posted = PostedReport(report, None, repr(error))
        else:
            posted = PostedReport(report, answer.status_code)
        with self._lock:
            self.reports.append(posted)

    async def _stop_reports(self) -> None:
        for task in list(self._report_tasks):
            task.cancel()
        await asyncio.gather(*self._report_tasks, return_exceptions=True)
        if self._report_client is not None:
            await self._report_client.aclose()
            self._report_client = None


def _valid_address(value: str, ton: str) -> bool:
    if ton == "MSISDN":
        return bool(_MSISDN.fullmatch(value))
    if ton == "SHORTNUMBER":
        return bool(_SHORT_NUMBER.fullmatch(value))
    return 1 <= len(value) <= 11


def _error(status: int, code: int, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"resultCode": code, "description": description}, status_code=status, headers=headers)
