"""The usage rollup under the monthly summary (usage_days, migration 0010): a month summed from its counted days equals
the live count; a day that can still change is counted again once its count is older than `freshness` (by the
injected clock, never by sleeping); a settled day never is; the background round backfills in bounded steps; the
pages and the API say when the figures were counted. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, update

from tests.conftest import NOW
from tests.support.helpers import email, order, seed, sms
from varsel.app import Varsel, create_app
from varsel.clock import FrozenClock
from varsel.console.principal import Principal
from varsel.console.sessions import SESSION_COOKIE
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, orders, usage_days
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.support import repository
from varsel.support.service import OrgUsage, UsageMonth, UsageService

# Ten days into March: February and early March are old enough to settle, the last days of it are not, and the
# rest of March is still ahead.
START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
FRESH = timedelta(seconds=60)
SETTLE = timedelta(hours=72)
JANUARY, FEBRUARY, MARCH, APRIL = (UsageMonth(2026, m) for m in (1, 2, 3, 4))
METRICS = "/notifications/api/v1/metrics"


def _service(database: Database, clock: FrozenClock, **options: Any) -> UsageService:
    return UsageService(database, clock, freshness=FRESH, settle_after=SETTLE, **options)


async def _live(database: Database, month: UsageMonth) -> tuple[OrgUsage, ...]:
    """The month counted from the orders and notifications themselves, as the summary did before the rollup."""
    async with database.read() as conn:
        rows = await repository.usage_between(conn, month.start, month.end)
    return tuple(
        OrgUsage(r.creator, r.orders, r.emails, r.successful_emails, r.sms_segments, r.successful_sms) for r in rows
    )


async def _counted(database: Database) -> dict[date, repository.CountedDay]:
    async with database.read() as conn:
        return await repository.counted_days(conn, date(2000, 1, 1), date(9999, 12, 31))


def _random_orders(
    rng: random.Random, count: int, first: datetime = datetime(2026, 1, 25, tzinfo=UTC), days: int = 72
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Orders of four owners over `days` days from `first` (by default late January to early April: March's second
    half and April are still ahead of the clock, scheduled), some at a day's first or last instant, each with 0-3
    emails and 0-3 SMS of any status."""
    statuses = [OrderStatus.COMPLETED.value] * 6 + [s.value for s in OrderStatus]
    made: list[dict[str, Any]] = []
    emails: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []
    for _ in range(count):
        day = first + timedelta(days=rng.randrange(days))
        edge = rng.random()
        if edge < 0.1:
            at = day
        elif edge < 0.2:
            at = day + timedelta(days=1) - timedelta(microseconds=1)
        else:
            at = day + timedelta(seconds=rng.randrange(86_400))
        owner = order(rng.choice(["ttd", "nav", "skatt", "digdir"]), at, status=rng.choice(statuses))
        made.append(owner)
        emails += [email(owner, status=rng.choice(list(EmailStatus)).value) for _ in range(rng.randrange(4))]
        texts += [
            sms(owner, status=rng.choice(list(SmsStatus)).value, segments=rng.choice([None, 1, 2, 3, 7]))
            for _ in range(rng.randrange(4))
        ]
    return made, emails, texts


async def test_the_rollups_months_equal_the_live_count_over_random_data(database: Database) -> None:
    rng = random.Random(17)
    await seed(database, *_random_orders(rng, 600))
    clock = FrozenClock(START)
    usage = _service(database, clock)
    # The background round counts the newest 31 days (the older ones are counted when a page asks for them) ...
    assert await usage.refresh() == 31
    # ... then more orders come, on the days that cannot be settled yet and ahead (as varsel makes them: an order is
    # never requested for a day long past), and time passes.
    await seed(database, *_random_orders(rng, 200, datetime(2026, 3, 7, tzinfo=UTC), 30))
    clock.advance(FRESH + timedelta(seconds=1))
    for month in (JANUARY, FEBRUARY, MARCH, APRIL):
        summary = await usage.monthly(month)
        live = await _live(database, month)
        assert live, month
        assert summary.orgs == live, month
    assert any(not day.settled for day in (await _counted(database)).values())


