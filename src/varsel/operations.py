"""Endpoints for operators, not service owners: Prometheus metrics and health checks. No token: they show no
order or person data, and scrapers and orchestrators have none to give."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from varsel.dispatch import repository

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
