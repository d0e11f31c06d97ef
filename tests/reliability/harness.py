"""What the multi-process reliability tests are made of: varsel as real processes (`varsel api`, `varsel worker`),
an SMTP relay that counts messages by Message-ID, the loopback LINK Mobility gateway that counts by refId, a private
PostgreSQL cluster that a test may restart, and reads of the database from outside varsel.

The peers run in threads of the test process; varsel's processes reach them over loopback as they would reach the
real providers. Process output goes to files (a pipe nobody reads would fill and block the process's logging).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as ServerSession
from aiosmtpd.smtp import Envelope, Session

from tests.conftest import REQUIRE_POSTGRES, _asyncpg_dsn
from tests.providers.linkmobility_peer import LinkMobilityPeer
from tests.test_serve import VARSEL, _free_port

ORDERS = "/notifications/api/v1/orders"
# Any hour: a CI run at night must send its SMS too (the window itself is tested with a frozen clock).
ALWAYS_OPEN = {"VARSEL_DISPATCH__SMS_DAYTIME__OPENS": "00:00", "VARSEL_DISPATCH__SMS_DAYTIME__CLOSES": "00:00"}
FINAL_SENT = {"email": {"Succeeded", "Delivered"}, "sms": {"Accepted", "Delivered"}}


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class VarselProcess:
    """`varsel <args>` as a child process, its output in a file beside the test's other files."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._file = self.log.open("wb")
        self.process = subprocess.Popen([VARSEL, *args], env=env, stdout=self._file, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self, tail: int = 4000) -> str:
        # Closed once the process ended (stop); a process that died at start is read from its log all the same.
        if not self._file.closed:
            self._file.flush()
        return self.log.read_text(errors="replace")[-tail:]

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"{self.name} did not come up at {url}:\n{self.output()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as an orchestrator stops a process; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no chance to finish or release anything, like a machine that loses power."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._file.close()


class Deployment:
    """The processes of one varsel deployment on one database; stops whatever is still running at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[VarselProcess] = []
        self.api_url = ""
        self._headers: dict[str, str] | None = None

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        # Whatever failed, no process outlives its test.
        self.stop_all()

    def api(self) -> VarselProcess:
        port = _free_port()
        process = self._start("api", ["api", "--port", str(port)], self.env)
        self.api_url = f"http://127.0.0.1:{port}"
        process.wait_ready(f"{self.api_url}/health/ready")
        return process

    def worker(self, name: str, **settings: str) -> tuple[VarselProcess, str]:
        """A worker process with extra settings; also its metrics address."""
        port = _free_port()
        process = self._start(name, ["worker", "--metrics-port", str(port)], {**self.env, **settings})
        metrics = f"http://127.0.0.1:{port}"
        process.wait_ready(f"{metrics}/health/ready")
        return process, metrics

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> VarselProcess:
        process = VarselProcess(name, args, env, self.log_dir)
        self.processes.append(process)
        return process

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            token = subprocess.run(
                [VARSEL, "token", "--org", "ttd"], env=self.env, capture_output=True, text=True, check=True
            ).stdout.splitlines()[-1]
            self._headers = {"Authorization": f"Bearer {token}"}
        return self._headers

    def order(self, client: httpx.Client, path: str, body: dict[str, Any]) -> str:
        answer = client.post(f"{self.api_url}{ORDERS}{path}", json=body, headers=self.headers)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["orderId"])

    def stop_all(self) -> list[int]:
        return [process.stop() for process in self.processes if process.process.poll() is None]

    def outputs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()}" for p in self.processes)


def email_orders(count: int, per_order: int) -> Iterator[dict[str, Any]]:
    for start in range(0, count, per_order):
        recipients = [{"emailAddress": f"person{i}@example.com"} for i in range(start, min(count, start + per_order))]
        yield {"subject": "Hei", "body": "Hallo", "recipients": recipients}


def sms_orders(count: int, per_order: int) -> Iterator[dict[str, Any]]:
    for start in range(0, count, per_order):
        recipients = [{"mobileNumber": f"+47{90000000 + i}"} for i in range(start, min(count, start + per_order))]
        yield {"body": "Hei", "recipients": recipients}


# -- the providers' side --------------------------------------------------------------------------------------------

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^@>]+)@varsel>", re.IGNORECASE | re.MULTILINE)


class CountingRelay:
    """An SMTP relay (aiosmtpd) on a fixed loopback port that counts each message by its Message-ID, which varsel
    derives from the notification id. Stopped, its port refuses connections; started again, it takes them."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_DATA(self, server: ServerSession, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        found = _MESSAGE_ID.search(envelope.content)
        with self._lock:
            self.counts[found.group(1).decode() if found else "?"] += 1
        return "250 2.0.0 queued"

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def settings(self) -> dict[str, str]:
        return {
            "VARSEL_EMAIL__PROVIDER": "smtp",
            "VARSEL_EMAIL__SMTP__HOST": "127.0.0.1",
            "VARSEL_EMAIL__SMTP__PORT": str(self.port),
            "VARSEL_EMAIL__SMTP__SECURITY": "none",
            "VARSEL_EMAIL__SMTP__TIMEOUT_SECONDS": "5",
        }


