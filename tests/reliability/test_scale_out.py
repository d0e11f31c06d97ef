"""Scale-out on PostgreSQL, proven with real processes: several `varsel worker` processes share one database, a
worker is killed mid-batch, the providers go away for a while, PostgreSQL itself restarts under load. Whatever
happens, each notification reaches its provider, and at most the in-flight calls of a killed worker twice.

The SMTP relay counts by Message-ID and the SMS gateway by refId, both derived from the notification id, so the
counts are per notification. Figures (duplicates, the share of each worker) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.providers.linkmobility_peer import LinkMobilityPeer
from tests.reliability.harness import (
    ALWAYS_OPEN,
    FINAL_SENT,
    ORDERS,
    CountingRelay,
    Deployment,
    all_final,
    duplicates,
    email_orders,
    gateway_settings,
    metric,
    notification_ids,
    private_cluster,
    query,
    sms_counts,
    sms_orders,
    statuses,
    wait_until,
)
from varsel.db.tables import metadata

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def empty_postgres(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied: these tests read its rows from outside varsel."""
    names = ", ".join(table.name for table in metadata.sorted_tables)
    query(postgres_url, f"TRUNCATE {names} CASCADE")
    return postgres_url


@pytest.fixture
def relay() -> Iterator[CountingRelay]:
    relay = CountingRelay()
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture
def gateway() -> Iterator[LinkMobilityPeer]:
    with LinkMobilityPeer() as peer:
        yield peer


def _environment(tmp_path: Path, database_url: str, relay: CountingRelay, gateway: LinkMobilityPeer) -> dict[str, str]:
    return {
        **os.environ,
        "VARSEL_DATA_DIR": str(tmp_path / "data"),
        "VARSEL_DATABASE_URL": database_url,
        "VARSEL_LOG_LEVEL": "warning",
        **ALWAYS_OPEN,
        **relay.settings(),
        **gateway_settings(gateway),
    }


@pytest.fixture
def deployment(
    tmp_path: Path, empty_postgres: str, relay: CountingRelay, gateway: LinkMobilityPeer
) -> Iterator[Deployment]:
    with Deployment(_environment(tmp_path, empty_postgres, relay, gateway), tmp_path) as deployment:
        yield deployment


def _place(deployment: Deployment, emails: int, sms: int, per_order: int = 250) -> None:
    with httpx.Client(timeout=30) as client:
        for body in email_orders(emails, per_order):
            deployment.order(client, "/email", body)
        for body in sms_orders(sms, per_order):
            deployment.order(client, "/sms", body)


def test_three_worker_processes_send_5000_notifications_exactly_once(
    deployment: Deployment, empty_postgres: str, relay: CountingRelay, gateway: LinkMobilityPeer
) -> None:
    deployment.api()
    # Small batches, so the three workers contend for the same rows many times over.
    workers = [deployment.worker(f"worker-{n}", VARSEL_DISPATCH__NOTIFICATION_BATCH_SIZE="50") for n in range(3)]
    started = time.monotonic()
    _place(deployment, emails=2500, sms=2500)
    placed = time.monotonic()
    wait_until(all_final(empty_postgres, 2500), 240, "all 5,000 notifications to be sent", interval=0.5)
    print(f"\nplaced in {placed - started:.1f} s, all sent {time.monotonic() - placed:.1f} s later")

    emails, texts = relay.snapshot(), sms_counts(gateway)
    assert set(emails) == notification_ids(empty_postgres, "email_notifications")
    assert set(texts) == notification_ids(empty_postgres, "sms_notifications")
    assert duplicates(emails) == 0
    assert duplicates(texts) == 0
    assert set(statuses(empty_postgres, "email_notifications")) <= FINAL_SENT["email"]
    assert set(statuses(empty_postgres, "sms_notifications")) <= FINAL_SENT["sms"]
    shares = {
        process.name: (
            metric(metrics, 'varsel_status_transitions_total{entity="email",status="Succeeded"}'),
            metric(metrics, 'varsel_status_transitions_total{entity="sms",status="Accepted"}'),
        )
        for process, metrics in workers
    }
    print(f"\nemails and SMS sent per worker process: {shares}")
    # Each process took part: the work was shared, not done by whichever won the first claim.
    assert all(email > 0 and sms > 0 for email, sms in shares.values()), shares
    assert sum(email for email, _ in shares.values()) == 2500
    assert sum(sms for _, sms in shares.values()) == 2500
    assert deployment.stop_all() == [0, 0, 0, 0]


