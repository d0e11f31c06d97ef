"""RFC 9457 problem details: every error varsel answers is one of these.

Validation problems have the shape service owners already parse from the reference service:
``{type, title, status, errors: {Field: [messages]}, traceId}``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# The RFC 9110 section for each status, as the reference service links them in `type`.
_STATUS_TYPES = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
    403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    405: "https://tools.ietf.org/html/rfc9110#section-15.5.6",
    409: "https://tools.ietf.org/html/rfc9110#section-15.5.10",
    413: "https://tools.ietf.org/html/rfc9110#section-15.5.14",
    415: "https://tools.ietf.org/html/rfc9110#section-15.5.16",
    422: "https://tools.ietf.org/html/rfc9110#section-15.5.21",
    500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
}

_DEFAULT_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

VALIDATION_TITLE = "One or more validation errors occurred."


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[_STATUS_TYPES[404]])
    title: str
    status: int
    detail: str | None = None
    code: str | None = Field(default=None, description="A stable machine-readable error code, when there is one.")
    traceId: str = Field(description="W3C trace id of the request, to quote when asking for help.")


class ValidationProblemDetails(ProblemDetails):
    """A 400 problem listing every invalid field with its reasons."""

    errors: dict[str, list[str]] = Field(
        examples=[{"NotificationChannel": ["A notification channel must be defined."]}]
    )


class Problem(Exception):
    """A domain error that becomes a problem response; raise it anywhere below an endpoint."""

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.title = title or _DEFAULT_TITLES.get(status, "Error")
        self.detail = detail
        self.code = code
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


class HintedMessage(str):
    """A validation message whose words clients may match exactly (the reference fixes them), with a hint for the
    person reading the answer: the message goes into `errors` unchanged, the hint into the problem's `detail`."""

    hint: str

    def __new__(cls, message: str, hint: str) -> HintedMessage:
        made = super().__new__(cls, message)
        made.hint = hint
        return made


def hinted(message: str, hint: str | None) -> str:
    """The message, with the hint when there is one (see HintedMessage)."""
    return message if hint is None else HintedMessage(message, hint)


def _hints(errors: Mapping[str, Sequence[str]]) -> str | None:
    """The problem's detail from its messages' hints: each hint once, naming the first field it applies to (a
    10,000-recipient order with the same mistake throughout gets one sentence, not 10,000)."""
    fields: dict[str, list[str]] = {}
    for field, messages in errors.items():
        for message in messages:
            if isinstance(message, HintedMessage):
                fields.setdefault(message.hint, []).append(field)
    if not fields:
        return None
    parts = []
    for hint, named in fields.items():
        more = f" (and {len(named) - 1} more)" if len(named) > 1 else ""
        parts.append(f"{named[0]}{more}: {hint}")
    return " ".join(parts)


class ValidationProblem(Problem):
    def __init__(self, errors: Mapping[str, Sequence[str]]) -> None:
        super().__init__(
            400,
            VALIDATION_TITLE,
            _hints(errors),
            extensions={"errors": {k: [str(m) for m in v] for k, v in errors.items()}},
        )
        self.errors = errors


def trace_id(request: Request) -> str:
    """The request's W3C trace id (from `traceparent` when the caller sent one), minted once per request."""
    existing = getattr(request.state, "trace_id", None)
    if isinstance(existing, str):
        return existing
    incoming = request.headers.get("traceparent", "")
    parts = incoming.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        value = f"00-{parts[1]}-{secrets.token_hex(8)}-00"
    else:
        value = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    request.state.trace_id = value
    return value


def problem_response(request: Request, problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": _STATUS_TYPES.get(problem.status, "about:blank"),
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if problem.code:
        body["code"] = problem.code
    body.update(problem.extensions)
    body["traceId"] = trace_id(request)
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE)


def field_path(loc: Sequence[int | str]) -> str:
    """('recipients', 0, 'emailAddress') → 'Recipients[0].EmailAddress', as the reference names fields."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = part[:1].upper() + part[1:]
            path += f".{name}" if path else name
    return path or "$"


def pydantic_errors(errors: Sequence[Mapping[str, Any]], *, strip: int = 0) -> dict[str, list[str]]:
    """Pydantic's errors as {Field: [messages]}; `strip` drops leading location parts such as 'body'."""
    result: dict[str, list[str]] = {}
    for error in errors:
        loc = [p for p in error.get("loc", ())[strip:] if isinstance(p, int | str)]
        # Pydantic names the branch of a union or a validator function in the location; callers only care
        # about the field.
        loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
        message = str(error.get("msg", "Invalid value."))
        if error.get("type") == "json_invalid":
            message = f"The request body is not valid JSON: {message.removeprefix('Invalid JSON: ')}."
        if not message.endswith("."):
            message += "."
        result.setdefault(field_path(loc), []).append(message)
    return result


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """The Allow header of a 405: every method some route serves at the request's path.

    Starlette names only the methods of the first route whose path matches, so `OPTIONS /orders` answered
    `Allow: POST` although GET /orders exists too; RFC 9110 wants all of the resource's methods.
    """
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        # Path and query parameters that do not parse; bodies are parsed by varsel.api.json_body.
        errors = pydantic_errors(exc.errors(), strip=1)
        return problem_response(request, ValidationProblem(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = (
            exc.detail if isinstance(exc.detail, str) and exc.detail != _DEFAULT_TITLES.get(exc.status_code) else None
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem_response(request, Problem(exc.status_code, detail=detail, headers=headers))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            request, Problem(500, detail="An unexpected error occurred. Quote the traceId when reporting it.")
        )
