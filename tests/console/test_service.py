"""The console's read service on SQLite and PostgreSQL: paging through cursors, an order's chain and timelines,
cancelling by the order service's rules, tenancy, and the overview's figures on a small data set."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import NOW
from tests.console.test_repository import attempt_row, notification_row, order_row, report_row, store
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.console.service import (
    MAX_PAGE_SIZE,
    ConsoleReads,
    Cursor,
    EventKind,
    InvalidCursor,
    OrderSearch,
    Period,
    decode_cursor,
    encode_cursor,
    percentile,
)
from varsel.notifications.statuses import OrderStatus
from varsel.orders.drafts import ChainDraft, EmailTemplateSpec, OrderDraft, RecipientSpec
from varsel.orders.service import OrderNotCancellable, OrderNotFound
from varsel.orders.vocabulary import EmailContentType, NotificationChannel
from varsel.providers.guard import GuardHealth


@dataclass(frozen=True)
class Viewer:
    org: str | None
    admin: bool = False


TTD = Viewer("ttd")
NAV = Viewer("nav")
ADMIN = Viewer(None, admin=True)


class FakeGuard:
    """Stands in for a provider's guard in another process's memory: only its name and health are read."""

    name = "outbox"

    def health(self) -> GuardHealth:
        return GuardHealth("open", NOW + timedelta(seconds=30), None, 5)


@pytest.fixture
def reads(varsel: Varsel) -> ConsoleReads:
    return ConsoleReads(varsel.database, varsel.clock, varsel.orders, {"email": FakeGuard()})


# ---------------------------------------------------------------- search


async def test_pages_follow_cursors_to_the_end_and_a_page_is_bounded(reads: ConsoleReads, varsel: Varsel) -> None:
    rows = [order_row(created=NOW - timedelta(seconds=i // 3)) for i in range(10)]  # ties of three
    await store(varsel.database, [*rows, order_row("nav")])
    expected = [r["id"] for r in sorted(rows, key=lambda r: (r["created"], r["id"]), reverse=True)]

    seen: list[uuid.UUID] = []
    after: Cursor | None = None
    while True:
        page = await reads.search(TTD, OrderSearch(), after=after, page_size=4)
        seen += [o.id for o in page.orders]
        if page.next is None:
            break
        # The cursor travels as text in the next link, and comes back as the same cursor.
        after = decode_cursor(encode_cursor(page.next))
        assert after == page.next
    assert seen == expected

    full = await reads.search(ADMIN, OrderSearch(), page_size=10_000)
    assert len(full.orders) == 11
    assert full.next is None
    await store(varsel.database, [order_row() for _ in range(MAX_PAGE_SIZE)])
    bounded = await reads.search(ADMIN, OrderSearch(), page_size=10_000)
    assert len(bounded.orders) == MAX_PAGE_SIZE
    assert bounded.next is not None


@pytest.mark.parametrize(
    "text", ["", "garbage", "2026-03-02T10:00:00.000000Z~nothex", "2026-13-02T10:00:00Z~" + "0" * 32]
)
def test_a_cursor_the_console_did_not_hand_out_is_refused(text: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(text)


# ---------------------------------------------------------------- an order's chain and its timelines


async def test_a_chains_orders_and_each_notifications_timeline(reads: ConsoleReads, varsel: Varsel) -> None:
    chain_id = uuid.uuid4()
    main = order_row(chain_id=chain_id, chain_position=0, senders_reference="ref", email_subject="Hei $recipientName$")
    reminder = order_row(
        chain_id=chain_id, chain_position=1, order_type="Reminder", created=NOW,
        requested_send_time=NOW + timedelta(days=1), status=OrderStatus.REGISTERED.value,
    )  # fmt: skip
    t0 = NOW + timedelta(seconds=1)
    sent = notification_row(
        "email", main, subject="Hei Ola", status="Delivered", status_changed=t0 + timedelta(seconds=9),
        provider_reference="p-1", recipient_name="Ola", national_identity_number="01017012345",
    )  # fmt: skip
    reserved = notification_row(
        "email", main, status="Failed_RecipientReserved", email_address=None, national_identity_number="11876995923",
        is_reserved=True,
    )  # fmt: skip
    attempts = [
        attempt_row("email", sent, t0, outcome="retry", status="New", detail="421 try later"),
        attempt_row("email", sent, t0 + timedelta(seconds=5), attempt=2, provider_reference="p-1"),
    ]
    # The provider's report on the first call arrives before the second call: the timeline is in time order.
    reports = [
        report_row("email", sent, t0 + timedelta(seconds=2), status="Failed", state="superseded"),
        report_row("email", sent, t0 + timedelta(seconds=9), provider_reference="p-1"),
    ]
    recipients = [
        {"order_id": main["id"], "position": 0, "national_identity_number": "01017012345"},
        {"order_id": main["id"], "position": 1, "national_identity_number": "11876995923"},
    ]
    chain = {
        "id": chain_id, "creator": "ttd", "family": "orders", "idempotency_id": "key-1",
        "idempotency_hash": "a" * 64, "created": NOW,
    }  # fmt: skip
    await store(varsel.database, [main, reminder], {"email": [sent, reserved]}, attempts, reports, [chain], recipients)

    # Asked for by the reminder's id, the chain shows both orders, the main one first.
    view = await reads.chain(TTD, reminder["id"])
    assert view.chain_id == chain_id
    assert view.idempotency_id == "key-1"
    assert [o.id for o in view.orders] == [main["id"], reminder["id"]]
    assert view.order.id == reminder["id"]
    first, second = view.orders
    assert first.counts == {"email": {"Delivered": 1, "Failed_RecipientReserved": 1}, "sms": {}}
    assert first.recipient_count == 2
    assert [r.national_identity_number for r in first.recipients] == [
        "01017012345",
        "11876995923",
    ]
    assert second.notifications == ()
    assert second.notification_count == 0

    delivered = next(n for n in first.notifications if n.id == sent["id"])
    assert [(e.kind, e.outcome, e.status) for e in delivered.events] == [
        (EventKind.CREATED, None, None),
        (EventKind.ATTEMPT, "retry", "New"),
        (EventKind.REPORT, "superseded", "Failed"),
        (EventKind.ATTEMPT, "accepted", "Succeeded"),
        (EventKind.REPORT, "applied", "Delivered"),
        (EventKind.STATUS, None, "Delivered"),
    ]
    assert delivered.events[1].detail == "421 try later"
    assert delivered.events[3].provider_reference == "p-1"
    assert delivered.events[3].provider == "outbox"
    assert [e.time for e in delivered.events] == sorted(e.time for e in delivered.events)
    # Who got what: the address and the content as rendered for this recipient; the body is the order's template.
    assert (delivered.address, delivered.subject, delivered.body) == ("ola@example.com", "Hei Ola", "Body")
    assert delivered.final
    assert delivered.succeeded

    # Who did not, and why: the status says it in words.
    refused = next(n for n in first.notifications if n.id == reserved["id"])
    assert refused.address is None
    assert refused.is_reserved
    assert "reserved themselves" in refused.status_description
    assert refused.final
    assert not refused.succeeded
    assert [e.kind for e in refused.events] == [EventKind.CREATED, EventKind.STATUS]


async def test_the_timeline_of_an_order_that_went_through_the_pipeline(reads: ConsoleReads, varsel: Varsel) -> None:
    """A real chain, processed and sent by the workers to the development outbox (which reports delivery at once)."""
    draft = OrderDraft(
        channel=NotificationChannel.EMAIL,
        requested_send_time=NOW,
        recipients=(RecipientSpec(email_address="kari@example.com"),),
        senders_reference="pipeline",
        email_template=EmailTemplateSpec("noreply@example.com", "Emne", "Tekst", EmailContentType.PLAIN),
    )
    reminder = OrderDraft(**{**draft.__dict__, "requested_send_time": NOW + timedelta(days=2)})
    registered = await varsel.chains.register("ttd", ChainDraft("pipeline-key", draft, (reminder,)))
    await varsel.workers.drain()

    found = await reads.search(TTD, OrderSearch(senders_reference="pipeline"))
    assert len(found.orders) == 2
    view = await reads.chain(TTD, registered.receipt.main.order_id)
    main, later = view.orders
    assert main.status is OrderStatus.COMPLETED
    assert main.counts["email"] == {"Delivered": 1}
    (notification,) = main.notifications
    assert [e.kind for e in notification.events] == [EventKind.CREATED, EventKind.ATTEMPT, EventKind.STATUS]
    assert notification.events[1].outcome == "accepted"
    assert notification.events[-1].status == "Delivered"
    assert (notification.address, notification.subject, notification.body) == ("kari@example.com", "Emne", "Tekst")
    assert not main.cancellable
    assert later.cancellable


async def test_an_org_cannot_see_another_orgs_order_and_an_admin_can(reads: ConsoleReads, varsel: Varsel) -> None:
    theirs = order_row("nav")
    await store(varsel.database, [theirs], {"email": [notification_row("email", theirs)]})
    with pytest.raises(OrderNotFound):
        await reads.chain(TTD, theirs["id"])
    with pytest.raises(OrderNotFound):
        await reads.chain(TTD, uuid.uuid4())
    assert (await reads.chain(NAV, theirs["id"])).order.creator == "nav"
    assert (await reads.chain(ADMIN, theirs["id"])).order.notification_count == 1


# ---------------------------------------------------------------- cancel


async def test_cancel_follows_the_order_services_rules_and_tenancy(reads: ConsoleReads, varsel: Varsel) -> None:
    later = order_row(status=OrderStatus.REGISTERED.value, requested_send_time=NOW + timedelta(hours=1))
    soon = order_row(status=OrderStatus.REGISTERED.value, requested_send_time=NOW + timedelta(minutes=4))
    done = order_row(status=OrderStatus.COMPLETED.value)
    for_admin = order_row("nav", status=OrderStatus.REGISTERED.value, requested_send_time=NOW + timedelta(hours=1))
    await store(varsel.database, [later, soon, done, for_admin])

    assert [(await reads.chain(TTD, o["id"])).order.cancellable for o in (later, soon, done)] == [True, False, False]

    # Another org's order is not found, and stays as it was.
    with pytest.raises(OrderNotFound):
        await reads.cancel(NAV, later["id"])
    assert (await reads.chain(TTD, later["id"])).order.status is OrderStatus.REGISTERED

    assert await reads.cancel(TTD, later["id"]) is OrderStatus.CANCELLED
    cancelled = (await reads.chain(TTD, later["id"])).order
    assert cancelled.status is OrderStatus.CANCELLED
    assert not cancelled.cancellable
    for order in (soon, done):
        with pytest.raises(OrderNotCancellable):
            await reads.cancel(TTD, order["id"])
    # An admin cancels any owner's order.
    assert await reads.cancel(ADMIN, for_admin["id"]) is OrderStatus.CANCELLED


# ---------------------------------------------------------------- overview


async def test_overview_figures_on_a_small_data_set(reads: ConsoleReads, varsel: Varsel) -> None:
    clock = varsel.clock
    assert isinstance(clock, FrozenClock)
    hour_ago = NOW - timedelta(hours=1)
    # Orders created in the last hour (each requested for its creation time), one older, one of another org.
    orders = [order_row(created=NOW - timedelta(minutes=10 * i), requested_send_time=NOW - timedelta(minutes=10 * i))
              for i in range(1, 5)]  # fmt: skip
    orders[3].update(notification_channel="Sms", status=OrderStatus.PROCESSED.value)
    old = order_row(created=hour_ago - timedelta(minutes=1))
    other = order_row("nav", created=NOW - timedelta(minutes=5), requested_send_time=NOW - timedelta(minutes=5))
    # Email hand-off after 10, 20, 30 s; delivery after 60 and 120 s; one bounced; one still New and due.
    email: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    for order, handoff, delivered in ((orders[0], 10, 60), (orders[1], 20, 120), (orders[2], 30, None)):
        status = "Delivered" if delivered else "Failed_Bounced"
        changed = order["created"] + timedelta(seconds=delivered or 40)
        row = notification_row("email", order, status=status, status_changed=changed)
        email.append(row)
        attempts.append(
            attempt_row("email", row, order["created"], finished=order["created"] + timedelta(seconds=handoff))
        )
    due = notification_row("email", orders[2], status="New", send_after=NOW - timedelta(minutes=3))
    waiting = notification_row("sms", orders[3], status="New", send_after=NOW + timedelta(hours=2))
    sent_sms = notification_row("sms", orders[3], status="Accepted")
    attempts.append(attempt_row("sms", sent_sms, NOW - timedelta(minutes=5), outcome="retry", detail="503"))
    # Another org's email, slow to hand off: it must count in the admin's figures only, its latency too.
    others = notification_row("email", other)
    attempts.append(attempt_row("email", others, other["created"], finished=other["created"] + timedelta(seconds=999)))
    email += [due, notification_row("email", old), others]
    await store(varsel.database, [*orders, old, other], {"email": email, "sms": [waiting, sent_sms]}, attempts)

    view = await reads.overview(TTD, Period.HOUR)
    assert (view.since, view.until) == (hour_ago, NOW)
    assert view.orders == {"Email": {"Completed": 3}, "Sms": {"Processed": 1}}
    assert view.order_total == 4
    email_figures, sms_figures = view.channels
    assert email_figures.by_status == {"Delivered": 2, "Failed_Bounced": 1, "New": 1}
    assert (email_figures.total, email_figures.delivered, email_figures.failed, email_figures.pending) == (4, 2, 1, 1)
    assert email_figures.delivery_rate == pytest.approx(2 / 3)
    assert (email_figures.to_provider.samples, email_figures.to_provider.p50, email_figures.to_provider.p95) == (
        3,
        20.0,
        30.0,
    )
    assert (email_figures.to_delivery.p50, email_figures.to_delivery.p95) == (60.0, 120.0)
    assert sms_figures.by_status == {"New": 1, "Accepted": 1}
    assert sms_figures.delivery_rate is None
    assert sms_figures.to_provider.samples == 0
    assert sms_figures.to_provider.p50 is None
    # Queues: the due email since three minutes ago, the SMS waiting for its window.
    assert view.notification_queues["email"].due == 1
    assert view.notification_queues["email"].oldest_due == NOW - timedelta(minutes=3)
    assert (view.notification_queues["sms"].due, view.notification_queues["sms"].waiting) == (0, 1)
    assert view.order_queue.due == 0
    # Provider health: an org sees the breaker this process knows, not every owner's calls.
    (email_provider,) = [p for p in view.providers if p.channel == "email"]
    assert email_provider.guard is not None
    assert email_provider.guard.breaker == "open"
    assert email_provider.calls == {}

    admin = await reads.overview(ADMIN, Period.HOUR)
    assert admin.order_total == 5
    assert (admin.channels[0].to_provider.samples, admin.channels[0].to_provider.p95) == (4, 999.0)
    assert admin.channels[0].total == 5
    by_channel = {p.channel: p for p in admin.providers}
    assert by_channel["sms"].calls == {"retry": 1}
    assert by_channel["sms"].last_failure_detail == "503"
    assert by_channel["sms"].guard is None
    # The older order counts in a longer period.
    assert (await reads.overview(TTD, Period.DAY)).order_total == 5
    assert (await reads.overview(NAV, Period.HOUR)).order_total == 1


async def test_overview_latencies_are_the_samples_p50_and_p95(reads: ConsoleReads, varsel: Varsel) -> None:
    order = order_row(created=NOW - timedelta(minutes=30), requested_send_time=NOW - timedelta(minutes=40))
    email, attempts = [], []
    for seconds in range(1, 21):
        row = notification_row("email", order, status_changed=order["created"] + timedelta(seconds=100 + seconds))
        email.append(row)
        attempts.append(
            attempt_row("email", row, order["created"], finished=order["created"] + timedelta(seconds=seconds))
        )
    await store(varsel.database, [order], {"email": email}, attempts)

    figures = (await reads.overview(TTD, Period.HOUR)).channels[0]
    # Counted from the order's creation: it asked for a send time already past.
    assert (figures.to_provider.samples, figures.to_provider.p50, figures.to_provider.p95) == (20, 10.0, 19.0)
    assert (figures.to_delivery.p50, figures.to_delivery.p95) == (110.0, 119.0)
    assert figures.delivery_rate == 1.0


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert percentile([5.0], 0.95) == 5.0


async def test_what_a_waiting_order_and_sms_wait_for_is_said_on_the_order_page(
    reads: ConsoleReads, varsel: Varsel
) -> None:
    # An SMS held for tomorrow morning's daytime window, never tried; an order whose processing is to be retried.
    held_until = NOW + timedelta(hours=20)
    sending = order_row(notification_channel="Sms", status=OrderStatus.PROCESSED.value, processing_attempts=0)
    held = notification_row("sms", sending, status="New", attempts=0, send_after=held_until, provider=None)
    retried = order_row(
        status=OrderStatus.REGISTERED.value, processing_attempts=1, process_after=NOW + timedelta(minutes=5)
    )
    await store(varsel.database, [sending, retried], {"sms": [held]})

    [order] = (await reads.chain(TTD, sending["id"])).orders
    [notification] = order.notifications
    assert "held for the SMS daytime window (09:00-17:00 Europe/Oslo)" in notification.status_description
    assert "2026-03-03T06:00:00Z" in notification.status_description
    assert notification.events[-1].detail == notification.status_description
    [waiting] = (await reads.chain(TTD, retried["id"])).orders
    assert "it is tried again at 2026-03-02T10:05:00Z" in waiting.status_description
