"""Usage metrics (reference 7) under /notifications/api/v1/metrics.

- `GET  /metrics`: an HTML page with a month and year form.
- `POST /metrics` (form fields month, year): the page with a table of each service owner's totals for the orders
  requested in that month, and an "Export metrics to Excel" button (the CSV below); it says when the figures were
  counted (the usage rollup, varsel.support.service.UsageService) and how often recent days are counted again.
- `GET  /metrics/usage?month=M&year=Y[&format=json|csv]`: the same summary as JSON (the default) or CSV (format=csv,
  or `Accept: text/csv` without a format). varsel's addition, for scripts and spreadsheets. The X-Usage-Counted-At
  header says when the figures were counted (ISO 8601, UTC).
- `POST /metrics/sms`, `POST /metrics/email`: yesterday's (UTC, by the clock) final notifications as a Parquet file,
  behind the `X-API-Key` header, compared in constant time with settings metrics.api_key
  (VARSEL_METRICS__API_KEY); with no key configured they answer 401.

The HTML and the summary are anonymous at the application level, as the reference's are (its API gateway guards
them); the exports carry one row per notification and need the key. None of these is in the OpenAPI document, as
Altinn leaves them out of its own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, PackageLoader

from varsel.problems import ValidationProblem
from varsel.support.export import USAGE_COLUMNS, email_parquet, sms_parquet, usage_csv, usage_rows
from varsel.support.service import MAX_YEAR, MIN_YEAR, MonthlyUsage, UsageMonth, UsageService

PREFIX = "/notifications/api/v1/metrics"
API_KEY_HEADER = "X-API-Key"

router = APIRouter(prefix=PREFIX, tags=["Metrics"], include_in_schema=False)

# Autoescape everywhere: service owners' names come from tokens and land in the page.
_templates = Environment(loader=PackageLoader("varsel.api", "templates"), autoescape=True)

Errors = dict[str, list[str]]


# ---------------------------------------------------------------- month and year


def _whole_number(raw: str) -> int | None:
    text = raw.strip()
    if not text or len(text) > 9 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def usage_month(raw_month: str | None, raw_year: str | None) -> UsageMonth | Errors:
    """The month asked for, or the reasons it is not one, by field (Month, Year)."""
    errors: Errors = {}
    numbers: dict[str, int] = {}
    for name, raw, low, high in (("Month", raw_month, 1, 12), ("Year", raw_year, MIN_YEAR, MAX_YEAR)):
        if raw is None or not raw.strip():
            errors[name] = [f"The {name} field is required."]
            continue
        number = _whole_number(raw)
        if number is None:
            errors[name] = [f"The value '{raw[:40]}' is not valid for {name}."]
        elif not low <= number <= high:
            errors[name] = [f"The field {name} must be between {low} and {high}."]
        else:
            numbers[name] = number
    if errors:
        return errors
    return UsageMonth(year=numbers["Year"], month=numbers["Month"])


def _usage(request: Request) -> UsageService:
    usage: UsageService = request.app.state.varsel.usage
    return usage


# When the summary's figures were counted (the oldest day's count), on the JSON and CSV answers, whose bodies keep the
# reference's shape. Absent when nothing of the month is counted (a month still ahead).
COUNTED_AT_HEADER = "X-Usage-Counted-At"


def _counted_at_headers(usage: MonthlyUsage) -> dict[str, str]:
    if usage.counted_at is None:
        return {}
    return {COUNTED_AT_HEADER: usage.counted_at.astimezone(UTC).isoformat().replace("+00:00", "Z")}


# ---------------------------------------------------------------- the HTML pages


def _page(
    request: Request,
    *,
    status: int = 200,
    month: Any = "",
    year: Any = "",
    usage: MonthlyUsage | None = None,
    errors: Errors | None = None,
) -> HTMLResponse:
    if not month and not year:
        today = request.app.state.varsel.clock.now().astimezone(UTC).date()
        month, year = today.month, today.year
    html = _templates.get_template("metrics.html").render(
        base=PREFIX,
        month=month,
        year=year,
        min_year=MIN_YEAR,
        max_year=MAX_YEAR,
        usage=usage,
        rows=usage_rows(usage) if usage else [],
        columns=USAGE_COLUMNS,
        errors=errors,
        counted_at=_counted_at_text(usage.counted_at) if usage and usage.counted_at else None,
        fresh_seconds=_fresh_seconds(request),
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _counted_at_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fresh_seconds(request: Request) -> str:
    return f"{request.app.state.varsel.settings.usage.fresh_seconds:g}"


@router.get("", response_class=HTMLResponse)
async def metrics_form(request: Request) -> HTMLResponse:
    return _page(request)


_FORM = "application/x-www-form-urlencoded"


@router.post("", response_class=HTMLResponse)
async def metrics_table(request: Request) -> HTMLResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        return _page(request, status=415, errors={"Form": [f"Send the form as {_FORM}."]})
    try:
        form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return _page(request, status=400, errors={"Form": ["The form could not be read."]})
    raw_month, raw_year = (form.get(name, [None])[0] for name in ("month", "year"))
    wanted = usage_month(raw_month, raw_year)
    if isinstance(wanted, dict):
        return _page(request, status=400, month=(raw_month or "")[:40], year=(raw_year or "")[:40], errors=wanted)
    usage = await _usage(request).monthly(wanted)
    return _page(request, month=wanted.month, year=wanted.year, usage=usage)


# ---------------------------------------------------------------- the summary as JSON or CSV


def _usage_json(usage: MonthlyUsage) -> dict[str, Any]:
    # The names of the reference's MonthlyNotificationMetrics / MetricsForOrg, in camelCase.
    return {
        "month": usage.month.month,
        "year": usage.month.year,
        "metrics": [
            {
                "org": org.org,
                "ordersCreated": org.orders,
                "emailNotificationsCreated": org.emails,
                "successfulEmailNotifications": org.successful_emails,
                "smsNotificationsCreated": org.sms,
                "successfulSmsNotifications": org.successful_sms,
                # varsel's: notifications to simulated recipients, left out of the figures before (issue #18).
                "simulatedEmailNotifications": org.simulated_emails,
                "simulatedSmsNotifications": org.simulated_sms,
            }
            for org in usage.orgs
        ],
    }


@router.get("/usage", name="usage_summary")
async def usage_summary(request: Request) -> Response:
    query: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        query.setdefault(name.lower(), value)
    wanted = usage_month(query.get("month"), query.get("year"))
    errors: Errors = wanted if isinstance(wanted, dict) else {}
    chosen = query.get("format", "").strip().lower()
    if chosen not in ("", "json", "csv"):
        errors["Format"] = ["The field Format must be json or csv."]
    if errors or isinstance(wanted, dict):
        raise ValidationProblem(errors)
    as_csv = chosen == "csv" or (not chosen and "text/csv" in request.headers.get("accept", "").lower())
    usage = await _usage(request).monthly(wanted)
    if as_csv:
        environment = request.app.state.varsel.settings.metrics.environment
        name = f"{wanted.year:04d}{wanted.month:02d}_usage_{environment}.csv"
        return Response(
            usage_csv(usage),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
                **_counted_at_headers(usage),
            },
        )
    return JSONResponse(_usage_json(usage), headers={"Cache-Control": "no-store", **_counted_at_headers(usage)})


# ---------------------------------------------------------------- the daily Parquet exports


def _refused(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=401)


def _key_refusal(request: Request) -> JSONResponse | None:
    """None when X-API-Key is the configured key; otherwise the reference's 401."""
    provided = request.headers.get(API_KEY_HEADER)
    if provided is None:
        return _refused("API key required for Metrics endpoints")
    if not provided.strip():
        return _refused("API key cannot be empty")
    configured = request.app.state.varsel.settings.metrics.api_key
    expected = configured.get_secret_value() if configured is not None else ""
    if not expected:
        return _refused("API key validation not configured")
    # Constant time: how long the comparison takes says nothing about how much of the key was right. The header's
    # bytes as sent (ASGI servers hand them over as Latin-1), against the key's UTF-8: a key with "ø" in it matches.
    if not hmac.compare_digest(provided.encode("latin-1"), expected.encode("utf-8")):
        return _refused("Invalid API key")
    return None


