"""A flood of delivery reports never takes order intake down, on SQLite (one writer at a time) and PostgreSQL.

One LINK Mobility post of 10,000 reports for references nobody knows is stored, and the report worker retries them
as pending, while orders keep arriving: every order is answered 202. Before, the post and then the retries held
SQLite's write lock nearly without a break, and POST /orders answered 503 after the 10 s busy timeout, again and
again. A setting caps how many reports one request may carry (413 above it).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.providers.test_delivery_reports import EMAIL, LINK_URL, SMS, Channel, _event, _with_reports
from varsel.app import Varsel
from varsel.db.tables import delivery_reports
from varsel.settings import ReportSettings, Settings

V1 = "/notifications/api/v1"
GATE = ("linkgate", "rapport-hemmelig")
FLOOD = 10_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return _with_reports(settings)


def _unknown_reports(count: int) -> bytes:
    # As small as a LINK Mobility report gets: some 70 bytes each, 10,000 well under the 1 MB body limit.
    return json.dumps([{"refId": str(uuid.uuid4()), "resultCode": 1001} for _ in range(count)]).encode()


async def _retried(varsel: Varsel) -> int:
    """How many retries of pending reports the worker has made so far."""
    async with varsel.database.read() as conn:
        total = await conn.execute(select(func.coalesce(func.sum(delivery_reports.c.attempts - 1), 0)))
        return int(total.scalar_one())


class TestFlood:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        # Pending reports due again at once (retry_seconds 0): the report worker retries the flood without a pause
        # of the retry policy's, the hardest case for intake. The cap is raised to let the whole flood in one post.
        return _with_reports(settings, retry_seconds=0.0, max_reports_per_request=FLOOD)

    async def test_orders_keep_being_taken_while_a_flood_of_reports_is_received_and_retried(
        self, client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], varsel: Varsel
    ) -> None:
        flood = _unknown_reports(FLOOD)
        assert len(flood) < ReportSettings().max_body_bytes
        order = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": "a@example.com"}]}
        taken = 0
        # On SQLite the flood is retried three times over: without pauses of its own, a backlog this size held the
        # one write lock for longer than intake waits for it. PostgreSQL has no such lock; once shows it works there.
        rounds = 3 if varsel.database.dialect == "sqlite" else 1
        varsel.workers.start(kinds=["reports"])
        posted = asyncio.create_task(
            client.post(LINK_URL, content=flood, headers={"Content-Type": "application/json"}, auth=GATE)
        )
        try:
            # Orders arrive one after another until the flood is in and the worker has retried it.
            while not posted.done() or await _retried(varsel) < rounds * FLOOD:
                response = await client.post(f"{V1}/orders/email", json=order, headers=auth())
                assert response.status_code == 202, (taken, response.text)
                taken += 1
            answer = await posted
        finally:
            posted.cancel()
            await varsel.workers.stop()
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": FLOOD, "states": {"pending": FLOOD}}
        assert taken > 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("channel", [SMS, EMAIL], ids=["linkmobility", "acs"])
async def test_a_request_with_more_reports_than_the_cap_is_refused_with_413(
    client: httpx.AsyncClient, varsel: Varsel, channel: Channel
) -> None:
    cap = ReportSettings().max_reports_per_request
    if channel is SMS:
        reports: list[Any] = [{"refId": str(uuid.uuid4()), "resultCode": 1001} for _ in range(cap + 1)]
    else:
        reports = [_event(str(uuid.uuid4()), "Delivered") for _ in range(cap + 1)]
    too_many = await channel.post(client, json.dumps(reports).encode())
    assert too_many.status_code == 413, too_many.text
    assert too_many.headers["content-type"].startswith("application/problem+json")
    assert too_many.json()["detail"] == f"A request may carry at most {cap} delivery reports; this one has {cap + 1}."
    async with varsel.database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(delivery_reports))).scalar_one() == 0
    at_the_cap = await channel.post(client, json.dumps(reports[:cap]).encode())
    assert at_the_cap.json() == {"received": cap, "states": {"pending": cap}}
