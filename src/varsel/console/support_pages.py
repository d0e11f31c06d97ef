"""Support pages (admin): every notification to one person or organisation across service owners (the support
dashboard API's look-up, varsel.support), and each service owner's monthly usage with a CSV download.

The identity number travels in the form's body (a POST), never in a URL: URLs end up in logs, browser history and
Referer headers. The look-up is read-only, but it is still a CSRF-checked form: a page of another site must not be
able to make a signed-in admin's browser run look-ups."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import FormData

from varsel.console.principal import Principal
from varsel.console.sessions import admin_only, checked_form
from varsel.console.web import PREFIX, console_of, render
from varsel.support.export import USAGE_COLUMNS, usage_csv, usage_rows
from varsel.support.service import (
    MAX_YEAR,
    MIN_YEAR,
    RecipientIdentifier,
    RecipientLookup,
    RecipientQuery,
    SupportService,
    UsageMonth,
)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

# The look-up's default window, as the dashboard API's (reference 6.1): the last seven days.
DEFAULT_DAYS = 7
# How far back a look-up may reach, as the dashboard API allows.
MAX_YEARS_BACK = 10
_DIGITS = {RecipientIdentifier.NATIONAL_IDENTITY_NUMBER: 11, RecipientIdentifier.ORGANIZATION_NUMBER: 9}
_KINDS = {"nin": RecipientIdentifier.NATIONAL_IDENTITY_NUMBER, "orgnumber": RecipientIdentifier.ORGANIZATION_NUMBER}


def _today(request: Request) -> date:
    return console_of(request).varsel.clock.now().astimezone(UTC).date()


def _form_defaults(request: Request) -> dict[str, Any]:
    today = _today(request)
    return {"kind": "nin", "value": "", "start": (today - timedelta(days=DEFAULT_DAYS)).isoformat(),
            "end": today.isoformat()}  # fmt: skip


@router.get("/recipients")
async def recipients_page(request: Request, principal: Principal = Depends(admin_only)) -> Response:
    return render(request, "recipients.html", {"form": _form_defaults(request), "errors": [], "result": None})


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February, in a year that has none
        return day.replace(year=day.year - years, day=28)


def _parse_day(text: str, label: str, errors: list[str]) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        errors.append(f"{label} must be a date (YYYY-MM-DD).")
        return None


def _query(request: Request, form: FormData) -> tuple[dict[str, Any], list[str], RecipientQuery | None]:
    """The form's look-up, or what is wrong with it. Dates are whole UTC days: `to` includes its day."""
    shown = {key: str(form.get(key) or "") for key in ("kind", "value", "start", "end")}
    errors: list[str] = []
    kind = _KINDS.get(shown["kind"])
    if kind is None:
        errors.append("Choose what to look up: a national identity number or an organisation number.")
    value = re.sub(r"\s", "", shown["value"])
    if kind is not None:
        digits = _DIGITS[kind]
        name = "A national identity number" if kind is RecipientIdentifier.NATIONAL_IDENTITY_NUMBER else (
            "An organisation number")  # fmt: skip
        if not (len(value) == digits and value.isascii() and value.isdigit()):
            errors.append(f"{name} is {digits} digits.")
    start = _parse_day(shown["start"], "From", errors)
    end = _parse_day(shown["end"], "To", errors)
    today = _today(request)
    if start is not None and end is not None:
        if start > end:
            errors.append("From must not be after To.")
        if start > today:
            errors.append("From must not be in the future.")
        if start < _years_before(today, MAX_YEARS_BACK):
            errors.append(f"From must not be more than {MAX_YEARS_BACK} years ago.")
    if errors or kind is None or start is None or end is None:
        return shown, errors, None
    # [start of `start`, start of the day after `end`), but never past now: nothing later has been sent. A `to` in
    # the future is today (its day after could be past the calendar's last day, 9999-12-31).
    now = console_of(request).varsel.clock.now()
    until = min(datetime.combine(min(end, today) + timedelta(days=1), time(), UTC), now)
    return shown, errors, RecipientQuery(kind, value, datetime.combine(start, time(), UTC), until)


@router.post("/recipients")
async def recipients_lookup(
    request: Request, principal: Principal = Depends(admin_only), form: FormData = Depends(checked_form)
) -> Response:
    shown, errors, query = _query(request, form)
    result: RecipientLookup | None = None
    if query is not None:
        result = await SupportService(console_of(request).varsel.database).recipient_lookup(query)
    context = {"form": shown, "errors": errors, "result": result}
    status = 400 if errors else 200
    if "hx-request" in request.headers:
        # htmx swaps only 2xx answers by default: the errors are shown in the results area all the same.
        return render(request, "recipients_results.html", context)
    return render(request, "recipients.html", context, status=status)


def _month(request: Request) -> tuple[UsageMonth | None, str | None]:
    """The month asked for in the query (year, month), this month by default."""
    today = _today(request)
    params = request.query_params
    try:
        year = int(params.get("year") or today.year)
        month = int(params.get("month") or today.month)
        return UsageMonth(year, month), None
    except ValueError:
        return None, f"Choose a month 1-12 of a year {MIN_YEAR}-{MAX_YEAR}."


@router.get("/usage")
async def usage_page(request: Request, principal: Principal = Depends(admin_only)) -> Response:
    month, error = _month(request)
    if month is None:
        today = _today(request)
        context: dict[str, Any] = {"year": today.year, "month": today.month, "error": error, "rows": [],
                                   "columns": USAGE_COLUMNS}  # fmt: skip
        return render(request, "usage.html", context, status=400)
    varsel = console_of(request).varsel
    usage = await varsel.usage.monthly(month)
    rows = usage_rows(usage)
    orgs = usage.orgs
    totals = [sum(o.orders for o in orgs), sum(o.emails for o in orgs), sum(o.successful_emails for o in orgs),
              sum(o.sms for o in orgs), sum(o.successful_sms for o in orgs), sum(o.simulated_emails for o in orgs),
              sum(o.simulated_sms for o in orgs)]  # fmt: skip
    context = {"year": month.year, "month": month.month, "error": None, "rows": rows, "totals": totals,
               "columns": USAGE_COLUMNS, "fresh_seconds": f"{varsel.settings.usage.fresh_seconds:g}",
               "counted_at": usage.counted_at.strftime("%Y-%m-%d %H:%M:%S") if usage.counted_at else None}  # fmt: skip
    return render(request, "usage.html", context)


@router.get("/usage.csv")
async def usage_download(request: Request, principal: Principal = Depends(admin_only)) -> Response:
    month, error = _month(request)
    if month is None:
        return Response(f"{error}\n", status_code=400, media_type="text/plain; charset=utf-8")
    usage = await console_of(request).varsel.usage.monthly(month)
    name = f"varsel-usage-{month.year:04d}-{month.month:02d}.csv"
    return Response(
        usage_csv(usage),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
