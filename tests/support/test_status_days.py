"""The status rollup under the console's Overview (status_days, migration 0011): a period's counts added up from whole
days of the rollup and its partial first and last day counted live equal the counts of every row; a day that can
still change is counted again once its count is older than `freshness` (by the injected clock); a settled day never
is; the housekeeping worker's round backfills the last month in bounded steps and forgets older days. On SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, update

from tests.support.helpers import email, order, seed, sms
from varsel.app import Varsel, create_app
from varsel.clock import FrozenClock
from varsel.console.principal import Principal
from varsel.console.service import ConsoleReads, Overview, Period
from varsel.console.sessions import SESSION_COOKIE
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, orders
from varsel.notifications.statuses import EmailStatus, OrderStatus, SmsStatus
from varsel.support import repository_status_days as repository
from varsel.support.repository import CountedDay
from varsel.support.status_days import KEEP_DAYS, StatusDays

# Mid-day, so that every period but the hour has a partial first and last day.
START = datetime(2026, 3, 10, 13, 17, 5, tzinfo=UTC)
FRESH = timedelta(seconds=60)
SETTLE = timedelta(hours=72)
OWNERS = ["ttd", "nav", "skatt"]


class Viewer:
    def __init__(self, org: str | None) -> None:
        self.org = org
        self.admin = org is None


ADMIN = Viewer(None)


def _rollup(database: Database, clock: FrozenClock, **options: Any) -> StatusDays:
    return StatusDays(database, clock, freshness=FRESH, settle_after=SETTLE, **options)


def _reads(varsel: Varsel, clock: FrozenClock, status_days: StatusDays | None) -> ConsoleReads:
    return ConsoleReads(varsel.database, clock, varsel.orders, {}, status_days)


def _moment(rng: random.Random, first: datetime, days: int) -> datetime:
    """A moment of one of the `days` days from `first`; one in five at a day's first or last instant."""
    day = first + timedelta(days=rng.randrange(days))
    edge = rng.random()
    if edge < 0.1:
        return day
    if edge < 0.2:
        return day + timedelta(days=1) - timedelta(microseconds=1)
    return day + timedelta(seconds=rng.randrange(86_400), microseconds=rng.randrange(1_000_000))


