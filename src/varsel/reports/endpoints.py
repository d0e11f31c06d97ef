"""The webhooks providers post delivery reports to. Each authenticates the provider with credentials of its own,
compared in constant time, refuses oversized bodies before reading them whole, and bodies carrying more reports than
one request may (reports.max_reports_per_request) before storing any: both 413."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import SecretStr

from varsel.http import BodyTooLarge
from varsel.problems import Problem
from varsel.providers.acs import parse_event_grid
from varsel.providers.base import ReportFormatError, TooManyReports
from varsel.providers.linkmobility import parse_delivery_reports
from varsel.reports.service import DeliveryReports

router = APIRouter(prefix="/notifications/api/v1/reports", include_in_schema=False)


class ReportsNotConfigured(Problem):
    def __init__(self, provider: str) -> None:
        super().__init__(404, "Not Found", f"Delivery reports from {provider} are not configured on this service.")


class ReportUnauthorized(Problem):
    def __init__(self, scheme: str | None = None) -> None:
        headers = {"WWW-Authenticate": f'{scheme} realm="varsel delivery reports"'} if scheme else None
        super().__init__(
            401, "Unauthorized", "The delivery report's credentials are missing or wrong.", headers=headers
        )


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None and value.get_secret_value() else None


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _reports(request: Request) -> DeliveryReports:
    service: DeliveryReports = request.app.state.varsel.reports
    return service


def _answer(states: list[Any]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for state in states:
        counts[state.value] = counts.get(state.value, 0) + 1
    return {"received": len(states), "states": counts}


@router.post("/sms/linkmobility")
async def linkmobility_report(request: Request) -> dict[str, Any]:
    """LINK Mobility posts each delivery report through a gate configured to call this URL with basic auth."""
    settings = request.app.state.varsel.settings
    username = settings.sms.linkmobility.report_username
    password = _secret(settings.sms.linkmobility.report_password)
    if not username or not password:
        raise ReportsNotConfigured("LINK Mobility")
    given_user, given_password = _basic(request.headers.get("authorization", ""))
    # Both compared, always: the time taken says nothing about which of the two was wrong.
    user_ok = _same(given_user, username)
    password_ok = _same(given_password, password)
    if not (user_ok and password_ok):
        raise ReportUnauthorized("Basic")
    body = await _body(request, settings.reports.max_body_bytes)
    try:
        parsed = parse_delivery_reports(body, settings.reports.max_reports_per_request)
    except TooManyReports as error:
        raise Problem(413, "Content Too Large", str(error)) from error
    except ReportFormatError as error:
        raise Problem(400, "Bad Request", f"Not a LINK Mobility delivery report: {error}") from error
    return _answer(await _reports(request).receive("sms", "linkmobility", parsed))


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def _acs_key(request: Request) -> None:
    settings = request.app.state.varsel.settings
    expected = _secret(settings.email.acs.report_access_key)
    if expected is None:
        raise ReportsNotConfigured("Azure Communication Services")
    # Event Grid cannot sign its calls with our key: the key travels in the subscription's URL (or a header
    # set on the subscription's delivery properties).
    given = request.query_params.get("accesskey") or request.headers.get("x-varsel-access-key") or ""
    if not _same(given, expected):
        raise ReportUnauthorized()


@router.options("/email/acs")
async def acs_cloud_events_handshake(request: Request) -> Response:
    """CloudEvents webhook validation: Event Grid asks whether it may deliver here."""
    _acs_key(request)
    origin = request.headers.get("webhook-request-origin", "")
    return Response(status_code=200, headers={"WebHook-Allowed-Origin": origin or "*", "Allow": "POST, OPTIONS"})


@router.post("/email/acs")
async def acs_report(request: Request) -> dict[str, Any]:
    """Event Grid posts Azure Communication Services email delivery reports (and, first, a validation event)."""
    _acs_key(request)
    settings = request.app.state.varsel.settings
    body = await _body(request, settings.reports.max_body_bytes)
    try:
        delivery = parse_event_grid(body, settings.reports.max_reports_per_request)
    except TooManyReports as error:
        raise Problem(413, "Content Too Large", str(error)) from error
    except ReportFormatError as error:
        raise Problem(400, "Bad Request", f"Not an Event Grid delivery: {error}") from error
    if delivery.validation_code is not None:
        return {"validationResponse": delivery.validation_code}
    return _answer(await _reports(request).receive("email", "acs", delivery.reports))
