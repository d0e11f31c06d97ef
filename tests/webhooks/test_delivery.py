"""The delivery worker against a real receiver on loopback, on both databases, with a frozen clock: every delivery
verified with standardwebhooks' Webhook.verify, each endpoint's events once and in order, failures retried on the
schedule with the same webhook-id, a worker cut off mid-delivery, the failure period, replay, the address check at
delivery, secret rotation and retention."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy import event, false, func, insert, literal, select, text

from tests.webhooks.conftest import ORG, OTHER_ORG, WEBHOOKS, FakeResolver, Receiver, numbers, write_events
from varsel.app import Varsel
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import webhook_attempts, webhook_events, webhook_subscription_events, webhook_subscriptions
from varsel.dispatch.wakeup import PostgresListener, Wakeups
from varsel.ids import new_id
from varsel.webhooks import repository
from varsel.webhooks.addresses import WebhookHosts
from varsel.webhooks.delivery import WebhookDelivery, retry_delay
from varsel.webhooks.outbox import Event, fan_out
from varsel.webhooks.repository import Subscription
from varsel.webhooks.service import SubscriptionChange, WebhookSubscriptions
from varsel.webhooks.wakeup import wake_on_committed_events

Auth = Callable[..., dict[str, str]]


async def _subscribe(varsel: Varsel, receiver: Receiver, url: str | None = None, org: str = ORG) -> Subscription:
    made = await varsel.webhooks.create(org, url or receiver.url, ["order.completed", "order.cancelled"])
    receiver.secrets.append(made.secret)
    return made


def _delivery(varsel: Varsel) -> WebhookDelivery:
    assert varsel.workers.webhooks is not None
    return varsel.workers.webhooks


def _worker(
    varsel: Varsel, name: str, max_concurrent_endpoints: int = 5, timeout_seconds: float | None = None
) -> WebhookDelivery:
    """Another delivery worker on the same database (another process, as far as the claims go)."""
    settings = varsel.settings.webhooks
    return WebhookDelivery(
        varsel.database,
        varsel.clock,
        _delivery(varsel)._hosts,
        varsel.http,
        name,
        timeout_seconds=timeout_seconds or settings.timeout_seconds,
        lease_seconds=settings.lease_seconds,
        failure_period=timedelta(hours=settings.failure_period_hours),
        max_concurrent_endpoints=max_concurrent_endpoints,
    )


async def _states(database: Database) -> list[tuple[int, str, int]]:
    e = webhook_events
    async with database.read() as conn:
        rows = await conn.execute(select(e.c.seq, e.c.state, e.c.attempts).order_by(e.c.seq))
        return [(row.seq, row.state, row.attempts) for row in rows]


async def test_each_endpoints_events_are_delivered_once_in_order_and_signed(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    other = Receiver()
    other.start()
    try:
        await _subscribe(varsel, receiver)
        await _subscribe(varsel, other)
        await _subscribe(varsel, Receiver(), org=OTHER_ORG)  # never called: it subscribes to another owner's events
        assert await write_events(database, clock, 3) == 6
        assert await write_events(database, clock, 2, first=3, kind="order.cancelled") == 4

        assert await _delivery(varsel).deliver_due() == 10
        for peer in (receiver, other):
            assert numbers(peer.deliveries) == [0, 1, 2, 3, 4]
            assert all(d.verified_by == [0] for d in peer.deliveries)
            assert all(d.timestamp == str(int(clock.now().timestamp())) for d in peer.deliveries)
            assert len(set(peer.ids)) == 5
        assert set(receiver.ids).isdisjoint(other.ids)  # one event row per subscriber, each its own webhook-id
        assert receiver.deliveries[3].payload["type"] == "order.cancelled"
        # Nothing is delivered twice.
        assert await _delivery(varsel).deliver_due() == 0
        assert len(receiver.deliveries) == 5
        assert {state for _, state, _ in await _states(database)} == {"delivered"}
    finally:
        other.stop()


async def test_a_failing_receiver_is_retried_on_schedule_with_the_same_id_and_order_kept(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver, client: httpx.AsyncClient, auth: Auth
) -> None:
    made = await _subscribe(varsel, receiver)
    await write_events(database, clock, 3)
    receiver.mode = "fail"
    assert await _delivery(varsel).deliver_due() == 1  # the head fails; the others wait behind it
    for failures in (1, 2, 3):
        clock.advance(retry_delay(failures) - timedelta(seconds=1))
        assert await _delivery(varsel).deliver_due() == 0  # not due yet
        clock.advance(timedelta(seconds=1))
        assert await _delivery(varsel).deliver_due() == 1
    assert len(set(receiver.ids)) == 1
    assert numbers(receiver.deliveries) == [0] * 4
    assert [d.timestamp for d in receiver.deliveries] == sorted({d.timestamp for d in receiver.deliveries})

    receiver.mode = "ok"
    clock.advance(retry_delay(4))
    assert await _delivery(varsel).deliver_due() == 3
    assert numbers(receiver.deliveries) == [0, 0, 0, 0, 0, 1, 2]
    assert len(set(receiver.ids[:5])) == 1
    assert all(d.verified_by == [0] for d in receiver.deliveries)

    log = (await client.get(f"{WEBHOOKS}/{made.id}/attempts", headers=auth())).json()["attempts"]
    assert [(a["attempt"], a.get("statusCode"), a.get("error")) for a in log] == [
        (1, 204, None),
        (1, 204, None),
        (5, 204, None),
        *[(n, 500, "HTTP 500.") for n in (4, 3, 2, 1)],
    ]
    subscription = (await client.get(f"{WEBHOOKS}/{made.id}", headers=auth())).json()
    assert "failingSince" not in subscription  # a success cleared it


async def test_a_receiver_that_is_down_slow_or_redirecting_fails_and_gets_it_later(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    await _subscribe(varsel, receiver)
    await write_events(database, clock, 2)
    receiver.stop()  # down: the connection is refused
    assert await _delivery(varsel).deliver_due() == 1
    receiver.start()
    receiver.mode = "slow"
    clock.advance(retry_delay(1))
    assert await _delivery(varsel).deliver_due() == 1
    receiver.mode = "redirect"
    clock.advance(retry_delay(2))
    assert await _delivery(varsel).deliver_due() == 1
    receiver.mode = "ok"
    clock.advance(retry_delay(3))
    assert await _delivery(varsel).deliver_due() == 2

    async with database.read() as conn:
        attempts = (
            await conn.execute(
                select(webhook_attempts.c.status_code, webhook_attempts.c.error).order_by(webhook_attempts.c.id)
            )
        ).all()
    assert attempts[0].status_code is None
    assert attempts[0].error.startswith("Request failed: ConnectError")
    assert tuple(attempts[1]) == (None, "No answer within 0.5 s.")
    assert tuple(attempts[2]) == (302, "HTTP 302: redirects are not followed.")
    assert [tuple(a) for a in attempts[3:]] == [(204, None), (204, None)]
    # The slow, the redirected and the last attempt reached the receiver, each with the head's webhook-id.
    assert numbers(receiver.deliveries) == [0, 0, 0, 1]
    assert len(set(receiver.ids[:3])) == 1


async def test_a_worker_cut_off_mid_delivery_leaves_it_to_the_next_with_the_same_id(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    await _subscribe(varsel, receiver)
    await write_events(database, clock, 3)
    receiver.mode = "hold"
    # A timeout longer than the test: the held POST is cut off by the test, not by the worker's timeout.
    cut_off = asyncio.create_task(_worker(varsel, "cut off", timeout_seconds=120).deliver_due())
    assert await asyncio.to_thread(receiver.holding.wait, 10)
    cut_off.cancel()  # the POST was received; the worker dies before it writes anything
    await asyncio.gather(cut_off, return_exceptions=True)
    receiver.mode = "ok"
    receiver.release.set()
    assert await _states(database) == [(s, "pending", 0) for s, _, _ in await _states(database)]

    settings = varsel.settings.webhooks
    other = _worker(varsel, "another worker")
    assert await other.deliver_due() == 0  # the dead worker's hold has not run out
    # Its hold lasts the lease, or twice its timeout when that is longer (a hold must outlast an attempt).
    clock.advance(timedelta(seconds=max(settings.lease_seconds, 2 * 120)))
    assert await other.deliver_due() == 3
    assert numbers(receiver.deliveries) == [0, 0, 1, 2]
    assert receiver.ids[0] == receiver.ids[1]
    assert {state for _, state, _ in await _states(database)} == {"delivered"}


async def test_one_endpoint_is_held_by_one_worker_at_a_time(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    await _subscribe(varsel, receiver)
    await write_events(database, clock, 2)
    receiver.mode = "hold"
    # A timeout longer than the test: the held POST ends only when the receiver lets it go.
    first = _worker(varsel, "first", timeout_seconds=120)
    assert await first.run_once() == 1
    assert await asyncio.to_thread(receiver.holding.wait, 10)
    second = _worker(varsel, "second")
    assert await second.run_once() == 0
    receiver.mode = "ok"
    receiver.release.set()
    assert await first.deliver_due() == 2
    assert numbers(receiver.deliveries) == [0, 1]


async def test_an_endpoint_failing_for_the_failure_period_is_disabled_until_enabled_again(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver, client: httpx.AsyncClient, auth: Auth
) -> None:
    made = await _subscribe(varsel, receiver)
    await write_events(database, clock, 2)
    receiver.mode = "fail"
    started = clock.now()
    failures = 0
    while True:
        assert await _delivery(varsel).deliver_due() == 1
        failures += 1
        read = (await client.get(f"{WEBHOOKS}/{made.id}", headers=auth())).json()
        assert read["failingSince"] == "2026-03-02T10:00:00Z"
        if not read["enabled"]:
            break
        assert clock.now() - started < timedelta(hours=72)
        clock.advance(retry_delay(failures))
    # Disabled by the first attempt that failed 72 hours or more after the first failure.
    assert clock.now() - started >= timedelta(hours=72)
    assert clock.now() - started - retry_delay(failures - 1) < timedelta(hours=72)
    disabled = (await client.get(f"{WEBHOOKS}/{made.id}", headers=auth())).json()
    assert disabled["disabledReason"].startswith("Every delivery failed for 72 hours (since 2026-03-02T10:00:00+00:00)")
    assert disabled["disabledReason"].endswith("the last: HTTP 500.")
    attempted = len(receiver.deliveries)
    clock.advance(timedelta(days=2))
    assert await _delivery(varsel).deliver_due() == 0
    assert len(receiver.deliveries) == attempted
    await write_events(database, clock, 1, first=2)  # written while disabled: kept for later

    receiver.mode = "ok"
    enabled = await client.patch(f"{WEBHOOKS}/{made.id}", json={"enabled": True}, headers=auth())
    assert enabled.status_code == 200
    assert enabled.json()["enabled"] is True
    assert "failingSince" not in enabled.json()
    assert await _delivery(varsel).deliver_due() == 3
    assert numbers(receiver.deliveries)[attempted:] == [0, 1, 2]


async def test_a_replay_delivers_the_asked_range_again_in_order_with_the_same_ids(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver, client: httpx.AsyncClient, auth: Auth
) -> None:
    made = await _subscribe(varsel, receiver)
    await write_events(database, clock, 2)
    clock.advance(timedelta(hours=1))
    await write_events(database, clock, 3, first=2)
    assert await _delivery(varsel).deliver_due() == 5
    first_ids = list(receiver.ids)

    events = (await client.get(f"{WEBHOOKS}/{made.id}/events", headers=auth())).json()["events"]
    assert [e["state"] for e in events] == ["delivered"] * 5
    third = events[2]["sequenceNumber"]
    replayed = await client.post(f"{WEBHOOKS}/{made.id}/replay", json={"fromSequenceNumber": third}, headers=auth())
    assert replayed.status_code == 202
    assert replayed.json() == {"replayed": 3}
    assert await _delivery(varsel).deliver_due() == 3
    assert receiver.ids[5:] == first_ids[2:]

    since = await client.post(
        f"{WEBHOOKS}/{made.id}/replay", json={"since": "2026-03-02T10:30:00+00:00"}, headers=auth()
    )
    assert since.json() == {"replayed": 3}
    assert await _delivery(varsel).deliver_due() == 3
    assert numbers(receiver.deliveries) == [0, 1, 2, 3, 4, 2, 3, 4, 2, 3, 4]

    page = (await client.get(f"{WEBHOOKS}/{made.id}/events?pageSize=2", headers=auth())).json()
    assert [e["sequenceNumber"] for e in page["events"]] == [e["sequenceNumber"] for e in events[:2]]
    following = (await client.get(page["next"], headers=auth())).json()
    assert [e["sequenceNumber"] for e in following["events"]] == [e["sequenceNumber"] for e in events[2:4]]


async def test_an_address_turned_internal_is_refused_at_delivery(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver, resolver: FakeResolver
) -> None:
    # Made while the name did not resolve (accepted, as DNS may come later); it resolves inside when delivered to.
    await _subscribe(varsel, receiver, url="https://hooks.example.com/varsel")
    await write_events(database, clock, 1)
    resolver.answers["hooks.example.com"] = ["10.0.0.5"]
    assert await _delivery(varsel).deliver_due() == 1
    async with database.read() as conn:
        (attempt,) = (await conn.execute(select(webhook_attempts.c.status_code, webhook_attempts.c.error))).all()
    assert attempt.status_code is None
    assert attempt.error == "Refused address: hooks.example.com resolves to an address that is not public (10.0.0.5)"
    assert resolver.asked[-1] == "hooks.example.com"
    assert await _states(database) == [(s, "pending", 1) for s, _, _ in await _states(database)]


async def test_plain_http_to_a_host_no_longer_allow_listed_is_refused_at_delivery(
    varsel: Varsel, database: Database, clock: FrozenClock, resolver: FakeResolver
) -> None:
    """http is accepted for allow-listed hosts only; once the operator takes the host off the list, its URL's rule
    fails at every delivery, before any lookup, rather than events going on in plaintext."""
    listed = WebhookHosts(["hooks.example.com"], resolver)
    await WebhookSubscriptions(database, clock, listed, timedelta(hours=24)).create(
        ORG, "http://hooks.example.com/varsel", ["order.completed"]
    )
    await write_events(database, clock, 1)
    assert await _delivery(varsel).deliver_due() == 1  # this process's allow-list: 127.0.0.1 only
    async with database.read() as conn:
        (attempt,) = (await conn.execute(select(webhook_attempts.c.status_code, webhook_attempts.c.error))).all()
    assert attempt.status_code is None
    assert attempt.error == (
        "Refused address: The URL must use https (unless the operator of this service lists the host in "
        "VARSEL_WEBHOOKS__ALLOWED_HOSTS)."
    )
    assert "hooks.example.com" not in resolver.asked
    assert [state for _, state, _ in await _states(database)] == ["pending"]


async def test_after_a_rotation_both_secrets_sign_for_the_grace_period(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    made = await _subscribe(varsel, receiver)
    rotated = await varsel.webhooks.rotate_secret(ORG, made.id)
    receiver.secrets.append(rotated.secret)  # [old, new]
    await write_events(database, clock, 1)
    assert await _delivery(varsel).deliver_due() == 1
    assert receiver.deliveries[0].verified_by == [0, 1]
    assert len(receiver.deliveries[0].signature.split(" ")) == 2

    clock.advance(timedelta(hours=24))
    await write_events(database, clock, 1, first=1)
    assert await _delivery(varsel).deliver_due() == 1
    assert receiver.deliveries[1].verified_by == [1]


async def test_delivered_events_past_retention_are_purged_and_pending_ones_kept(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    await _subscribe(varsel, receiver)
    await write_events(database, clock, 2)
    assert await _delivery(varsel).deliver_due() == 2
    await write_events(database, clock, 1, first=2)
    receiver.mode = "fail"
    assert await _delivery(varsel).deliver_due() == 1
    retention = varsel.workers.webhook_retention
    assert retention is not None
    clock.advance(timedelta(days=7))
    assert await retention.run_once() == 0  # 7 days old, not older
    clock.advance(timedelta(seconds=1))
    assert await retention.run_once() == 2
    states = await _states(database)
    assert [state for _, state, _ in states] == ["pending"]
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(webhook_attempts))).scalar() == 1


async def test_events_committed_in_this_process_wake_the_worker(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    await _subscribe(varsel, receiver)
    signal = varsel.wakeups.webhooks
    waiting = asyncio.create_task(signal.wait(clock, 600, None))
    await asyncio.sleep(0)
    async with database.transaction() as conn:
        await fan_out(conn, [Event(ORG, "order.completed", clock.now(), {"type": "order.completed"})])
        await asyncio.sleep(0.05)
        assert not waiting.done()  # not before the commit
    await asyncio.wait_for(waiting, 10)


async def test_enabling_again_makes_the_pending_events_due_at_once(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    made = await _subscribe(varsel, receiver)
    await write_events(database, clock, 2)
    receiver.mode = "fail"
    assert await _delivery(varsel).deliver_due() == 1  # the head is due again only in 5 s
    disabled = await varsel.webhooks.change(ORG, made.id, SubscriptionChange(enabled=False))
    assert disabled.enabled is False
    assert disabled.failing_since == clock.now()
    receiver.mode = "ok"
    enabled = await varsel.webhooks.enable(ORG, made.id)
    assert enabled.enabled is True
    assert enabled.failing_since is None
    assert await _delivery(varsel).deliver_due() == 2
    assert numbers(receiver.deliveries) == [0, 0, 1]


async def test_enabling_again_writes_only_the_event_a_failure_put_off(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """The events behind the failed head were never attempted and are due already: an endpoint disabled for long may
    have a great many, and enabling it must not write (and lock) them all in its transaction."""
    made = await _subscribe(varsel, receiver)
    written = clock.now()
    await write_events(database, clock, 3)
    receiver.mode = "fail"
    assert await _delivery(varsel).deliver_due() == 1  # the head is due again only in 5 s
    await varsel.webhooks.change(ORG, made.id, SubscriptionChange(enabled=False))
    clock.advance(timedelta(seconds=1))
    await varsel.webhooks.enable(ORG, made.id)
    e = webhook_events
    async with database.read() as conn:
        due = [row.next_attempt for row in await conn.execute(select(e.c.next_attempt).order_by(e.c.seq))]
    assert due == [clock.now(), written, written]


async def test_the_owners_lock_on_a_subscription_holds_up_no_status_change_writing_its_events(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """A replay or an enabling locks the subscription for its transaction; every status change of the owner writes
    an event for it meanwhile (its foreign key takes a key-share lock), and must not wait for it (FOR UPDATE had it
    wait; those written under the status feed's lock held up every service owner)."""
    if database.dialect != "postgresql":
        return  # SQLite has one writer: every write waits for the one under way
    made = await _subscribe(varsel, receiver)
    async with database.transaction() as owners:
        assert await repository.lock_subscription(owners, ORG, made.id)
        async with database.transaction() as change:
            # Waiting would be for this test's own outer transaction: fail instead of hanging.
            await change.execute(text("SET LOCAL lock_timeout = '5s'"))
            assert await fan_out(change, [Event(ORG, "order.completed", clock.now(), {"type": "order.completed"})]) == 1


async def test_only_a_statement_that_writes_events_wakes_the_worker(
    database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """Only a committed INSERT into the outbox that wrote rows wakes this process's worker from the engine. The
    instant store's and the senders' one-statement writes (PostgreSQL) run past SQLAlchemy, straight on the driver,
    so the engine never sees them: they send their NOTIFY themselves when they wrote an event, which this process's
    listener hears as any other's (tests/webhooks/test_notice.py)."""
    # No Varsel built: its own wake-up on this engine would take the wake-ups this test's listener looks for.
    subscriptions = WebhookSubscriptions(database, clock, WebhookHosts(["127.0.0.1"]), timedelta(hours=24))
    await subscriptions.create(ORG, receiver.url, ["order.completed"])
    woken: list[bool] = []
    wake_on_committed_events(database.engine, lambda: woken.append(True))
    e = webhook_events
    keys = ["id", "subscription_id", "creator", "kind", "occurred", "payload", "state", "attempts", "next_attempt"]
    async with database.transaction() as conn:
        await conn.execute(insert(e).from_select(keys, select(*[e.c[key] for key in keys]).where(false())))
    assert woken == []
    await write_events(database, clock, 1)
    assert woken == [True]


async def test_the_endpoint_waiting_longest_is_taken_first(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    made = [
        await varsel.webhooks.create(ORG, receiver.url + "/a", ["order.completed"]),
        await varsel.webhooks.create(ORG, receiver.url + "/b", ["order.cancelled"]),
    ]
    receiver.secrets += [s.secret for s in made]
    # The endpoint later in id order has the older event: it goes first.
    later_id, earlier_id = sorted(made, key=lambda s: s.id, reverse=True)
    await write_events(database, clock, 1, kind=later_id.kinds[0])
    clock.advance(timedelta(seconds=1))
    await write_events(database, clock, 1, first=1, kind=earlier_id.kinds[0])
    one_at_a_time = _worker(varsel, "one at a time", max_concurrent_endpoints=1)
    assert await one_at_a_time.deliver_due() == 2
    assert numbers(receiver.deliveries) == [0, 1]


async def test_endpoints_are_delivered_to_at_the_same_time_up_to_the_cap(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    for _ in range(3):
        await _subscribe(varsel, receiver)
    await write_events(database, clock, 1)
    receiver.mode = "hold"
    # A timeout longer than the test: a held POST ends only when the receiver lets it go.
    two_at_a_time = _worker(varsel, "two at a time", max_concurrent_endpoints=2, timeout_seconds=120)
    delivering = asyncio.create_task(two_at_a_time.deliver_due())
    # Two endpoints' POSTs are under way together, both held by the receiver; the third waits for a free place.
    for _ in range(250):  # the receiver holds each POST for up to 60 s
        if len(receiver.deliveries) >= 2:
            break
        await asyncio.sleep(0.02)
    assert len(receiver.deliveries) == 2
    receiver.mode = "ok"
    receiver.release.set()
    assert await asyncio.wait_for(delivering, 30) == 3
    assert len(receiver.deliveries) == 3


async def test_with_every_place_taken_the_worker_waits_for_one_to_free_rather_than_looking_again(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """A due endpoint the worker has no room for is no reason to go round again: next_due answering "now" had the
    loop query the database over and over until the held delivery ended (the delivery that ends wakes it)."""
    await _subscribe(varsel, receiver)
    await write_events(database, clock, 1)
    receiver.mode = "hold"
    one_at_a_time = _worker(varsel, "one at a time", max_concurrent_endpoints=1, timeout_seconds=120)
    assert await one_at_a_time.run_once() == 1
    assert await asyncio.get_running_loop().run_in_executor(None, receiver.holding.wait, 30)
    await _subscribe(varsel, receiver, url=receiver.url + "/other")
    await write_events(database, clock, 1, first=1)  # the other endpoint's event, due now
    statements: list[str] = []

    def executed(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", executed)
    try:
        assert await one_at_a_time.run_once() == 0
        assert await one_at_a_time.next_due() is None
        assert statements == []
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", executed)
    receiver.mode = "ok"
    receiver.release.set()
    await asyncio.wait_for(asyncio.gather(*one_at_a_time._busy.values()), 30)
    assert await one_at_a_time.next_due() == clock.now()  # a place is free: the other endpoint is due
    assert await one_at_a_time.deliver_due() == 1
    # The held endpoint's 0, then its 1 and the other endpoint's (made after 0 was written).
    assert sorted(numbers(receiver.deliveries)) == [0, 1, 1]


async def test_a_delivery_that_ends_leaves_the_place_of_the_endpoints_next_delivery_alone(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """The endpoint is released in the delivery's last transaction, before its task ends: the loop may claim it again
    in between, and the ending task must not take the new delivery's place (the cap would undercount it, and stop()
    would not wait for it)."""
    made = await _subscribe(varsel, receiver)
    await write_events(database, clock, 1)
    receiver.mode = "hold"
    worker = _worker(varsel, "worker", max_concurrent_endpoints=2, timeout_seconds=120)
    assert await worker.run_once() == 1
    assert await asyncio.get_running_loop().run_in_executor(None, receiver.holding.wait, 30)
    ending = worker._busy[made.id]
    # The loop's new claim of the endpoint, as it is recorded once the ending delivery has released it.
    successor = asyncio.create_task(asyncio.Event().wait(), name=f"webhooks {made.id}")
    worker._busy[made.id] = successor
    receiver.release.set()
    await asyncio.wait_for(ending, 30)
    assert worker._busy == {made.id: successor}
    await worker.stop()
    assert successor.cancelled()


async def test_attempts_are_counted_in_the_metrics(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    await _subscribe(varsel, receiver)
    await write_events(database, clock, 1)
    assert await _delivery(varsel).deliver_due() == 1
    receiver.mode = "fail"
    await write_events(database, clock, 1, first=1)
    assert await _delivery(varsel).deliver_due() == 1
    metrics = (await client.get("/metrics")).text
    assert 'varsel_webhook_attempts_total{outcome="delivered"} 1.0' in metrics
    assert 'varsel_webhook_attempts_total{outcome="failed"} 1.0' in metrics
    assert 'varsel_webhook_attempt_seconds_count{outcome="failed"} 1.0' in metrics


async def test_the_running_webhooks_worker_delivers_what_is_committed(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    await _subscribe(varsel, receiver)
    varsel.workers.start(["webhooks"])
    try:
        await write_events(database, clock, 3)
        for _ in range(500):
            if len(receiver.deliveries) == 3:
                break
            await asyncio.sleep(0.02)
        assert numbers(receiver.deliveries) == [0, 1, 2]
    finally:
        await varsel.workers.stop()


async def test_the_worker_is_woken_only_once_the_events_are_visible_to_others(
    database: Database, clock: FrozenClock
) -> None:
    """Woken before the COMMIT, the worker would look, find nothing and sleep until its next poll."""
    if database.dialect != "sqlite":
        return  # another connection's view, read synchronously at the wake-up: sqlite3 can, asyncpg cannot
    path = database.engine.url.database
    assert path is not None
    seen: list[int] = []

    def wake() -> None:
        with contextlib.closing(sqlite3.connect(path)) as other:
            seen.append(other.execute("SELECT count(*) FROM webhook_events").fetchone()[0])

    wake_on_committed_events(database.engine, wake)
    async with database.transaction() as conn:
        await conn.execute(
            insert(webhook_subscriptions).values(
                id=new_id(), creator=ORG, url="https://x.example.com", secret="whsec_x", enabled=True,
                created=clock.now(), updated=clock.now(),
            )
        )  # fmt: skip
    async with database.transaction() as conn:
        subscription_id = (await conn.execute(select(webhook_subscriptions.c.id))).scalar_one()
        await conn.execute(
            insert(webhook_subscription_events).values(
                subscription_id=subscription_id, kind="order.completed", creator=ORG
            )
        )
    await write_events(database, clock, 2)
    assert seen == [2]


async def test_an_endpoint_is_delivered_to_while_its_owner_writes_events(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """The outbox's read locks the owner's subscriptions FOR KEY SHARE in every status change: the worker's claim
    must not skip them for it (on a busy owner, it would skip them nearly always)."""
    if database.dialect != "postgresql":
        return  # SQLite has one writer: the worker waits for the status change's commit
    await _subscribe(varsel, receiver)
    await write_events(database, clock, 2)
    async with database.transaction() as conn:
        await fan_out(conn, [Event(ORG, "order.completed", clock.now(), {"type": "order.completed"})])
        assert await _delivery(varsel).deliver_due() == 2  # while the status change is under way
    assert numbers(receiver.deliveries) == [0, 1]


async def test_events_committed_by_another_process_wake_the_worker_on_postgresql(
    varsel: Varsel, database: Database, clock: FrozenClock, receiver: Receiver
) -> None:
    """Another process's commit reaches this one's worker through NOTIFY and its listener, not only by polling."""
    if database.dialect != "postgresql":
        return  # SQLite's processes poll
    await _subscribe(varsel, receiver)
    here = Wakeups()
    listener = PostgresListener(database.url, here)
    listening = asyncio.create_task(listener.run())
    other = Database(database.url)  # another process's engine, with its own wake-up of its own workers
    woken_there: list[bool] = []
    wake_on_committed_events(other.engine, lambda: woken_there.append(True))
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        await asyncio.sleep(0)
        here.webhooks._event.clear()  # the listener wakes everyone once when it connects
        waiting = asyncio.create_task(here.webhooks.wait(clock, 600, None))
        async with other.transaction() as conn:
            await fan_out(conn, [Event(ORG, "order.completed", clock.now(), {"type": "order.completed"})] * 2)
            await asyncio.sleep(0.1)
            assert not waiting.done()  # a NOTIFY is delivered at the commit
        await asyncio.wait_for(waiting, 10)
        assert woken_there == [True]
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await other.dispose()


async def test_a_rollback_on_a_connection_the_database_dropped_does_not_raise_in_the_wakeup(database: Database) -> None:
    """A restart of the database invalidates the connections in use: the listener must not read such a connection's
    info in its rollback (it raised there, and a request's 503 for the outage became a 500)."""
    wake_on_committed_events(database.engine, lambda: None)
    async with database.engine.connect() as conn:
        await conn.execute(select(literal(1)))
        await conn.invalidate()  # as the driver does when the connection is found dropped
        await conn.rollback()