async def test_the_rollups_months_equal_the_live_count_when_counted_on_demand(database: Database) -> None:
    await seed(database, *_random_orders(random.Random(18), 600))
    usage = _service(database, FrozenClock(START))
    for month in (JANUARY, FEBRUARY, MARCH, APRIL):
        assert (await usage.monthly(month)).orgs == await _live(database, month), month


async def test_an_order_added_after_counting_shows_once_freshness_has_passed(database: Database) -> None:
    early = order("ttd", START - timedelta(hours=1))
    await seed(database, [early], [email(early)], [sms(early, segments=2)])
    clock = FrozenClock(START)
    usage = _service(database, clock)
    first = await usage.monthly(MARCH)
    assert first.orgs == (OrgUsage("ttd", 1, 1, 1, 2, 1),)
    assert first.counted_at == START

    late = order("nav", START - timedelta(minutes=30))
    await seed(database, [late], [email(late, status="Failed_Bounced")])
    clock.advance(FRESH)
    # Exactly as old as freshness: still fresh.
    assert await usage.monthly(MARCH) == first
    clock.advance(timedelta(seconds=1))
    fresh = await usage.monthly(MARCH)
    assert fresh.orgs == (OrgUsage("nav", 1, 1, 0, 0, 0), OrgUsage("ttd", 1, 1, 1, 2, 1))
    assert fresh.orgs == await _live(database, MARCH)
    counted = await _counted(database)
    # Today and the days not yet settled were counted again; 1-6 March settled at the first count and kept it, so
    # the month's oldest count is still the first.
    assert counted[date(2026, 3, 10)].counted_at == START + FRESH + timedelta(seconds=1)
    assert counted[date(2026, 3, 6)] == repository.CountedDay(START, settled=True)
    assert fresh.counted_at == START


async def test_a_settled_day_is_never_counted_again(database: Database) -> None:
    february = order("ttd", datetime(2026, 2, 3, 12, tzinfo=UTC))
    await seed(database, [february], [email(february)], [sms(february, segments=2)])
    clock = FrozenClock(START)
    usage = _service(database, clock)
    before = await usage.monthly(FEBRUARY)
    assert before.orgs == (OrgUsage("ttd", 1, 1, 1, 2, 1),)
    counted = await _counted(database)
    assert len(counted) == 28
    assert all(day.settled for day in counted.values())

    # Changed behind the rollup's back: the live count differs, the settled day does not.
    async with database.transaction() as conn:
        await conn.execute(
            update(email_notifications)
            .where(email_notifications.c.order_id == february["id"])
            .values(status="Failed_Bounced")
        )
        await conn.execute(insert(orders).values(**order("ttd", datetime(2026, 2, 3, 13, tzinfo=UTC))))
    clock.advance(timedelta(days=2))
    while await usage.refresh():
        pass
    after = await usage.monthly(FEBRUARY)
    assert after == before
    assert await _live(database, FEBRUARY) != before.orgs
    assert (await _counted(database))[date(2026, 2, 3)].counted_at == START


@pytest.mark.parametrize("status", ["Registered", "Processing", "Processed"])
async def test_an_old_day_with_an_unfinished_order_is_not_settled_until_it_finishes(
    database: Database, status: str
) -> None:
    stuck = order("ttd", datetime(2026, 2, 3, 12, tzinfo=UTC), status=status)
    ended = [order("nav", datetime(2026, 2, 4, 12, tzinfo=UTC), status=s) for s in ("Cancelled", "SendConditionNotMet")]
    await seed(database, [stuck, *ended], [email(stuck, status="New")])
    clock = FrozenClock(START)
    usage = _service(database, clock)
    assert (await usage.monthly(FEBRUARY)).orgs == (OrgUsage("nav", 2, 0, 0, 0, 0), OrgUsage("ttd", 1, 1, 0, 0, 0))
    counted = await _counted(database)
    assert not counted[date(2026, 2, 3)].settled
    assert counted[date(2026, 2, 4)].settled

    # It finishes: the next round after freshness counts the day again and settles it.
    async with database.transaction() as conn:
        await conn.execute(update(orders).where(orders.c.id == stuck["id"]).values(status="Completed"))
        await conn.execute(
            update(email_notifications).where(email_notifications.c.order_id == stuck["id"]).values(status="Delivered")
        )
    clock.advance(FRESH + timedelta(seconds=1))
    assert await usage.refresh() >= 1
    counted = await _counted(database)
    assert counted[date(2026, 2, 3)] == repository.CountedDay(clock.now(), settled=True)
    assert (await usage.monthly(FEBRUARY)).orgs == await _live(database, FEBRUARY)


