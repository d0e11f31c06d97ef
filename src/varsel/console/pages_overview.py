"""The Overview page: a period's orders and notifications by channel and status, delivery rate, latencies, queues
and provider health, as figures and charts (uPlot, drawn by static/overview.js from the page's JSON data)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from markupsafe import Markup

from varsel.console.pages_orders import console_reads
from varsel.console.principal import Principal
from varsel.console.service import Overview, Period
from varsel.console.sessions import signed_in
from varsel.console.web import PREFIX, render

router = APIRouter(prefix=f"{PREFIX}/overview", include_in_schema=False)

PERIOD_LABELS = {Period.HOUR: "Last hour", Period.DAY: "24 hours", Period.WEEK: "7 days", Period.MONTH: "30 days"}


def _chart_data(overview: Overview) -> dict[str, Any]:
    """What the charts draw: per channel, its statuses and their counts (a bar per status)."""
    return {
        "channels": [
            {
                "channel": figures.channel,
                "statuses": list(figures.by_status),
                "counts": list(figures.by_status.values()),
            }
            for figures in overview.channels
        ],
        "orders": [
            {"channel": channel, "statuses": list(by_status), "counts": list(by_status.values())}
            for channel, by_status in sorted(overview.orders.items())
        ],
    }


@router.get("")
async def overview_page(request: Request, principal: Principal = Depends(signed_in)) -> Response:
    try:
        period = Period(request.query_params.get("period", Period.DAY.value))
    except ValueError:
        period = Period.DAY
    overview = await console_reads(request).overview(principal, period)
    # JSON for the chart script, in a <script type="application/json"> block (the CSP allows no inline script);
    # "<" is escaped so that no status text can close the block.
    data = json.dumps(_chart_data(overview)).replace("<", "\\u003c")
    return render(
        request,
        "overview.html",
        {"overview": overview, "period": period, "periods": PERIOD_LABELS, "chart_data": Markup(data)},
    )
