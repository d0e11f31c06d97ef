"""The Orders pages: search (htmx results, keyset "next" link) and an order with its chain and timelines, cancelled
from there while it may be. The Overview page is in pages_overview.py. Data from varsel.console.service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from varsel.console.principal import Principal
from varsel.console.service import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    ConsoleReads,
    HealthSource,
    InvalidCursor,
    OrderSearch,
    TimeField,
    decode_cursor,
    encode_cursor,
)
from varsel.console.sessions import checked_form, signed_in
from varsel.console.web import PREFIX, ConsoleNotFound, console_of, render
from varsel.notifications.statuses import OrderStatus
from varsel.orders.service import OrderNotCancellable, OrderNotFound
from varsel.orders.vocabulary import NotificationChannel, OrderType
from varsel.providers.guard import ProviderGuard

router = APIRouter(prefix=f"{PREFIX}/orders", include_in_schema=False)


def console_reads(request: Request) -> ConsoleReads:
    """The read service on this process's database, order service and provider guards."""
    varsel = console_of(request).varsel
    guards: dict[str, HealthSource] = {}
    for channel, provider in (("email", varsel.workers.email_provider), ("sms", varsel.workers.sms_provider)):
        if isinstance(provider, ProviderGuard):
            guards[channel] = provider
    dispatch = varsel.settings.dispatch
    return ConsoleReads(
        varsel.database,
        varsel.clock,
        varsel.orders,
        guards,
        varsel.status_days,
        sms_daytime=dispatch.sms_daytime,
        condition_failure_policy=dispatch.condition_failure_policy,
    )


def _time(text: str, field: str) -> datetime | None:
    """A datetime-local input's value, read as UTC (the console shows every time in UTC)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise _BadSearch(f"{field} must be a date and time (YYYY-MM-DDTHH:MM).") from None
    except OverflowError:
        # An offset that takes the first or last minute of the calendar out of it.
        raise _BadSearch(f"{field} must be within years 1 to 9999 in UTC.") from None


class _BadSearch(Exception):
    pass


def _choice(enum: Any, text: str, field: str) -> Any:
    if not text:
        return None
    try:
        return enum(text)
    except ValueError:
        raise _BadSearch(f"{field} must be one of: {', '.join(e.value for e in enum)}.") from None


def _search_of(params: Any) -> OrderSearch:
    if any("\x00" in value for value in params.values()):
        # PostgreSQL refuses text with NUL in it: an error of the database's, where the search has a reason to give.
        raise _BadSearch("The search must not contain NUL characters.")
    order_id = None
    if text := params.get("id", "").strip():
        try:
            order_id = UUID(text)
        except ValueError:
            raise _BadSearch("The order, shipment or chain id must be a UUID.") from None
    return OrderSearch(
        senders_reference=params.get("reference", "").strip() or None,
        order_id=order_id,
        status=_choice(OrderStatus, params.get("status", ""), "Status"),
        order_type=_choice(OrderType, params.get("type", ""), "Type"),
        channel=_choice(NotificationChannel, params.get("channel", ""), "Channel"),
        time_field=_choice(TimeField, params.get("time", ""), "Time") or TimeField.CREATED,
        since=_time(params.get("since", ""), "From"),
        until=_time(params.get("until", ""), "To"),
    )


@router.get("")
async def orders_page(request: Request, principal: Principal = Depends(signed_in)) -> Response:
    params = request.query_params
    context: dict[str, Any] = {
        "form": {
            key: params.get(key, "")
            for key in ("reference", "id", "status", "type", "channel", "time", "since", "until")
        },
        "statuses": [s.value for s in OrderStatus],
        "types": [t.value for t in OrderType],
        "channels": [c.value for c in NotificationChannel],
        "error": None,
        "page": None,
        "next": None,
    }
    status = 200
    try:
        search = _search_of(params)
        after = decode_cursor(params["after"]) if params.get("after") else None
        page = await console_reads(request).search(principal, search, after=after, page_size=PAGE_SIZE)
        context["page"] = page
        if page.next is not None:
            query = dict(params)
            query["after"] = encode_cursor(page.next)
            context["next"] = query
    except _BadSearch as error:
        context["error"] = str(error)
        status = 400
    except InvalidCursor:
        context["error"] = "That page of results does not exist: search again."
        status = 400
    template = "orders_results.html" if "hx-request" in request.headers else "orders.html"
    return render(request, template, context, status=status)


def _order_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise ConsoleNotFound("No such order.") from None


@router.get("/{order_id}")
async def order_page(request: Request, order_id: str, principal: Principal = Depends(signed_in)) -> Response:
    return await _order(request, principal, _order_id(order_id))


async def _order(
    request: Request, principal: Principal, order_id: UUID, notice: str | None = None, status: int = 200
) -> Response:
    try:
        view = await console_reads(request).chain(principal, order_id)
    except OrderNotFound:
        raise ConsoleNotFound("No such order.") from None
    return render(request, "order.html", {"view": view, "notice": notice, "max_page": MAX_PAGE_SIZE}, status=status)


@router.post("/{order_id}/cancel")
async def cancel_order(
    request: Request,
    order_id: str,
    principal: Principal = Depends(signed_in),
    form: FormData = Depends(checked_form),
) -> Response:
    wanted = _order_id(order_id)
    try:
        await console_reads(request).cancel(principal, wanted)
    except OrderNotFound:
        raise ConsoleNotFound("No such order.") from None
    except OrderNotCancellable as refused:
        return await _order(request, principal, wanted, notice=refused.detail, status=409)
    return RedirectResponse(f"{PREFIX}/orders/{wanted}", status_code=303)