def _random_rows(
    rng: random.Random, count: int, first: datetime, days: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Orders of three owners created over `days` days from `first`, of every status and channel; each with 0-3
    emails and 0-3 SMS of any status, created when the order was or some hours later (generated at send time)."""
    # Mostly done, as a real month is: a day with an order still under way cannot settle.
    statuses = [OrderStatus.COMPLETED.value] * 12 + [s.value for s in OrderStatus]
    channels = ["Email", "Sms", "EmailPreferred", "SmsPreferred", "EmailAndSms"]
    made: list[dict[str, Any]] = []
    emails: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []
    for _ in range(count):
        at = _moment(rng, first, days)
        owner = order(rng.choice(OWNERS), at, status=rng.choice(statuses), notification_channel=rng.choice(channels))
        made.append(owner)
        for rows, make, kinds in ((emails, email, list(EmailStatus)), (texts, sms, list(SmsStatus))):
            for _ in range(rng.randrange(4)):
                created = min(at + timedelta(hours=rng.choice([0, 0, 5, 30])), START - timedelta(seconds=1))
                rows.append(make(owner, status=rng.choice(kinds).value, created=created))
    return made, emails, texts


def _figures(overview: Overview) -> tuple[Any, ...]:
    return (
        overview.orders,
        overview.order_total,
        [(c.channel, c.by_status, c.total, c.succeeded, c.delivered, c.failed, c.pending) for c in overview.channels],
    )


async def _counted(database: Database) -> dict[date, CountedDay]:
    async with database.read() as conn:
        return await repository.counted_days(conn, date(2000, 1, 1), date(9999, 12, 31))


async def _assert_as_live(varsel: Varsel, clock: FrozenClock, status_days: StatusDays) -> None:
    rolled, live = _reads(varsel, clock, status_days), _reads(varsel, clock, None)
    for period in Period:
        for viewer in (ADMIN, *(Viewer(org) for org in OWNERS)):
            expected = _figures(await live.overview(viewer, period))
            assert _figures(await rolled.overview(viewer, period)) == expected, (period, viewer.org)
            if period is Period.MONTH:
                assert expected[1] > 50, "the month must have orders to compare"


async def test_the_overviews_counts_equal_the_live_count_over_random_data(varsel: Varsel, database: Database) -> None:
    rng = random.Random(11)
    first = START - timedelta(days=36)
    await seed(database, *_random_rows(rng, 500, datetime(first.year, first.month, first.day, tzinfo=UTC), 37))
    clock = FrozenClock(START)
    status_days = _rollup(database, clock, refresh_days=KEEP_DAYS)
    # Counted by the background round, then read by the pages ...
    assert await status_days.refresh() == KEEP_DAYS
    await _assert_as_live(varsel, clock, status_days)
    # ... more rows come, on the days that cannot be settled yet and today (as varsel makes them: never on a day long
    # past), and time passes: the unsettled days are recounted.
    await seed(database, *_random_rows(rng, 150, datetime(2026, 3, 7, tzinfo=UTC), 4))
    clock.advance(FRESH + timedelta(seconds=1))
    await _assert_as_live(varsel, clock, status_days)
    assert any(not day.settled for day in (await _counted(database)).values())
    assert any(day.settled for day in (await _counted(database)).values())


async def test_counted_on_demand_when_no_worker_counted(varsel: Varsel, database: Database) -> None:
    await seed(database, *_random_rows(random.Random(12), 300, datetime(2026, 2, 5, tzinfo=UTC), 34))
    clock = FrozenClock(START)
    status_days = _rollup(database, clock)
    await _assert_as_live(varsel, clock, status_days)
    # The month's whole days (the 30 days back from now reach into 8 February: the 9th is the first whole one).
    counted = await _counted(database)
    assert sorted(counted) == [date(2026, 2, 9) + timedelta(days=n) for n in range(29)]


async def test_whole_days_are_read_from_the_rollup_until_their_count_is_stale(
    varsel: Varsel, database: Database
) -> None:
    recent = order("ttd", START - timedelta(days=2), status=OrderStatus.COMPLETED.value)
    old = order("ttd", START - timedelta(days=5), status=OrderStatus.COMPLETED.value)
    gone = email(recent, status=EmailStatus.SUCCEEDED.value)
    await seed(database, [recent, old], [gone, email(old, status=EmailStatus.DELIVERED.value)])
    clock = FrozenClock(START)
    status_days = _rollup(database, clock)
    reads = _reads(varsel, clock, status_days)
    week = await reads.overview(ADMIN, Period.WEEK)
    assert week.channels[0].by_status == {"Succeeded": 1, "Delivered": 1}
    counted = await _counted(database)
    assert counted[(START - timedelta(days=5)).date()].settled
    assert not counted[(START - timedelta(days=2)).date()].settled

    # Changed behind the rollup's back: within freshness the page shows the day as it was counted ...
    async with database.transaction() as conn:
        await conn.execute(
            update(email_notifications)
            .where(email_notifications.c.order_id == old["id"])
            .values(status=EmailStatus.FAILED_BOUNCED.value)
        )
        await conn.execute(delete(email_notifications).where(email_notifications.c.id == gone["id"]))
    clock.advance(FRESH)
    assert (await reads.overview(ADMIN, Period.WEEK)).channels[0].by_status == {"Succeeded": 1, "Delivered": 1}
    # ... and once its count is older than freshness, the unsettled day is counted again; the settled one never is.
    clock.advance(timedelta(seconds=1))
    assert (await reads.overview(ADMIN, Period.WEEK)).channels[0].by_status == {"Delivered": 1}
    # The live count differs for the settled day: it is the count as it stood when the day settled.
    live = await _reads(varsel, clock, None).overview(ADMIN, Period.WEEK)
    assert live.channels[0].by_status == {"Failed_Bounced": 1}


async def test_a_day_with_an_order_under_way_does_not_settle_until_it_finishes(
    varsel: Varsel, database: Database
) -> None:
    scheduled = order("ttd", START - timedelta(days=10), status=OrderStatus.REGISTERED.value)
    await seed(database, [scheduled])
    clock = FrozenClock(START)
    status_days = _rollup(database, clock, refresh_days=KEEP_DAYS)
    day = scheduled["created"].date()
    assert await status_days.refresh() == KEEP_DAYS
    assert not (await _counted(database))[day].settled

    async with database.transaction() as conn:
        await conn.execute(update(orders).values(status=OrderStatus.COMPLETED.value))
    clock.advance(status_days.refresh_every + timedelta(seconds=1))
    # The round recounts the unsettled days: the three that ended less than settle_after ago, and the order's.
    assert await status_days.refresh() == 4
    assert (await _counted(database))[day].settled
    month = await _reads(varsel, clock, status_days).overview(Viewer("ttd"), Period.MONTH)
    assert month.orders == {"EmailPreferred": {"Completed": 1}}


async def test_the_round_backfills_the_last_month_newest_first_and_forgets_older_days(database: Database) -> None:
    clock = FrozenClock(START)
    status_days = _rollup(database, clock, refresh_days=10)
    yesterday = START.date() - timedelta(days=1)
    assert await status_days.refresh() == 10
    assert sorted(await _counted(database)) == [yesterday - timedelta(days=n) for n in range(9, -1, -1)]
    rounds = 1
    while await status_days.refresh():
        rounds += 1
    # 32 days in rounds of ten; the last round's recounts are of days counted less than refresh_every ago: none.
    assert rounds == 4
    assert sorted(await _counted(database)) == [yesterday - timedelta(days=n) for n in range(KEEP_DAYS - 1, -1, -1)]
    # Today is never in the rollup: it is counted live, as the partial day it is.
    assert START.date() not in await _counted(database)

    clock.advance(timedelta(days=3))
    await status_days.refresh()
    counted = sorted(await _counted(database))
    assert counted[0] == START.date() + timedelta(days=3) - timedelta(days=KEEP_DAYS)
    assert counted[-1] == START.date() + timedelta(days=2)


async def test_the_housekeeping_worker_runs_the_round(varsel: Varsel) -> None:
    assert varsel.workers.status_days is varsel.status_days
    assert varsel.status_days.freshness == timedelta(seconds=varsel.settings.usage.fresh_seconds)
    varsel.workers.start(["expiry"])
    try:
        # The sweep, the usage rollup's round and this one's.
        assert len(varsel.workers._loops) == 3
        for _ in range(400):
            if len(await _counted(varsel.database)) == KEEP_DAYS:
                break
            await asyncio.sleep(0.05)
        assert len(await _counted(varsel.database)) == KEEP_DAYS, "the round counted the last month's days"
    finally:
        await varsel.workers.stop(grace_seconds=5)


async def test_the_console_overview_page_adds_up_the_rollups_days(varsel: Varsel, database: Database) -> None:
    # The fixture's clock stands at 2 March, 10:00: the week's whole days are 24 February to 1 March.
    done = order("ttd", datetime(2026, 2, 26, 9, tzinfo=UTC))
    await seed(database, [done], [email(done)])
    app = create_app(varsel)
    codec = app.state.console.sessions
    cookie = str(codec.dumps(codec.new(Principal(org=None, admin=True))))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://varsel.test", cookies={SESSION_COOKIE: cookie}
    ) as client:
        page = await client.get("/console/overview", params={"period": "week"})
    assert page.status_code == 200, page.text
    assert sorted(await _counted(database)) == [date(2026, 2, 24) + timedelta(days=n) for n in range(6)]
