"""The access log (VARSEL_ACCESS_LOG=true): one logfmt line per request, on the `varsel.access` logger at INFO.

    method=POST path=/notifications/api/v1/orders status=202 duration_ms=4.1

uvicorn's own access log is off: it writes the query string, which carries secrets here (the ACS delivery-report
webhook's access key), and logs nothing of a request it never answered. Here the path is logged without its query,
and the one path that is itself a secret, the console's one-time sign-in link, is logged without its token.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("varsel.access")

# /console/sign-in/link/<token>: whoever reads the log could sign in with an unused link.
_SECRET_PATHS = re.compile(r"^(/console/sign-in/link/)[^/]+", re.IGNORECASE)
# logfmt: a value with a space, a quote, an equals sign or a control character is quoted, its quotes escaped.
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|[\x00-\x1f\x7f]')


def logged_path(raw_path: bytes) -> str:
    """The path as the client sent it (percent-encoded, so it has no spaces), without a secret in it."""
    path = raw_path.split(b"?", 1)[0].decode("latin-1")  # servers give it without the query; should one not
    return _SECRET_PATHS.sub(r"\1…", path)


def logfmt_value(value: str) -> str:
    if value and not _NEEDS_QUOTES.search(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m[0]):02x}", escaped) + '"'


class AccessLogMiddleware:
    """Outermost, so that every request is logged with the status it got, refusals by the other middleware too;
    the latency is from the request's arrival to its answer's last byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            # A request cut off before its answer began (the client left, or an error no handler answered) is logged
            # with status 0, as the server sent none.
            raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8")
            log.info(
                "method=%s path=%s status=%d duration_ms=%.1f",
                logfmt_value(scope.get("method", "")),
                logfmt_value(logged_path(raw_path)),
                status,
                (time.perf_counter() - started) * 1000,
            )
