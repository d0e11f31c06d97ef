"""Endpoints for operators, not service owners: Prometheus metrics and health checks. No token: they show no
order or person data, and scrapers and orchestrators have none to give."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from varsel.dispatch import repository
from varsel.problems import Problem

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    varsel = request.app.state.varsel
    telemetry = varsel.telemetry
    now = varsel.clock.now()
    # The queue is read from the database, so every process shows the whole queue, whoever works on it.
    async with varsel.database.read() as conn:
        snapshot = await repository.queue_snapshot(conn, now)
        awaiting = await repository.awaiting_report_counts(conn)
    for work, (depth, oldest) in snapshot.items():
        telemetry.set_queue(work, depth, oldest, now)
    for channel, count in awaiting.items():
        telemetry.awaiting_report.labels(channel).set(count)
    return Response(telemetry.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers: nothing more is checked, so a database outage does not get the process restarted."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    """Ready to take orders: the database answers."""
    varsel = request.app.state.varsel
    await varsel.database.ping()
    return Response('{"status":"ok"}', media_type="application/json")


@router.get("/notifications/api/v1/tests/sendcondition")
async def test_send_condition(request: Request) -> Response:
    """A send condition to point test orders at, as the reference has: `?conditionMet=true` answers
    {"sendNotification": true}; anything else, a missing or unreadable value included, false. No token: it says
    nothing about anyone."""
    content_type = request.headers.get("content-type")
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise Problem(415, detail="This endpoint takes no body other than JSON.")
    # Query names match in any case, as ASP.NET binds them.
    values = [value for name, value in request.query_params.multi_items() if name.lower() == "conditionmet"]
    met = bool(values) and values[0].strip().lower() == "true"
    return Response(f'{{"sendNotification":{"true" if met else "false"}}}', media_type="application/json")