def test_a_worker_killed_mid_batch_leaves_nothing_unsent_and_duplicates_at_most_its_calls_in_flight(
    deployment: Deployment, empty_postgres: str, gateway: LinkMobilityPeer
) -> None:
    # Each call takes 50 ms at the gateway, so the doomed worker always has calls under way (at most 20 at once)
    # and a batch of claimed notifications not yet started. Its leases run out after 5 s.
    gateway.delay = 0.05
    fast_leases = {"VARSEL_DISPATCH__LEASE_SECONDS": "5", "VARSEL_DISPATCH__NOTIFICATION_BATCH_SIZE": "100"}
    deployment.api()
    doomed, _ = deployment.worker("doomed", VARSEL_SMS__GUARD__MAX_CONCURRENCY="20", **fast_leases)
    survivor, _ = deployment.worker("survivor", **fast_leases)
    _place(deployment, emails=0, sms=2000)
    wait_until(lambda: len(gateway.messages) >= 400, 120, "the first 400 SMS")

    def holding() -> int:
        sql = "SELECT count(*) AS n FROM sms_notifications WHERE status = 'Sending' AND claimed_by LIKE $1"
        return int(query(empty_postgres, sql, f"%:{doomed.pid}:%")[0]["n"])

    # Killed in the middle of a batch: the moment it holds claimed notifications (between batches it holds none).
    deadline = time.monotonic() + 30
    while (held := holding()) == 0:
        assert time.monotonic() < deadline, "the worker never held a batch"
        time.sleep(0.01)
    doomed.kill()

    wait_until(all_final(empty_postgres, 2000, kinds=("sms",)), 120, "every SMS to be sent after the kill")
    counts = sms_counts(gateway)
    assert set(counts) == notification_ids(empty_postgres, "sms_notifications")
    twice = duplicates(counts)
    print(f"\nkilled while holding {held} claimed SMS (at most 20 of them at the gateway): {twice} sent twice")
    assert twice <= 20
    assert set(statuses(empty_postgres, "sms_notifications")) <= FINAL_SENT["sms"]
    assert survivor.stop() == 0


def test_providers_away_for_a_while_get_everything_once_they_are_back_and_nothing_fails(
    deployment: Deployment, empty_postgres: str, relay: CountingRelay, gateway: LinkMobilityPeer
) -> None:
    # The relay refuses connections and the gateway answers 503 until both come back; short backoffs and breaker
    # cooldowns keep the test quick (the real ones are the defaults: 5 s doubling, and so on).
    relay.stop()
    gateway.fail_next(10**9, status=503)
    quick_recovery = {
        "VARSEL_DISPATCH__RETRY_FIRST_SECONDS": "0.2",
        "VARSEL_DISPATCH__RETRY_MAX_SECONDS": "1",
        "VARSEL_EMAIL__GUARD__COOLDOWN_SECONDS": "0.2",
        "VARSEL_EMAIL__GUARD__MAX_COOLDOWN_SECONDS": "1",
        "VARSEL_SMS__GUARD__COOLDOWN_SECONDS": "0.2",
        "VARSEL_SMS__GUARD__MAX_COOLDOWN_SECONDS": "1",
    }
    deployment.api()
    deployment.worker("worker-1", **quick_recovery)
    deployment.worker("worker-2", **quick_recovery)
    _place(deployment, emails=500, sms=500, per_order=100)
    # The outage is real: varsel keeps trying and both providers see it failing, for a few rounds of backoff.
    wait_until(lambda: gateway.statuses().count(503) >= 10, 60, "the gateway to refuse SMS")
    time.sleep(3)
    assert relay.snapshot() == Counter()
    assert len(gateway.messages) == 0
    assert statuses(empty_postgres, "email_notifications")["New"] > 0
    relay.start()
    gateway.ok()

    wait_until(all_final(empty_postgres, 500), 120, "everything to be sent once the providers are back")
    emails, texts = relay.snapshot(), sms_counts(gateway)
    assert set(emails) == notification_ids(empty_postgres, "email_notifications")
    assert set(texts) == notification_ids(empty_postgres, "sms_notifications")
    assert (duplicates(emails), duplicates(texts)) == (0, 0)
    assert set(statuses(empty_postgres, "email_notifications")) <= FINAL_SENT["email"]
    assert set(statuses(empty_postgres, "sms_notifications")) <= FINAL_SENT["sms"]
    print(f"\nthe gateway refused {gateway.statuses().count(503)} calls; then 500 emails and 500 SMS went out once")


