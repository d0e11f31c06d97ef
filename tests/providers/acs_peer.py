"""A loopback Azure Communication Services email endpoint, for tests, benchmarks and multi-process runs.

    async with AcsPeer() as peer:                     # or AcsPeer(access_key="<base64>"), or `with AcsPeer() as peer`
        settings = AcsSettings(connection_string=peer.connection_string, poll_interval_seconds=0.01)
        ...
        assert [email.operation_id for email in peer.emails] == [str(notification_id)]

It serves, on 127.0.0.1 and a free port, in a thread of its own (its own event loop, so it answers even while the
test's loop is busy, and synchronous code can use it too):

- ``POST /emails:send?api-version=…`` — 202 with ``Operation-Location``, body ``{"id", "status": "Running"}``;
  400 ``InvalidEmailAddress`` ("Invalid format for email address.") when a To address has no ``@``; 400
  ``BadRequest`` when a required field is missing.
- ``GET /emails/operations/{id}?api-version=…`` — ``{"id", "status", "error"?}``; 404 for an unknown id.

Every request's HMAC-SHA256 signature is checked with an implementation of its own (not varsel's): 401 ``Denied``
when the signature, the content hash or the signed-header list is wrong, or when ``x-ms-date`` is more than
``max_skew`` from the peer's clock.

The Operation-Id header is honoured: a repeated id records no second email and is answered 409 ``Conflict`` (or,
with ``repeat_answer = 202``, the original 202 replayed). ``emails`` holds every email taken, once each;
``requests`` every request with its answer.

Behaviours, switchable at any time (read when a request arrives):

- ``running_polls = N``: a new operation answers Running to its first N polls, then its final status.
- ``fail_code = "EmailDropped"`` (and ``fail_message``): new operations end Failed with that error.
- ``retry_after = N``: the 202 and Running answers carry ``retry-after: N``.
- ``throttle(retry_after, count=1)``: the next ``count`` requests are answered 429 with ``Retry-After``.
- ``fail_next(count, status=503)``: the next ``count`` requests are answered with that 5xx.
- ``answer_next(status, code=…, message=…, headers=…, count=1)``: any scripted answer (4xx, 5xx, 429).
- ``delay_seconds = S``: every request waits S seconds before it is handled (timeouts, latency benchmarks).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from varsel.clock import Clock, SystemClock

_AUTHORIZATION = re.compile(r"^HMAC-SHA256 SignedHeaders=(?P<headers>[^&]+)&Signature=(?P<signature>.+)$")


@dataclass(frozen=True)
class RecordedEmail:
    operation_id: str
    sender: str
    to: list[str]
    subject: str
    plain_text: str | None
    html: str | None
    user_engagement_tracking_disabled: bool | None
    body: dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class _Operation:
    email: RecordedEmail
    polls_left: int
    fail_code: str | None
    fail_message: str
    polls: int = 0
    # The first answer, replayed when the same Operation-Id is sent again and repeat_answer is 202.
    first_answer: dict[str, Any] = field(default_factory=dict)

    def status(self) -> str:
        if self.polls_left > 0:
            return "Running"
        return "Failed" if self.fail_code else "Succeeded"


@dataclass(frozen=True)
class _Scripted:
    status: int
    code: str
    message: str
    headers: dict[str, str]


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers={"x-ms-error-code": code, **(headers or {})},
    )


class AcsPeer:
    def __init__(
        self,
        access_key: str | None = None,
        *,
        clock: Clock | None = None,
        max_skew: timedelta = timedelta(minutes=15),
    ) -> None:
        self.access_key = access_key or base64.b64encode(os.urandom(32)).decode("ascii")
        self._key = base64.b64decode(self.access_key)
        self.clock: Clock = clock or SystemClock()
        self.max_skew = max_skew
        # Behaviours.
        self.running_polls = 0
        self.fail_code: str | None = None
        self.fail_message = "Email was dropped after several attempts to deliver."
        self.retry_after: float | None = None
        self.delay_seconds = 0.0
        self.repeat_answer = 409
        # Records.
        self.emails: list[RecordedEmail] = []
        self.requests: list[RecordedRequest] = []
        self._operations: dict[str, _Operation] = {}
        self._scripted: deque[_Scripted] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ switches and views

    def answer_next(
        self,
        status: int,
        *,
        code: str = "",
        message: str = "",
        headers: dict[str, str] | None = None,
        count: int = 1,
    ) -> None:
        scripted = _Scripted(status, code or f"Http{status}", message or f"Scripted answer {status}", headers or {})
        with self._lock:
            self._scripted.extend([scripted] * count)

    def throttle(self, retry_after: float, count: int = 1) -> None:
        self.answer_next(
            429,
            code="TooManyRequests",
            message="Too many requests.",
            headers={"Retry-After": f"{retry_after:g}"},
            count=count,
        )

    def fail_next(self, count: int, status: int = 503) -> None:
        self.answer_next(status, code="ServiceUnavailable", message="Try again later.", count=count)

    def operation_status(self, operation_id: str) -> str | None:
        with self._lock:
            operation = self._operations.get(operation_id)
            return operation.status() if operation else None

    def polls_of(self, operation_id: str) -> int:
        with self._lock:
            operation = self._operations.get(operation_id)
            return operation.polls if operation else 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"endpoint={self.endpoint}/;accesskey={self.access_key}"

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Block until `count` requests have been answered (a delayed one finishes after the client gave up)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} requests answered, expected {count}")
            time.sleep(0.01)

    # ------------------------------------------------------------ the ACS API

    def _verify(self, request: Request, body: bytes) -> str | None:
        """Why the request is not signed right, or None when it is."""
        match = _AUTHORIZATION.match(request.headers.get("authorization", ""))
        if not match:
            return "no HMAC-SHA256 Authorization header"
        if match["headers"] != "x-ms-date;host;x-ms-content-sha256":
            return f"signed headers {match['headers']!r}"
        date = request.headers.get("x-ms-date", "")
        try:
            sent = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return f"x-ms-date {date!r} is not an RFC 1123 date"
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=UTC)
        if abs(self.clock.now() - sent) > self.max_skew:
            return f"x-ms-date {date!r} is too far from now"
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        if request.headers.get("x-ms-content-sha256") != digest:
            return "x-ms-content-sha256 is not the body's hash"
        path = request.scope.get("raw_path") or request.url.path.encode()
        path_and_query = path.decode("latin-1")
        if request.scope.get("query_string"):
            path_and_query += "?" + request.scope["query_string"].decode("latin-1")
        host = request.headers.get("host", "")
        signed = f"{request.method}\n{path_and_query}\n{date};{host};{digest}".encode()
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode("ascii")
        if not hmac.compare_digest(expected, match["signature"]):
            return "the signature does not match"
        return None

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        response = self._answer(request, body)
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.url.path,
                    request.url.query,
                    dict(request.headers),
                    body,
                    response.status_code,
                )
            )
        return response

    def _answer(self, request: Request, body: bytes) -> Response:
        problem = self._verify(request, body)
        if problem:
            return _error(401, "Denied", f"Denied by the resource provider: {problem}.")
        with self._lock:
            scripted = self._scripted.popleft() if self._scripted else None
        if scripted is not None:
            return _error(scripted.status, scripted.code, scripted.message, scripted.headers)
        if not request.query_params.get("api-version"):
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if request.method == "POST" and request.url.path == "/emails:send":
            return self._send(request, body)
        prefix = "/emails/operations/"
        if request.method == "GET" and request.url.path.startswith(prefix):
            return self._status(request.url.path[len(prefix) :])
        return _error(404, "NotFound", "No such resource.")

    def _retry_headers(self) -> dict[str, str]:
        return {"retry-after": f"{self.retry_after:g}"} if self.retry_after is not None else {}

    def _send(self, request: Request, body: bytes) -> Response:
        try:
            message = json.loads(body)
            sender = message["senderAddress"]
            content = message["content"]
            subject = content["subject"]
            to = [recipient["address"] for recipient in message["recipients"]["to"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequest", "The request body is not a valid email message.")
        if not to or not isinstance(sender, str) or not isinstance(subject, str):
            return _error(400, "BadRequest", "senderAddress, content.subject and recipients.to are required.")
        if not any(isinstance(content.get(part), str) for part in ("plainText", "html")):
            return _error(400, "BadRequest", "content.plainText or content.html is required.")
        if any(not isinstance(address, str) or "@" not in address.strip("@") for address in to):
            return _error(400, "InvalidEmailAddress", "Invalid format for email address.")
        operation_id = request.headers.get("operation-id") or str(uuid.uuid4())
        try:
            uuid.UUID(operation_id)
        except ValueError:
            return _error(400, "InvalidOperationId", "Operation-Id must be a UUID.")
        location = f"{self.endpoint}/emails/operations/{operation_id}?api-version={request.query_params['api-version']}"
        with self._lock:
            existing = self._operations.get(operation_id)
            if existing is not None:
                if self.repeat_answer == 202:
                    return JSONResponse(
                        existing.first_answer, status_code=202, headers={"Operation-Location": location}
                    )
                return _error(409, "Conflict", f"An operation with id {operation_id} exists already.")
            email = RecordedEmail(
                operation_id=operation_id,
                sender=sender,
                to=to,
                subject=subject,
                plain_text=content.get("plainText"),
                html=content.get("html"),
                user_engagement_tracking_disabled=message.get("userEngagementTrackingDisabled"),
                body=message,
            )
            operation = _Operation(email, self.running_polls, self.fail_code, self.fail_message)
            operation.first_answer = {"id": operation_id, "status": "Running"}
            self._operations[operation_id] = operation
            self.emails.append(email)
        return JSONResponse(
            operation.first_answer,
            status_code=202,
            headers={"Operation-Location": location, **self._retry_headers()},
        )

    def _status(self, operation_id: str) -> Response:
        with self._lock:
            operation = self._operations.get(operation_id)
            if operation is None:
                return _error(404, "NotFound", f"No operation {operation_id}.")
            operation.polls += 1
            status = operation.status()
            if operation.polls_left > 0:
                operation.polls_left -= 1
        answer: dict[str, Any] = {"id": operation_id, "status": status}
        headers: dict[str, str] = {}
        if status == "Running":
            headers = self._retry_headers()
        elif status == "Failed":
            answer["error"] = {"code": operation.fail_code, "message": operation.fail_message}
        return JSONResponse(answer, headers=headers)

    # ------------------------------------------------------------ serving

    def _app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name=f"acs-peer-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ACS peer did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> AcsPeer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> AcsPeer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