async def test_a_day_settles_only_once_its_end_is_settle_after_ago(database: Database) -> None:
    day = date(2026, 3, 6)
    ends = datetime(2026, 3, 7, tzinfo=UTC)
    finished = order("ttd", datetime(2026, 3, 6, 8, tzinfo=UTC))
    await seed(database, [finished], [email(finished)])
    clock = FrozenClock(ends + SETTLE - timedelta(microseconds=1))
    usage = _service(database, clock)
    await usage.monthly(MARCH)
    assert not (await _counted(database))[day].settled
    clock.set(ends + SETTLE + FRESH)
    await usage.monthly(MARCH)
    assert (await _counted(database))[day].settled


async def test_days_without_orders_are_counted_once(database: Database) -> None:
    clock = FrozenClock(START)
    usage = _service(database, clock)
    january = await usage.monthly(JANUARY)
    assert january.orgs == ()
    assert january.counted_at == START
    counted = await _counted(database)
    assert sorted(counted) == [date(2026, 1, 1) + timedelta(days=n) for n in range(31)]
    assert all(day.settled for day in counted.values())
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(usage_days))).scalar() == 0
    clock.advance(timedelta(days=3))
    assert (await usage.monthly(JANUARY)).counted_at == START
    # A month still ahead has nothing counted: its scheduled orders are counted live, and it says so.
    april = order("ttd", datetime(2026, 4, 2, tzinfo=UTC))
    await seed(database, [april])
    ahead = await usage.monthly(APRIL)
    assert ahead.orgs == (OrgUsage("ttd", 1, 0, 0, 0, 0),)
    assert ahead.counted_at is None
    assert not any(day >= date(2026, 4, 1) for day in await _counted(database))


async def test_refresh_backfills_uncounted_days_in_bounded_steps_newest_first(database: Database) -> None:
    today = START.date()
    # The first order on 31 December: the backfill reaches back to 1 December, so that its month is whole.
    await seed(database, [order("ttd", datetime(2025, 12, 31, 9, tzinfo=UTC))])
    first = date(2025, 12, 1)
    days = (today - first).days + 1
    assert days == 100
    clock = FrozenClock(START)
    usage = _service(database, clock, refresh_days=31)
    assert await usage.refresh() == 31
    assert sorted(await _counted(database)) == [today - timedelta(days=n) for n in range(30, -1, -1)]
    assert await usage.refresh() == 31
    assert await usage.refresh() == 31
    assert await usage.refresh() == days - 93
    assert await usage.refresh() == 0
    assert sorted(await _counted(database)) == [first + timedelta(days=n) for n in range(days)]
    # Later, only the unsettled days are counted again (the last four: their end is under three days ago), once
    # half of freshness has passed: ahead of a page, which would count them after freshness.
    clock.advance(usage.refresh_every)
    assert await usage.refresh() == 0
    clock.advance(timedelta(seconds=1))
    assert await usage.refresh() == 4
    assert await usage.refresh() == 0
    assert [day for day, counted in (await _counted(database)).items() if not counted.settled] == [
        today - timedelta(days=n) for n in range(3, -1, -1)
    ]


