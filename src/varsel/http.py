"""HTTP plumbing shared by the endpoints: request bodies, size limits, and OpenAPI declarations of both."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from varsel.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    ProblemDetails,
    ValidationProblem,
    ValidationProblemDetails,
    problem_response,
    pydantic_errors,
)

M = TypeVar("M", bound=BaseModel)


class BodyTooLarge(Problem):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "Content Too Large", f"The request body must be at most {limit} bytes.")


class BodyLimitMiddleware:
    """Refuses request bodies over the limit: early on Content-Length, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    scope.setdefault("state", {})["body_too_large"] = True
                break
        received = 0
        limit = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class RouteSpellingMiddleware:
    """Routes match as ASP.NET's do for the reference's clients: in any case, and with a trailing slash.

    Starlette would answer `POST …/orders/email/` with a 307 redirect, which many HTTP clients do not follow for
    a POST, and `…/Orders` with a 404. Path parameters lose nothing by it: every one varsel has is a UUID.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            spelled = path.lower()
            if len(spelled) > 1 and spelled.endswith("/"):
                spelled = spelled.rstrip("/") or "/"
            if spelled != path:
                scope = {**scope, "path": spelled}
        await self.app(scope, receive, send)


class TrustedHostMiddleware:
    """Answers only requests whose Host header names this service (Starlette's trusted-host rule: exact names,
    "*.domain" wildcards, "*" for any), with a 400 problem otherwise.

    Without a configured public URL, links and Location are built from the Host header, so a caller (or a cache or
    proxy in front that keys on the path alone) could have varsel hand out links to a host of anyone's choosing.
    Health checks and metrics are exempt: they carry no links, and orchestrators probe them by address.
    """

    _EXEMPT = ("/health/", "/metrics")

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        names = [host.strip().lower().rstrip(".") for host in hosts]
        self._any = "*" in names
        self._exact = frozenset(name.strip("[]") for name in names if not name.startswith("*."))
        self._suffixes = tuple(name[1:] for name in names if name.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        if self._trusted(_host_name(host)) or scope.get("path", "").startswith(self._EXEMPT):
            await self.app(scope, receive, send)
            return
        shown = host if len(host) <= 100 else host[:100] + "…"
        response = problem_response(
            Request(scope),
            Problem(
                400,
                "Untrusted host",
                f"The Host header {shown!r} is not a name this service answers to (VARSEL_TRUSTED_HOSTS).",
            ),
        )
        await response(scope, receive, send)

    def _trusted(self, name: str) -> bool:
        return name in self._exact or (bool(self._suffixes) and name.endswith(self._suffixes))


# A Host header as RFC 9110 has it: a name or an IPv4 address, or an IPv6 address in brackets, and an optional port
# of digits. Anything else ("localhost:@evil.example", "[::1]@evil.example") names no host, and some versions of
# Starlette would build links from it as written.
_HOST_HEADER = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::[0-9]{1,5})?", re.IGNORECASE)


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:8080" -> "::1", "Example.org.:80" -> "example.org";
    "" when the header is no host at all."""
    match = _HOST_HEADER.fullmatch(host.strip())
    if match is None:
        return ""
    return (match["ipv6"] or match["name"]).lower().rstrip(".")


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency that reads the body as `model`: 415 for another media type, 413 when too large,
    400 problems naming each field for malformed JSON or values of the wrong type."""

    async def dependency(request: Request) -> M:
        if request.scope.get("state", {}).get("body_too_large"):
            raise BodyTooLarge(request.app.state.varsel.settings.limits.max_body_bytes)
        if not _is_json(request.headers.get("content-type", "")):
            raise Problem(
                415, "Unsupported Media Type", "The request body must be JSON (Content-Type: application/json)."
            )
        raw = await request.body()
        try:
            # The service's limits, for models that stop reading what is over a limit anyway.
            return model.model_validate_json(raw, context={"limits": request.app.state.varsel.settings.limits})
        except ValidationError as error:
            raise ValidationProblem(pydantic_errors(error.errors())) from error

    return dependency


def json_request_body(model: type[BaseModel], example: Any = None) -> dict[str, Any]:
    """OpenAPI for a body read by json_body (FastAPI cannot see it), with an example request that is accepted."""
    media_type: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    if example is not None:
        media_type["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media_type}}}


_PROBLEM_DESCRIPTIONS = {
    400: ("The request is invalid; `errors` lists each field and why.", ValidationProblemDetails),
    401: ("A missing, malformed, expired or badly signed token.", ProblemDetails),
    403: ("The token lacks the required scope, or names no service owner.", ProblemDetails),
    404: ("No such order for this service owner.", ProblemDetails),
    409: ("The order can no longer be cancelled.", ProblemDetails),
    413: ("The request body is too large.", ProblemDetails),
    415: ("The request body is not JSON.", ProblemDetails),
    503: ("A dependency (database, token keys) is unavailable; try again later.", ProblemDetails),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "description": _PROBLEM_DESCRIPTIONS[status][0],
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": {"$ref": f"#/components/schemas/{_PROBLEM_DESCRIPTIONS[status][1].__name__}"}
                }
            },
        }
        for status in statuses
    }


def base_url(request: Request) -> str:
    """The base of the absolute links in an answer: the configured public URL, or the request's own."""
    configured = request.app.state.varsel.settings.public_url
    if configured:
        return str(configured.rstrip("/"))
    scope = request.scope
    server = scope.get("server")
    return _request_base_url(scope.get("scheme", "http"), request.headers.get("host"),
                             tuple(server) if server else None,
                             scope.get("app_root_path", scope.get("root_path", "")))  # fmt: skip


@functools.lru_cache(maxsize=64)
def _request_base_url(scheme: str, host: str | None, server: tuple[str, int] | None, app_root_path: str) -> str:
    """Starlette's base URL of a request with these parts, remembered: building it parses a URL each time, a few
    per cent of the API's CPU per order. The parts come from the request (the Host header), so only a few are kept."""
    headers = [(b"host", host.encode("latin-1"))] if host is not None else []
    scope = {"type": "http", "scheme": scheme, "server": server, "app_root_path": app_root_path, "path": "/",
             "query_string": b"", "headers": headers}  # fmt: skip
    return str(Request(scope).base_url).rstrip("/")
