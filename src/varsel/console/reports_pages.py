"""Delivery reports (admin): reports that matched no notification in time (dead) and those still being retried
(pending), newest first and keyset-paged; dead ones can be tried again, one or all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from varsel.console.principal import Principal
from varsel.console.sessions import admin_only, checked_form
from varsel.console.web import PREFIX, ConsoleNotFound, console_of, render
from varsel.reports.service import DeliveryReports, ReportState

router = APIRouter(prefix=f"{PREFIX}/reports", include_in_schema=False)

PAGE_SIZE = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _cursor(row: Any) -> str:
    # Exact integer microseconds and the id: a float timestamp would lose the last microsecond and skip a row.
    return f"{(row.received - _EPOCH) // _MICROSECOND}_{row.id.hex}"


def _parse_cursor(text: str | None) -> tuple[datetime, UUID] | None:
    if not text:
        return None
    micros, _, report_id = text.partition("_")
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), UUID(hex=report_id)
    except (ValueError, OverflowError) as error:
        raise ConsoleNotFound("That page of reports does not exist.") from error


def _reports(request: Request) -> DeliveryReports:
    service: DeliveryReports = console_of(request).varsel.reports
    return service


async def _listing(request: Request, state: ReportState, cursor: str | None) -> dict[str, Any]:
    # One row more than shown says whether there is a next page, without counting.
    rows = await _reports(request).page(state, _parse_cursor(cursor), PAGE_SIZE + 1)
    shown = rows[:PAGE_SIZE]
    return {"rows": shown, "next": _cursor(shown[-1]) if len(rows) > PAGE_SIZE else None, "paged": bool(cursor)}


async def _section(request: Request, notice: str | None = None) -> dict[str, Any]:
    params = request.query_params
    return {
        "dead": await _listing(request, ReportState.DEAD, params.get("dead_before")),
        "pending": await _listing(request, ReportState.PENDING, params.get("pending_before")),
        "notice": notice,
    }


@router.get("")
async def reports_page(request: Request, principal: Principal = Depends(admin_only)) -> Response:
    return render(request, "reports.html", await _section(request))


@router.post("/retry")
async def retry_reports(
    request: Request, principal: Principal = Depends(admin_only), form: FormData = Depends(checked_form)
) -> Response:
    chosen = form.get("report")
    if form.get("all") == "1":
        ids: list[UUID] | None = None
    elif isinstance(chosen, str):
        try:
            ids = [UUID(chosen)]
        except ValueError as error:
            raise ConsoleNotFound("No such delivery report.") from error
    else:
        raise ConsoleNotFound("No such delivery report.")
    revived = await _reports(request).retry(ids)
    notice = (
        f"{revived} dead report{'s' if revived != 1 else ''} will be tried again now."
        if revived
        else ("Nothing to retry: the report is no longer dead.")
    )
    if "hx-request" in request.headers:
        return render(request, "reports_section.html", await _section(request, notice))
    return RedirectResponse(f"{PREFIX}/reports", status_code=303)