async def test_the_workers_round_is_the_refresh_and_stops_with_the_others(
    varsel: Varsel, database: Database, clock: FrozenClock
) -> None:
    assert varsel.workers.usage is varsel.usage
    assert varsel.usage.freshness == timedelta(seconds=varsel.settings.usage.fresh_seconds)
    early = order("ttd", NOW - timedelta(hours=2))
    await seed(database, [early])
    # The loop's round, called directly: it counts today and every day back to the first order's month's first.
    assert await varsel.workers.usage.refresh() == 2
    late = order("nav", NOW - timedelta(hours=1))
    await seed(database, [late])
    clock.advance(varsel.usage.refresh_every + timedelta(seconds=1))
    assert await varsel.workers.usage.refresh() == 2
    # What the page then reads was counted by the round, not by the page.
    clock.advance(varsel.usage.freshness - varsel.usage.refresh_every)
    summary = await varsel.usage.monthly(UsageMonth(2026, 3))
    assert [o.org for o in summary.orgs] == ["nav", "ttd"]
    assert summary.counted_at == clock.now() - (varsel.usage.freshness - varsel.usage.refresh_every)

    # Started as the housekeeping worker's, the loop runs its rounds until one finds nothing due, then waits; asked
    # to stop, it is woken and ends by itself within the grace period (it would be cut off, cancelled, if it slept
    # on through its 30 s).
    rounds = _Rounds(varsel.usage)
    varsel.workers.usage = rounds  # type: ignore[assignment]
    clock.advance(varsel.usage.freshness + timedelta(seconds=1))
    varsel.workers.start(["expiry"])
    loops = list(varsel.workers._loops)
    # The sweep, the usage rollup's round and the status rollup's.
    assert len(loops) == 3
    await asyncio.wait_for(rounds.idle.wait(), 20)
    # 1 and 2 March, neither settled yet.
    assert rounds.counted == 2
    await varsel.workers.stop(grace_seconds=10)
    assert all(loop.done() and not loop.cancelled() for loop in loops)


class _Rounds:
    """The usage service as the loop calls it, noting what its rounds counted and when one found nothing due (the
    loop waits after such a round)."""

    def __init__(self, usage: UsageService) -> None:
        self._usage = usage
        self.freshness = usage.freshness
        self.refresh_every = usage.refresh_every
        self.counted = 0
        self.idle = asyncio.Event()

    async def refresh(self, now: datetime | None = None) -> int:
        done = await self._usage.refresh(now)
        self.counted += done
        if not done:
            self.idle.set()
        return done


async def _march(database: Database) -> None:
    ttd = order("ttd", NOW - timedelta(hours=1))
    await seed(database, [ttd], [email(ttd)])


async def test_the_metrics_api_says_when_it_was_counted(client: httpx.AsyncClient, database: Database) -> None:
    await _march(database)
    params = {"month": "3", "year": "2026"}
    as_json = await client.get(f"{METRICS}/usage", params=params)
    as_csv = await client.get(f"{METRICS}/usage", params={**params, "format": "csv"})
    page = await client.post(METRICS, data=params)
    ahead = await client.get(f"{METRICS}/usage", params={"month": "5", "year": "2026"})
    assert as_json.status_code == as_csv.status_code == page.status_code == 200
    assert as_json.headers["X-Usage-Counted-At"] == "2026-03-02T10:00:00Z"
    assert as_json.json()["metrics"][0]["ordersCreated"] == 1
    assert as_csv.headers["X-Usage-Counted-At"] == "2026-03-02T10:00:00Z"
    assert "Counted at 2026-03-02 10:00:00 UTC; today's and recent days' counts are refreshed every 60 s." in page.text
    assert "X-Usage-Counted-At" not in ahead.headers


async def test_the_console_usage_page_says_when_it_was_counted(varsel: Varsel, database: Database) -> None:
    await _march(database)
    app = create_app(varsel)
    codec = app.state.console.sessions
    cookie = str(codec.dumps(codec.new(Principal(org=None, admin=True))))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://varsel.test", cookies={SESSION_COOKIE: cookie}
    ) as client:
        page = await client.get("/console/usage", params={"year": "2026", "month": "3"})
    assert page.status_code == 200, page.text
    assert "Counted at 2026-03-02 10:00:00 UTC; today's and recent days' counts are refreshed\nevery 60 s." in page.text
