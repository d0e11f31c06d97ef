"""`varsel api` and `varsel worker` as separate real processes on one database: the API takes the order, the
worker sends it, and both stop gracefully on SIGTERM with exit code 0. On SQLite both processes share the file
(WAL, one writer at a time); on PostgreSQL the worker is woken through LISTEN/NOTIFY."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.providers.linkmobility_peer import LinkMobilityPeer
from tests.test_serve import VARSEL, _free_port


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([VARSEL, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read().decode() if process.stdout else ""
            process.kill()
            pytest.fail(f"{url} did not come up:\n{output}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture
def environment(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {**os.environ, "VARSEL_DATA_DIR": str(tmp_path / "data"), "VARSEL_DATABASE_URL": database_url}


def test_api_and_worker_processes_share_the_work(environment: dict[str, str]) -> None:
    api_port, metrics_port = _free_port(), _free_port()
    api = _start(["api", "--port", str(api_port)], environment)
    worker = None
    try:
        base = f"http://127.0.0.1:{api_port}"
        _wait_until_up(f"{base}/health/ready", api)
        worker = _start(["worker", "--metrics-port", str(metrics_port)], environment)
        _wait_until_up(f"http://127.0.0.1:{metrics_port}/health/ready", worker)
        token = subprocess.run(
            [VARSEL, "token", "--org", "ttd"], env=environment, capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        body = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": "ola@example.com"}]}
        created = httpx.post(f"{base}/notifications/api/v1/orders/email", json=body, headers=headers)
        assert created.status_code == 202, created.text
        status_url = created.json()["links"]["status"] if "links" in created.json() else None
        status_url = status_url or f"{created.headers['location']}/status"
        outbox = Path(environment["VARSEL_DATA_DIR"]) / "outbox" / "email"
        deadline = time.monotonic() + 20
        while not list(outbox.glob("*.eml")):
            assert time.monotonic() < deadline, "the worker process did not send the order"
            time.sleep(0.05)
        while httpx.get(status_url, headers=headers).json()["processingStatus"]["status"] != "Completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The API process has no workers: it did not send; the worker's metrics show it did.
        # (The counter moves just after the commit the API already sees, so it may lag a moment behind.)
        # (The session's PostgreSQL database may hold other tests' orders, which this worker sends too: at least 1.)
        delivered = 'varsel_status_transitions_total{entity="email",status="Delivered"} '
        while delivered not in (metrics := httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        api_metrics = httpx.get(f"{base}/metrics").text
        assert 'varsel_status_transitions_total{entity="email",status="Delivered"}' not in api_metrics
        assert 'varsel_orders_accepted_total{channel="Email"} 1.0' in api_metrics
    finally:
        codes = [_stop(api)] + ([_stop(worker)] if worker else [])
    assert codes == [0, 0]


def test_the_api_process_sends_instant_orders_through_the_configured_provider(environment: dict[str, str]) -> None:
    """`varsel api` runs no workers but sends instant orders itself: through the provider the settings name (here
    LINK Mobility's loopback gateway), not a development outbox."""
    with LinkMobilityPeer() as gateway:
        link = gateway.settings()
        env = {
            **environment,
            "VARSEL_SMS__PROVIDER": "linkmobility",
            "VARSEL_SMS__LINKMOBILITY__BASE_URL": link.base_url,
            "VARSEL_SMS__LINKMOBILITY__USERNAME": link.username,
            "VARSEL_SMS__LINKMOBILITY__PASSWORD": link.password.get_secret_value(),
            "VARSEL_SMS__LINKMOBILITY__PLATFORM_ID": link.platform_id,
            "VARSEL_SMS__LINKMOBILITY__PLATFORM_PARTNER_ID": link.platform_partner_id,
            "VARSEL_SMS__LINKMOBILITY__DELIVERY_REPORT_GATE": link.delivery_report_gate or "",
        }
        port = _free_port()
        api = _start(["api", "--port", str(port)], env)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_up(f"{base}/health/ready", api)
            token = subprocess.run(
                [VARSEL, "token", "--org", "ttd"], env=env, capture_output=True, text=True, check=True
            ).stdout.splitlines()[-1]
            body = {
                "idempotencyId": "process-1",
                "recipientSms": {
                    "phoneNumber": "+4799999999",
                    "timeToLiveInSeconds": 300,
                    "smsSettings": {"body": "Your code is 123456"},
                },
            }
            created = httpx.post(
                f"{base}/notifications/api/v1/future/orders/instant/sms",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert created.status_code == 201, created.text
            assert len(gateway.messages) == 1
            assert not (Path(env["VARSEL_DATA_DIR"]) / "outbox" / "sms.jsonl").exists()
        finally:
            assert _stop(api) == 0
