"""The support and usage services directly (the console calls them so), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.conftest import NOW
from tests.support.helpers import NIN, ORG_NUMBER, email, order, seed, sms
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.support import repository
from varsel.support.service import (
    OrgUsage,
    RecipientIdentifier,
    RecipientQuery,
    SupportService,
    UsageMonth,
    UsageService,
    sms_rate,
)


async def test_monthly_usage_counts_the_months_orders_and_their_notifications(
    database: Database, clock: FrozenClock
) -> None:
    december = order("ttd", NOW.replace(year=2025, month=12, day=31, hour=23, minute=59, second=59))
    january = [order("ttd", NOW.replace(month=1, day=1, hour=0)), order("digdir", NOW.replace(month=1, day=15))]
    february = order("ttd", NOW.replace(month=2, day=1, hour=0))
    await seed(
        database,
        [december, *january, february],
        [
            email(january[0], status="Succeeded"),
            email(january[0], status="Delivered"),
            email(january[0], status="Failed_TTL"),
            email(january[1], status="Failed_RecipientReserved"),
            email(december, status="Delivered"),
            email(february, status="Delivered"),
        ],
        [
            sms(january[0], segments=3, status="Accepted"),
            sms(january[0], segments=5, status="Delivered"),
            sms(january[0], segments=7, status="Failed_Rejected"),
            sms(january[1], segments=2, status="New"),
            sms(december, segments=100, status="Delivered"),
            sms(february, segments=100, status="Delivered"),
        ],
    )
    usage = await UsageService(database, clock).monthly(UsageMonth(2026, 1))
    assert usage.month == UsageMonth(2026, 1)
    assert usage.orgs == (
        OrgUsage("digdir", orders=1, emails=1, successful_emails=0, sms=2, successful_sms=0),
        OrgUsage("ttd", orders=1, emails=3, successful_emails=2, sms=15, successful_sms=2),
    )
    # December's last second and February's first are their own months'.
    december_usage = await UsageService(database, clock).monthly(UsageMonth(2025, 12))
    assert december_usage.orgs == (OrgUsage("ttd", 1, 1, 1, 100, 1),)
    assert (await UsageService(database, clock).monthly(UsageMonth(2026, 4))).orgs == ()


def test_a_usage_month_knows_its_bounds_and_refuses_nonsense() -> None:
    assert UsageMonth(2026, 12).end == NOW.replace(year=2027, month=1, day=1, hour=0)
    assert UsageMonth(2026, 2).start == NOW.replace(month=2, day=1, hour=0)
    for year, month in ((2026, 0), (2026, 13), (1999, 1), (9999, 1)):
        with pytest.raises(ValueError, match="must be"):
            UsageMonth(year, month)


def test_yesterday_is_the_clocks_utc_date_minus_one(database: Database) -> None:
    clock = FrozenClock(NOW.replace(hour=0, minute=0))
    assert UsageService(database, clock).yesterday() == date(2026, 3, 1)
    clock.advance(timedelta(hours=23, minutes=59))
    assert UsageService(database, clock).yesterday() == date(2026, 3, 1)


@pytest.mark.parametrize(
    ("number", "rate"),
    [("+4791234567", "innland"), ("004791234567", "innland"), ("+46701234567", "utland"), ("", "n/a"), (None, "n/a")],
)
def test_sms_rate(number: str | None, rate: str) -> None:
    assert sms_rate(number) == rate


async def test_a_look_up_is_bounded_and_says_so(database: Database) -> None:
    rows = [order(requested=NOW - timedelta(hours=hours)) for hours in range(1, 6)]
    await seed(database, rows, [email(o, national_identity_number=NIN) for o in rows])
    service = SupportService(database)
    query = RecipientQuery(RecipientIdentifier.NATIONAL_IDENTITY_NUMBER, NIN, NOW - timedelta(days=1), NOW, limit=3)
    found = await service.recipient_lookup(query)
    assert found.truncated
    assert [s.shipment_id for s in found.shipments] == [o["id"] for o in rows[:3]]
    everything = await service.recipient_lookup(
        RecipientQuery(RecipientIdentifier.NATIONAL_IDENTITY_NUMBER, NIN, NOW - timedelta(days=1), NOW, limit=5)
    )
    assert not everything.truncated
    assert len(everything.shipments) == 5


async def test_a_look_up_lists_only_the_recipients_own_notifications(database: Database) -> None:
    shared = order()
    await seed(
        database,
        [shared],
        [
            email(shared, national_identity_number=NIN, email_address="kari@example.com"),
            email(shared, national_identity_number="02027012345", email_address="ola@example.com"),
            email(shared, organization_number=ORG_NUMBER, email_address="post@example.com"),
        ],
        [sms(shared, national_identity_number=NIN, mobile_number="+4791111111", status="Failed_RecipientReserved")],
    )
    found = await SupportService(database).recipient_lookup(
        RecipientQuery(RecipientIdentifier.NATIONAL_IDENTITY_NUMBER, NIN, NOW - timedelta(days=1), NOW + timedelta(1))
    )
    (shipment,) = found.shipments
    assert [(a.channel, a.address, a.result) for a in shipment.attempts] == [
        ("email", "kari@example.com", "Delivered"),
        ("sms", "+4791111111", "Failed_RecipientReserved"),
    ]
    by_org = await SupportService(database).recipient_lookup(
        RecipientQuery(RecipientIdentifier.ORGANIZATION_NUMBER, ORG_NUMBER, NOW - timedelta(days=1), NOW + timedelta(1))
    )
    assert [a.address for s in by_org.shipments for a in s.attempts] == ["post@example.com"]


async def test_the_notifications_read_are_only_those_of_the_shipments_answered(database: Database) -> None:
    """The second statement reads the recipient's notifications of the answered orders only, not all of theirs."""
    rows = [order(requested=NOW - timedelta(days=days)) for days in range(1, 4)]
    await seed(database, rows, [email(o, national_identity_number=NIN) for o in rows])
    async with database.read() as conn:
        found = await repository.recipient_notifications(
            conn, "national_identity_number", NIN, [rows[0]["id"], rows[2]["id"]]
        )
    assert sorted(str(n.order_id) for n in found) == sorted(str(o["id"]) for o in (rows[0], rows[2]))