def _round_trip(moment: datetime) -> str:
    """.NET's round-trip ("o") form in UTC: seven fractional digits and Z."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


def _parquet_response(request: Request, body: bytes, rows: int, day: date, channel: str) -> Response:
    varsel = request.app.state.varsel
    environment = varsel.settings.metrics.environment
    name = f"{day:%Y%m%d}_{channel}_notifications_{environment}.parquet"
    digest = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-File-Hash": digest,
            "X-File-Size": str(len(body)),
            "X-Total-FileTransfer-Count": str(rows),
            "X-Generated-At": _round_trip(varsel.clock.now()),
            "X-Environment": environment,
            "Cache-Control": "no-store",
        },
    )


@router.post("/sms")
async def sms_export(request: Request) -> Response:
    refusal = _key_refusal(request)
    if refusal is not None:
        return refusal
    usage = _usage(request)
    day = usage.yesterday()
    records = await usage.final_sms(day)
    # Writing a day's file is CPU work of its own: off the event loop, so other requests keep being answered.
    body = await asyncio.to_thread(sms_parquet, records)
    return _parquet_response(request, body, len(records), day, "sms")


@router.post("/email")
async def email_export(request: Request) -> Response:
    refusal = _key_refusal(request)
    if refusal is not None:
        return refusal
    usage = _usage(request)
    day = usage.yesterday()
    records = await usage.final_emails(day)
    body = await asyncio.to_thread(email_parquet, records)
    return _parquet_response(request, body, len(records), day, "email")
