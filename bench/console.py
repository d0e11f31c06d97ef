"""The console's read side on a large database: every service call the Overview, Orders and Order pages make, timed
against the 300 ms goal (issue #17), on SQLite and PostgreSQL.

Seeds 1,000,000 notifications (100,000 with --quick) over 35 days for five service owners of very different sizes,
both channels, with the statuses, provider calls and delivery reports the pipeline writes (most delivered, some
failed, recent ones still queued, a few cancelled orders and v2 chains with reminders), in bulk (executemany in
large transactions), then ANALYZE (VACUUM ANALYZE on PostgreSQL), then times each call 20 times after two warm-ups,
first the services, then the pages, the support dashboard and the usage metrics through HTTP (over ASGI).

    python -m bench --only console [--db sqlite,postgres] [--quick]
    python -m bench.console --notifications 100000 --db sqlite       # this step alone
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text

from bench import data
from bench.common import summarize_ms
from varsel.app import build, create_app
from varsel.auth.keys import ensure_dev_key
from varsel.auth.tokens import sign_dev_token
from varsel.clock import FrozenClock
from varsel.console.principal import Principal
from varsel.console.repository import Cursor, OrderSearch, TimeField
from varsel.console.service import ConsoleReads, Period
from varsel.console.sessions import SESSION_COOKIE
from varsel.db.engine import Database
from varsel.db.migrate import migrate
from varsel.db.tables import (
    delivery_reports,
    email_notifications,
    notification_attempts,
    order_chains,
    orders,
    sms_notifications,
)
from varsel.notifications.statuses import OrderStatus
from varsel.orders.vocabulary import NotificationChannel, OrderType
from varsel.settings import Settings

FULL_NOTIFICATIONS = 1_000_000
QUICK_NOTIFICATIONS = 100_000
GOAL_MS = 300.0
DAYS = 35
# Service owners and their share of the orders: one large, some medium, one tiny.
OWNERS = {"big": 0.55, "nav": 0.25, "skatt": 0.12, "ttd": 0.07, "tiny": 0.01}
NOTIFICATIONS_PER_ORDER = 2.5
REPETITIONS = 20
WARMUP = 2
CHUNK = 20_000
# Distinct persons the notifications go to (about 200 each at a million notifications).
PERSONS = 5_000
METRICS_KEY = "bench-metrics-key"
# The moment the data set ends: the console's clock stands here, so "the last hour" has data.
END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Viewer:
    def __init__(self, org: str | None) -> None:
        self.org = org
        self.admin = org is None


def _email_status(rng: random.Random, age: timedelta) -> str:
    if age < timedelta(minutes=10) and rng.random() < 0.3:
        return "New"
    draw = rng.random()
    if draw < 0.82:
        return "Delivered"
    if draw < 0.9:
        return "Succeeded"
    if draw < 0.95:
        return "Failed_Bounced"
    if draw < 0.98:
        return "Failed_RecipientReserved"
    return "Failed_TTL"


def _sms_status(rng: random.Random, age: timedelta) -> str:
    if age < timedelta(minutes=10) and rng.random() < 0.3:
        return "New"
    draw = rng.random()
    if draw < 0.85:
        return "Delivered"
    if draw < 0.92:
        return "Accepted"
    if draw < 0.97:
        return "Failed_Undelivered"
    return "Failed_RecipientReserved"


async def seed(database: Database, notifications: int, seed_value: int = 17) -> dict[str, Any]:
    """Fill the database; answers what it wrote and a few ids and references the timings look up."""
    rng = random.Random(seed_value)
    order_count = int(notifications / NOTIFICATIONS_PER_ORDER)
    start = END - timedelta(days=DAYS)
    span = (END - start).total_seconds()
    owners = list(OWNERS)
    weights = list(OWNERS.values())
    written: dict[str, Any] = {"orders": 0, "email": 0, "sms": 0, "attempts": 0, "reports": 0, "chains": 0}
    samples: dict[str, Any] = {"orders": [], "references": []}
    made = 0
    began = time.perf_counter()
    while made < order_count:
        batch = min(CHUNK // 3, order_count - made)
        order_rows: list[dict[str, Any]] = []
        chain_rows: list[dict[str, Any]] = []
        rows: dict[str, list[dict[str, Any]]] = {"email": [], "sms": []}
        attempts: list[dict[str, Any]] = []
        reports: list[dict[str, Any]] = []
        for i in range(batch):
            index = made + i
            # Orders spread evenly over the days, newest last.
            created = start + timedelta(seconds=span * (index + rng.random()) / order_count)
            creator = rng.choices(owners, weights)[0]
            channel = rng.choice(("Email", "Email", "Sms", "EmailPreferred", "EmailAndSms"))
            order_id = uuid.uuid4()
            age = END - created
            requested = created + timedelta(seconds=rng.choice((0, 0, 0, 60, 3600)))
            status = OrderStatus.COMPLETED.value
            if requested > END:
                status = OrderStatus.REGISTERED.value
            elif age < timedelta(minutes=10):
                status = OrderStatus.PROCESSED.value
            if rng.random() < 0.005:
                status = OrderStatus.CANCELLED.value
            order_type = OrderType.NOTIFICATION.value
            chain_id = None
            position = None
            if rng.random() < 0.1:
                chain_id = uuid.uuid4()
                position = 0
                chain_rows.append(
                    {
                        "id": chain_id,
                        "creator": creator,
                        "family": "orders",
                        "idempotency_id": str(chain_id),
                        "idempotency_hash": chain_id.hex * 2,
                        "created": created,
                    }
                )
            reference = f"ref-{index % (order_count // 2 + 1)}"
            order_rows.append(
                {
                    "id": order_id,
                    "creator": creator,
                    "senders_reference": reference,
                    "notification_channel": channel,
                    "requested_send_time": requested,
                    "created": created,
                    "status": status,
                    "status_changed": created,
                    "process_after": requested,
                    "email_from_address": "noreply@example.com",
                    "email_subject": data.EMAIL_SUBJECT,
                    "email_body": data.EMAIL_BODY,
                    "email_content_type": "Plain",
                    "sms_sender": "Etat",
                    "sms_body": data.SMS_BODY,
                    "order_type": order_type,
                    "chain_id": chain_id,
                    "chain_position": position,
                }
            )
            if len(samples["orders"]) < 50 and rng.random() < 0.01:
                samples["orders"].append((creator, order_id))
                samples["references"].append((creator, reference))
            if status in (OrderStatus.REGISTERED.value, OrderStatus.CANCELLED.value):
                continue
            for _ in range(max(1, round(rng.expovariate(1 / NOTIFICATIONS_PER_ORDER)))):
                medium = "sms" if channel == "Sms" or (channel != "Email" and rng.random() < 0.4) else "email"
                status_n = (_email_status if medium == "email" else _sms_status)(rng, age)
                notification_id = uuid.uuid4()
                handed = requested + timedelta(seconds=rng.expovariate(1 / 2.0))
                final = handed + timedelta(seconds=rng.expovariate(1 / 30.0))
                row = {
                    "id": notification_id,
                    "order_id": order_id,
                    "creator": creator,
                    "status": status_n,
                    "status_changed": final if status_n != "New" else created,
                    "created": created,
                    "expiry": created + timedelta(days=2),
                    "send_after": requested,
                    "attempts": 0 if status_n == "New" else 1,
                    "provider": None if status_n == "New" else "bench",
                    "provider_reference": None if status_n == "New" else notification_id.hex,
                    "email_address" if medium == "email" else "mobile_number": data.EMAIL
                    if medium == "email"
                    else data.MOBILE,
                    # Persons (for the support dashboard's look-up): each gets a notification now and then.
                    "national_identity_number": f"2{rng.randrange(PERSONS):010d}",
                }
                rows[medium].append(row)
                if status_n in ("New", "Failed_RecipientReserved"):
                    continue
                if rng.random() < 0.05:
                    attempts.append(_attempt(medium, notification_id, 1, handed - timedelta(seconds=5), "retry"))
                attempts.append(_attempt(medium, notification_id, 2, handed, "accepted"))
                if status_n == "Delivered" and rng.random() < 0.2:
                    reports.append(
                        {
                            "id": uuid.uuid4(),
                            "channel": medium,
                            "provider": "bench",
                            "reference": str(notification_id),
                            "provider_reference": notification_id.hex,
                            "notification_id": notification_id,
                            "status": "Delivered",
                            "occurred": final,
                            "received": final,
                            "state": "applied",
                        }
                    )
        async with database.transaction() as conn:
            if chain_rows:
                await conn.execute(insert(order_chains), chain_rows)
            await conn.execute(insert(orders), order_rows)
            for medium, table in (("email", email_notifications), ("sms", sms_notifications)):
                if rows[medium]:
                    await conn.execute(insert(table), rows[medium])
            if attempts:
                await conn.execute(insert(notification_attempts), attempts)
            if reports:
                await conn.execute(insert(delivery_reports), reports)
        made += batch
        written["orders"] += len(order_rows)
        written["chains"] += len(chain_rows)
        written["email"] += len(rows["email"])
        written["sms"] += len(rows["sms"])
        written["attempts"] += len(attempts)
        written["reports"] += len(reports)
        if written["email"] + written["sms"] >= notifications:
            break
    # Statistics for the planners; on PostgreSQL also the visibility map (VACUUM, outside a transaction), which
    # autovacuum keeps in a running database and without which an index-only scan still reads every row.
    async with database.engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM ANALYZE" if database.dialect == "postgresql" else "ANALYZE"))
    written["seed_s"] = round(time.perf_counter() - began, 1)
    return {"written": written, "samples": samples}


def _attempt(medium: str, notification_id: uuid.UUID, number: int, started: datetime, outcome: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "channel": medium,
        "notification_id": notification_id,
        "attempt": number,
        "started": started,
        "finished": started + timedelta(milliseconds=150),
        "provider": "bench",
        "outcome": outcome,
        "status": ("Succeeded" if medium == "email" else "Accepted") if outcome == "accepted" else "New",
        "provider_reference": notification_id.hex if outcome == "accepted" else None,
        "detail": None if outcome == "accepted" else "503 Service Unavailable",
    }


async def _time(call: Callable[[], Awaitable[object]]) -> dict[str, float]:
    for _ in range(WARMUP):
        await call()
    durations = []
    for _ in range(REPETITIONS):
        began = time.perf_counter()
        await call()
        durations.append(time.perf_counter() - began)
    summary = summarize_ms(durations)
    ordered = sorted(durations)
    summary["p95_ms"] = round(ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)] * 1000, 2)
    return summary


async def measure(url: str, notifications: int, folder: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    database = Database(url)
    await migrate(database)
    say(f"console: seeding {notifications:,} notifications into {database.dialect}")
    seeded = await seed(database, notifications)
    say(f"console: seeded {seeded['written']}")
    settings = Settings(data_dir=folder / "var", trusted_hosts=["*"], metrics={"api_key": METRICS_KEY})
    varsel = build(settings, clock=FrozenClock(END), database=database)
    providers: dict[str, Any] = {"email": varsel.workers.email_provider, "sms": varsel.workers.sms_provider}
    reads = ConsoleReads(database, varsel.clock, varsel.orders, providers, varsel.status_days)
    creator, order_id = seeded["samples"]["orders"][0]
    _, reference = seeded["samples"]["references"][0]
    calls: dict[str, Callable[[], Awaitable[object]]] = {}
    week_of_sms_reminders = OrderSearch(
        order_type=OrderType.REMINDER,
        channel=NotificationChannel.SMS,
        time_field=TimeField.REQUESTED_SEND_TIME,
        since=END - timedelta(days=7),
    )
    for label, org in (("admin", None), ("big", "big"), ("tiny", "tiny")):
        viewer = Viewer(org)
        for period in Period:
            calls[f"overview {period.value} ({label})"] = functools.partial(reads.overview, viewer, period)
        calls[f"orders: newest ({label})"] = functools.partial(reads.search, viewer, OrderSearch())
        calls[f"orders: page after 30 days ({label})"] = functools.partial(
            reads.search, viewer, OrderSearch(), after=Cursor(END - timedelta(days=30), uuid.UUID(int=0))
        )
        calls[f"orders: Cancelled ({label})"] = functools.partial(
            reads.search, viewer, OrderSearch(status=OrderStatus.CANCELLED)
        )
        calls[f"orders: Reminder, Sms, last 7 days by send time ({label})"] = functools.partial(
            reads.search, viewer, week_of_sms_reminders
        )
    calls["orders: by sender's reference (owner)"] = lambda: reads.search(
        Viewer(creator), OrderSearch(senders_reference=reference)
    )
    calls["orders: by sender's reference (admin)"] = lambda: reads.search(
        Viewer(None), OrderSearch(senders_reference=reference)
    )
    calls["orders: by id (owner)"] = lambda: reads.search(Viewer(creator), OrderSearch(order_id=order_id))
    calls["order: chain and timelines (owner)"] = lambda: reads.chain(Viewer(creator), order_id)
    results: dict[str, Any] = {"seeded": seeded["written"], "calls": {}, "http": {}, "once": {}}
    # The Overview adds whole days up from the status rollup, which the housekeeping worker keeps counted. Without a
    # worker, the first view counts the month's days itself: measured once, before the steady state below.
    began = time.perf_counter()
    await reads.overview(Viewer(None), Period.MONTH)
    first_view = round((time.perf_counter() - began) * 1000, 1)
    results["once"]["overview month (admin), the rollup empty: the page counts 29 days"] = first_view
    label = "overview month (admin), once, the rollup empty (no worker ran)"
    say(f"{database.dialect:10} {label:62} {first_view:8.1f} ms")
    for name, call in calls.items():
        summary = await _time(call)
        results["calls"][name] = summary
        _report(say, database.dialect, name, summary)
    # The same through HTTP: the pages as a browser gets them (rendered), and the support dashboard and usage
    # metrics APIs, in process over ASGI (no network, no server: what the API process itself spends).
    app = create_app(varsel)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        requests = _http_requests(app.state.console.sessions, settings, creator, order_id, reference)
        for name, request in requests.items():
            answered: list[int] = []

            async def send(request: dict[str, Any] = request, answered: list[int] = answered) -> None:
                response = await client.request(**request)
                answered.append(response.status_code)

            http_summary: dict[str, Any] = {**await _time(send), "statuses": sorted(set(answered))}
            results["http"][name] = http_summary
            _report(say, database.dialect, f"HTTP {name}", http_summary)
    # The worker's round once the days it counted are older than half of freshness: it counts again the days not
    # settled (the last three, and any with an order still under way), what keeps each view a read.
    assert isinstance(varsel.clock, FrozenClock)
    varsel.clock.advance(varsel.status_days.refresh_every + timedelta(seconds=1))
    began = time.perf_counter()
    recounted = await varsel.status_days.refresh()
    round_ms = round((time.perf_counter() - began) * 1000, 1)
    results["once"][f"status rollup: the worker's round, {recounted} unsettled days recounted"] = round_ms
    say(f"{database.dialect:10} {f'status rollup: the worker round, {recounted} days recounted':62} {round_ms:8.1f} ms")
    await varsel.http.aclose()
    await database.dispose()
    return results


def _report(say: Callable[[str], None], dialect: str, name: str, summary: dict[str, Any]) -> None:
    flag = "" if summary["p95_ms"] <= GOAL_MS else "  OVER 300 ms"
    statuses = f"  HTTP {summary['statuses']}" if "statuses" in summary else ""
    say(f"{dialect:10} {name:62} p50 {summary['p50_ms']:8.1f} ms  p95 {summary['p95_ms']:8.1f} ms{flag}{statuses}")


def _http_requests(
    sessions: Any, settings: Settings, creator: str, order_id: uuid.UUID, reference: str
) -> dict[str, dict[str, Any]]:
    # Sent as a header: httpx deprecates cookies given per request.
    admin = {"Cookie": f"{SESSION_COOKIE}={sessions.dumps(sessions.new(Principal(org=None, admin=True)))}"}
    owner = {"Cookie": f"{SESSION_COOKIE}={sessions.dumps(sessions.new(Principal(org=creator, admin=False)))}"}
    key = ensure_dev_key(settings.dev_key_path)
    support = {
        "Authorization": "Bearer "
        + sign_dev_token(key, org="digdir", scopes=[settings.auth.support_scope], minutes=600, platform=False)
    }
    dashboard = "/notifications/api/v1/future/dashboard/recipients/notifications/nin"
    requests: dict[str, dict[str, Any]] = {}
    for period in Period:
        requests[f"/console/overview?period={period.value} (admin)"] = {
            "method": "GET", "url": f"/console/overview?period={period.value}", "headers": admin,
        }  # fmt: skip
    requests["/console/overview?period=month (owner)"] = {
        "method": "GET", "url": "/console/overview?period=month", "headers": owner,
    }  # fmt: skip
    requests["/console/orders (admin)"] = {"method": "GET", "url": "/console/orders", "headers": admin}
    requests["/console/orders, htmx next page (owner)"] = {
        "method": "GET",
        "url": "/console/orders",
        "params": {"after": f"{(END - timedelta(days=20)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}~{'0' * 32}"},
        "headers": {**owner, "HX-Request": "true"},
    }
    requests["/console/orders?reference= (owner)"] = {
        "method": "GET", "url": "/console/orders", "params": {"reference": reference}, "headers": owner,
    }  # fmt: skip
    requests["/console/orders?status=Cancelled (admin)"] = {
        "method": "GET", "url": "/console/orders", "params": {"status": "Cancelled"}, "headers": admin,
    }  # fmt: skip
    requests["/console/orders/{id} (owner)"] = {"method": "GET", "url": f"/console/orders/{order_id}", "headers": owner}
    requests["dashboard /nin (support scope)"] = {
        "method": "GET", "url": dashboard, "headers": {**support, "NationalIdentityNumber": f"2{17:010d}"},
    }  # fmt: skip
    requests["metrics /usage?format=json"] = {
        "method": "GET", "url": "/notifications/api/v1/metrics/usage", "params": {"month": "11", "year": "2026",
                                                                                "format": "json"},
    }  # fmt: skip
    for channel in ("sms", "email"):
        requests[f"metrics POST /{channel} (Parquet, yesterday)"] = {
            "method": "POST", "url": f"/notifications/api/v1/metrics/{channel}", "headers": {"X-API-Key": METRICS_KEY},
        }  # fmt: skip
    return requests


def bench_console(ctx: Any, db_kind: str, url: str) -> dict[str, Any]:
    """The `console` step of `python -m bench`: 1,000,000 notifications, or 100,000 with --quick."""
    quick = ctx.sizes.window_s < 10
    return asyncio.run(
        measure(url, QUICK_NOTIFICATIONS if quick else FULL_NOTIFICATIONS, ctx.tmp / f"console-{db_kind}", ctx.say)
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--notifications", type=int, default=FULL_NOTIFICATIONS)
    parser.add_argument("--db", default="sqlite,postgres")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="varsel-console-bench-"))
    try:
        for kind in args.db.split(","):
            url = asyncio.run(data.create_database(kind, f"console_{uuid.uuid4().hex[:8]}", folder / "db"))
            try:
                asyncio.run(measure(url, args.notifications, folder))
            finally:
                asyncio.run(data.drop_database(url))
    finally:
        data.remove_folder(folder)


if __name__ == "__main__":
    main()
