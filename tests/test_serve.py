"""`varsel serve` as a user runs it: a real process, a real port, a token from `varsel token`, curl-like calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.orders.test_orders_api import SPEC_003_EXAMPLE
from varsel.db.engine import Database

VARSEL = str(Path(sys.executable).parent / "varsel")
SAMPLE_REGISTRY = Path(__file__).parent.parent / "samples" / "registry.jsonl"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, database_url: str, database: Database) -> Iterator[tuple[str, dict[str, str]]]:
    """A running `varsel serve` on the test's database (SQLite file, or PostgreSQL) and its environment."""
    # `database` empties the session's PostgreSQL database: orders other tests left there would be sent too.
    del database
    port = _free_port()
    env = {**os.environ, "VARSEL_DATA_DIR": str(tmp_path / "data")}
    if database_url.startswith("postgresql"):
        env["VARSEL_DATABASE_URL"] = database_url
    else:
        env.pop("VARSEL_DATABASE_URL", None)  # the default: SQLite in the data folder
    process = subprocess.Popen(
        [VARSEL, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                process.kill()
                pytest.fail(f"varsel serve did not start:\n{output}")
            time.sleep(0.1)
    try:
        yield base, env
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_quick_start_with_a_token_from_varsel_token(served: tuple[str, dict[str, str]]) -> None:
    base, env = served
    printed = subprocess.run([VARSEL, "token", "--org", "ttd"], env=env, capture_output=True, text=True, check=True)
    token = printed.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    # The quick start loads the sample registry while the service runs.
    loaded = subprocess.run(
        [VARSEL, "registry", "import", str(SAMPLE_REGISTRY)], env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr

    created = httpx.post(f"{base}/notifications/api/v1/orders", json=SPEC_003_EXAMPLE, headers=headers)
    assert created.status_code == 202, created.text
    # The answer spec 003 shows for this request: the organisation is reachable, the person has reserved.
    assert created.json()["recipientLookup"] == {
        "status": "PartialSuccess",
        "isReserved": ["11876995923"],
        "missingContact": [],
    }
    location = created.headers["location"]
    assert location.startswith(f"{base}/notifications/api/v1/orders/")

    order = httpx.get(location, headers=headers)
    assert order.status_code == 200
    assert order.json()["sendersReference"] == SPEC_003_EXAMPLE["sendersReference"]
    # The workers run in the same process: the emails to the organisation land in the outbox, the reserved person
    # gets nothing, and the order completes.
    deadline = time.monotonic() + 20
    while True:
        status = httpx.get(order.json()["links"]["status"], headers=headers).json()
        emails = httpx.get(status["notificationsStatusSummary"]["email"]["links"]["self"], headers=headers).json()
        settled = all(n["sendStatus"]["status"] not in ("New", "Sending", "Succeeded") for n in emails["notifications"])
        if emails["generated"] and settled:
            break
        assert time.monotonic() < deadline, emails
        time.sleep(0.1)
    assert status["processingStatus"]["status"] == "Completed"
    delivered = sorted(n["recipient"]["emailAddress"] for n in emails["notifications"] if n["succeeded"])
    # The official addresses, and the contact point of the user authorised for the order's resource.
    assert delivered == [
        "ola@testbedrift.example.com",
        "post@testbedrift.example.com",
        "varsel@testbedrift.example.com",
    ]
    outbox = Path(env["VARSEL_DATA_DIR"]) / "outbox" / "email"
    written = sorted(path.read_text() for path in outbox.glob("*.eml"))
    assert len(written) == 3
    assert all("Subject: A test email from Altinn Notifications" in text for text in written)

    # The README's second example: a person by identity number, the name filled in from the registry.
    named = {
        "notificationChannel": "EmailPreferred",
        "emailTemplate": {"subject": "Til $recipientName$", "body": "Hei $recipientName$, du har en ny melding."},
        "smsTemplate": {"body": "Hei $recipientName$, du har en ny melding."},
        "recipients": [{"nationalIdentityNumber": "01017012345"}],
    }
    created = httpx.post(f"{base}/notifications/api/v1/orders", json=named, headers=headers)
    assert created.status_code == 202, created.text
    deadline = time.monotonic() + 20
    while len(list(outbox.glob("*.eml"))) < 4:
        assert time.monotonic() < deadline, "the named email did not arrive"
        time.sleep(0.1)
    newest = [path.read_text() for path in outbox.glob("*.eml") if "Ola Nordmann" in path.read_text()]
    assert len(newest) == 1
    assert "Subject: Til Ola Nordmann" in newest[0]
    assert "Hei Ola Nordmann, du har en ny melding." in newest[0]
    assert "To: ola.nordmann@example.com" in newest[0]

    # The embedded database lives in the data folder, next to the development signing key.
    if "VARSEL_DATABASE_URL" not in env:
        assert (Path(env["VARSEL_DATA_DIR"]) / "varsel.db").exists()
    assert (Path(env["VARSEL_DATA_DIR"]) / "dev-signing-key.pem").exists()


def test_migrate_command_is_idempotent(served: tuple[str, dict[str, str]]) -> None:
    _, env = served
    for _ in range(2):
        result = subprocess.run([VARSEL, "migrate"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