class OrderLoad:
    """Places one-recipient orders, email and SMS in turn, as fast as one client can, from a thread of its own;
    keeps the id of every order that got a 202 and the status of every answer."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self.accepted: list[str] = []
        self.answers: Counter[int] = Counter()
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="order-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        api, headers = self._deployment.api_url, self._deployment.headers
        with httpx.Client(timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                path, body = (
                    (
                        "/email",
                        {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": f"p{n}@example.com"}]},
                    )
                    if n % 2
                    else ("/sms", {"body": "Hei", "recipients": [{"mobileNumber": f"+47{90000000 + n}"}]})
                )
                try:
                    answer = client.post(f"{api}{ORDERS}{path}", json=body, headers=headers)
                except httpx.TransportError as error:
                    self.unexpected.append(f"transport error: {error!r}")
                    continue
                self.answers[answer.status_code] += 1
                if answer.status_code == 202:
                    self.accepted.append(answer.json()["orderId"])
                elif answer.status_code == 503:
                    problem = answer.json()
                    if problem.get("status") != 503 or "Retry-After" not in answer.headers:
                        self.unexpected.append(f"503 without problem or Retry-After: {answer.text}")
                    time.sleep(0.05)  # a client backs off a little
                else:
                    self.unexpected.append(f"{answer.status_code}: {answer.text[:500]}")


def test_postgresql_restarted_under_load_loses_no_accepted_order_and_nobody_needs_a_restart(
    tmp_path: Path, relay: CountingRelay, gateway: LinkMobilityPeer
) -> None:
    environment = _environment(tmp_path, "", relay, gateway)
    with (
        private_cluster() as cluster,
        Deployment({**environment, "VARSEL_DATABASE_URL": cluster.url}, tmp_path) as deployment,
    ):
        load = OrderLoad(deployment)
        try:
            deployment.api()
            # Leases far longer than the test: whatever the outage left claimed must be given back by the workers
            # themselves once the database is back, not by a lease running out.
            _, metrics = deployment.worker("worker-1", VARSEL_DISPATCH__LEASE_SECONDS="3600")
            deployment.worker("worker-2", VARSEL_DISPATCH__LEASE_SECONDS="3600")
            load.start()

            def accepted_grows_by(count: int) -> None:
                target = len(load.accepted) + count
                wait_until(lambda: len(load.accepted) >= target, 60, f"{count} more orders to be accepted")

            accepted_grows_by(100)
            cluster.ctl("restart")  # under load: connections of every process are cut
            accepted_grows_by(100)
            # And a longer outage, so that requests certainly meet it: 503 problems, not 500s, readiness fails.
            cluster.ctl("stop")
            during = httpx.post(
                f"{deployment.api_url}{ORDERS}/email",
                json={"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}]},
                headers=deployment.headers,
                timeout=30,
            )
            assert during.status_code == 503, during.text
            assert during.headers["content-type"].startswith("application/problem+json")
            assert httpx.get(f"{deployment.api_url}/health/ready").status_code == 503
            assert httpx.get(f"{deployment.api_url}/health/live").status_code == 200
            assert httpx.get(f"{metrics}/health/ready").status_code == 503
            time.sleep(2)
            cluster.ctl("start")
            accepted_grows_by(100)
        finally:
            load.stop()
        print(f"\nanswers while PostgreSQL restarted and stopped: {dict(load.answers)}")
        assert load.unexpected == []
        assert load.answers[503] > 0

        # Every order that got a 202 is there, and every notification reached its provider once.
        stored = {str(row["id"]) for row in query(cluster.url, "SELECT id FROM orders")}
        assert set(load.accepted) <= stored

        def everything_sent() -> bool:
            # Processed: SMS accepted by the gateway, awaiting its delivery reports (this test posts none).
            sql = "SELECT count(*) AS n FROM orders WHERE status NOT IN ('Processed', 'Completed')"
            unfinished = query(cluster.url, sql)[0]["n"]
            return (
                unfinished == 0
                and set(relay.snapshot()) == notification_ids(cluster.url, "email_notifications")
                and set(sms_counts(gateway)) == notification_ids(cluster.url, "sms_notifications")
            )

        try:
            wait_until(everything_sent, 60, "every order to be sent after the outage", interval=0.5)
        except BaseException:
            orders = query(cluster.url, "SELECT status, count(*) AS n FROM orders GROUP BY 1")
            print("orders", [dict(r) for r in orders])
            print("email", statuses(cluster.url, "email_notifications"), len(relay.snapshot()))
            print("sms", statuses(cluster.url, "sms_notifications"), len(sms_counts(gateway)))
            print(deployment.outputs())
            raise
        per_order = query(
            cluster.url,
            "SELECT order_id, count(*) AS n FROM"
            " (SELECT order_id FROM email_notifications UNION ALL SELECT order_id FROM sms_notifications) AS sent"
            " GROUP BY order_id",
        )
        assert {str(row["order_id"]) for row in per_order} == stored
        assert {row["n"] for row in per_order} == {1}
        assert (duplicates(relay.snapshot()), duplicates(sms_counts(gateway))) == (0, 0)
        assert deployment.stop_all() == [0, 0, 0]