def gateway_settings(peer: LinkMobilityPeer) -> dict[str, str]:
    return {
        "VARSEL_SMS__PROVIDER": "linkmobility",
        "VARSEL_SMS__LINKMOBILITY__BASE_URL": peer.url,
        "VARSEL_SMS__LINKMOBILITY__USERNAME": peer.username,
        "VARSEL_SMS__LINKMOBILITY__PASSWORD": peer.password,
        "VARSEL_SMS__LINKMOBILITY__PLATFORM_ID": peer.platform_id,
        "VARSEL_SMS__LINKMOBILITY__PLATFORM_PARTNER_ID": peer.platform_partner_id,
        "VARSEL_SMS__LINKMOBILITY__DELIVERY_REPORT_GATE": peer.gates[0],
        "VARSEL_SMS__LINKMOBILITY__TIMEOUT_SECONDS": "5",
    }


def sms_counts(peer: LinkMobilityPeer) -> Counter[str]:
    return Counter({ref: count for ref, count in peer.counts_by_ref().items() if ref is not None})


def duplicates(counts: Counter[str]) -> int:
    return sum(count - 1 for count in counts.values() if count > 1)


# -- the database, read from outside varsel ------------------------------------------------------------------------


def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(_asyncpg_dsn(database_url), timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def statuses(database_url: str, table: str) -> Counter[str]:
    rows = query(database_url, f"SELECT status, count(*) AS n FROM {table} GROUP BY status")
    return Counter({row["status"]: row["n"] for row in rows})


def notification_ids(database_url: str, table: str) -> set[str]:
    return {str(row["id"]) for row in query(database_url, f"SELECT id FROM {table}")}


def all_final(database_url: str, expected: int, kinds: tuple[str, ...] = ("email", "sms")) -> Callable[[], bool]:
    """True once `expected` notifications of each kind exist and none of them is New or Sending."""

    def check() -> bool:
        for table in (f"{kind}_notifications" for kind in kinds):
            counts = statuses(database_url, table)
            if sum(counts.values()) != expected or counts["New"] or counts["Sending"]:
                return False
        return True

    return check


def metric(metrics_url: str, line_start: str) -> float:
    """The value of one sample of a worker's /metrics, 0 when absent."""
    for line in httpx.get(f"{metrics_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- a PostgreSQL cluster of the test's own ---------------------------------------------------------------------------


@dataclass
class Cluster:
    version: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/varsel"

    def ctl(self, action: str) -> None:
        subprocess.run(["pg_ctlcluster", self.version, self.name, action], check=True, capture_output=True)


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster made for one test, so restarting it disturbs no other test; dropped afterwards.

    Needs Debian's postgresql-common (pg_createcluster) and root, as on this project's machines; elsewhere the test
    skips, and in CI (VARSEL_REQUIRE_POSTGRES) it fails."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    problem = None
    if not versions or shutil.which("pg_createcluster") is None:
        problem = "Debian's pg_createcluster is not installed"
    elif os.geteuid() != 0:
        problem = "creating a PostgreSQL cluster needs root"
    if problem:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{problem} (VARSEL_REQUIRE_POSTGRES is set, so this is a failure)")
        pytest.skip(problem)
    cluster = Cluster(versions[-1], f"varsel_{uuid.uuid4().hex[:8]}", _free_port())
    create = [
        "pg_createcluster", cluster.version, cluster.name, "--port", str(cluster.port), "--start",
        "--", "--auth-local=trust", "--auth-host=trust",
    ]  # fmt: skip
    subprocess.run(create, check=True, capture_output=True)
    try:
        query(cluster.url.replace("/varsel", "/postgres"), "CREATE DATABASE varsel")
        yield cluster
    finally:
        subprocess.run(["pg_dropcluster", cluster.version, cluster.name, "--stop"], capture_output=True)
