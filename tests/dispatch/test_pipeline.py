"""The pipeline end to end with a frozen clock, on SQLite and PostgreSQL: orders become notifications at their
send time, pass through the development outbox, and the order completes."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import select, text

from tests.conftest import NOW
from tests.recipients.registry_data import load
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import email_notifications, metadata, orders, sms_notifications
from varsel.dispatch.window import OSLO
from varsel.providers.base import Accepted, EmailMessage
from varsel.settings import Settings

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]


class ConditionPeer:
    """A service owner's condition endpoint on loopback: /yes, /no and /broken; /held answers yes once the test
    sets `release` (and sets `held` when called)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.held = threading.Event()
        self.release = threading.Event()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer.calls.append(self.path)
                if self.path.startswith("/held"):
                    peer.held.set()
                    peer.release.wait(10)
                if self.path.startswith("/broken"):
                    self.send_response(500)
                    self.end_headers()
                    return
                body = json.dumps({"sendNotification": self.path.startswith(("/yes", "/held"))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def condition_peer() -> Iterator[ConditionPeer]:
    peer = ConditionPeer()
    yield peer
    peer.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The test's own loopback peer is allow-listed, as an operator would allow an internal condition service.
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": ["127.0.0.1"]})


async def _order(client: httpx.AsyncClient, auth: Auth, body: dict[str, Any], path: str = "/orders/email") -> str:
    response = await client.post(f"{V1}{path}", json=body, headers=auth())
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


def _email(*addresses: str, **extra: Any) -> dict[str, Any]:
    return {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": a} for a in addresses], **extra}


async def _order_status(database: Database, order_id: str) -> str:
    async with database.read() as conn:
        rows = await conn.execute(select(orders.c.status, orders.c.id))
        return next(str(row.status) for row in rows if str(row.id) == order_id)


async def _statuses(database: Database, table: Any) -> list[str]:
    async with database.read() as conn:
        return sorted(str(s) for s in (await conn.execute(select(table.c.status))).scalars())


def _outbox(settings: Settings) -> list[str]:
    return sorted(path.read_text() for path in (settings.data_dir / "outbox" / "email").glob("*.eml"))


async def test_send_now_reaches_the_outbox_and_the_order_completes(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, settings: Settings
) -> None:
    order_id = await _order(client, auth, _email("a@example.com", "b@example.com"))
    assert await varsel.workers.drain() > 0
    written = _outbox(settings)
    assert len(written) == 2
    assert all("Subject: Hei" in text and "Hallo" in text for text in written)
    assert await _statuses(varsel.database, email_notifications) == ["Delivered", "Delivered"]
    assert await _order_status(varsel.database, order_id) == "Completed"
    listed = (await client.get(f"{V1}/orders/{order_id}/notifications/email", headers=auth())).json()
    assert (listed["generated"], listed["succeeded"]) == (2, 2)


async def test_a_scheduled_order_waits_for_its_time(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    send_time = (NOW + timedelta(hours=1)).isoformat()
    order_id = await _order(client, auth, _email("a@example.com", requestedSendTime=send_time))
    await varsel.workers.drain()
    assert _outbox(settings) == []
    assert await _order_status(varsel.database, order_id) == "Registered"
    clock.advance(timedelta(minutes=59, seconds=59))
    await varsel.workers.drain()
    assert _outbox(settings) == []
    clock.advance(timedelta(seconds=1))
    await varsel.workers.drain()
    assert len(_outbox(settings)) == 1
    assert await _order_status(varsel.database, order_id) == "Completed"


async def test_a_cancelled_order_sends_nothing(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    send_time = (NOW + timedelta(hours=1)).isoformat()
    order_id = await _order(client, auth, _email("a@example.com", requestedSendTime=send_time))
    assert (await client.put(f"{V1}/orders/{order_id}/cancel", headers=auth())).status_code == 200
    clock.advance(timedelta(hours=2))
    await varsel.workers.drain()
    assert _outbox(settings) == []
    assert await _statuses(varsel.database, email_notifications) == []
    assert await _order_status(varsel.database, order_id) == "Cancelled"


async def test_reserved_and_unidentified_recipients_get_failed_notifications(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock, settings: Settings
) -> None:
    await load(varsel.database, clock, [
        {"kind": "person", "nationalIdentityNumber": "11876995923", "name": "R", "emailAddress": "r@example.com",
         "isReserved": True},
        {"kind": "person", "nationalIdentityNumber": "01017012345", "name": "Ola Nordmann",
         "emailAddress": "ola@example.com"},
    ])  # fmt: skip
    body = {
        "subject": "Til $recipientName$",
        "body": "Hei $recipientName$",
        "recipients": [
            {"nationalIdentityNumber": "11876995923"},
            {"nationalIdentityNumber": "99999999999"},
            {"nationalIdentityNumber": "01017012345"},
        ],
    }
    order_id = await _order(client, auth, body)
    await varsel.workers.drain()
    assert await _statuses(varsel.database, email_notifications) == [
        "Delivered",
        "Failed_RecipientNotIdentified",
        "Failed_RecipientReserved",
    ]
    (written,) = _outbox(settings)
    assert "Subject: Til Ola Nordmann" in written
    assert "Hei Ola Nordmann" in written
    assert await _order_status(varsel.database, order_id) == "Completed"
    listed = (await client.get(f"{V1}/orders/{order_id}/notifications/email", headers=auth())).json()
    reserved = next(n for n in listed["notifications"] if n["sendStatus"]["status"] == "Failed_RecipientReserved")
    assert reserved["recipient"] == {"nationalIdentityNumber": "11876995923", "isReserved": True}


async def test_nothing_to_send_completes_the_order_at_once(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel
) -> None:
    order_id = await _order(client, auth, {"subject": "s", "body": "b",
                                          "recipients": [{"nationalIdentityNumber": "99999999999"}]})  # fmt: skip
    await varsel.workers.processor.run_once()
    assert await _order_status(varsel.database, order_id) == "Completed"


@pytest.mark.parametrize(
    ("path", "order_status", "sent"),
    [("/yes", "Completed", 1), ("/no", "SendConditionNotMet", 0)],
)
async def test_send_condition(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    settings: Settings,
    condition_peer: ConditionPeer,
    path: str,
    order_status: str,
    sent: int,
) -> None:
    order_id = await _order(client, auth, _email("a@example.com", conditionEndpoint=condition_peer.url + path))
    await varsel.workers.drain()
    assert condition_peer.calls == [path]
    assert len(_outbox(settings)) == sent
    assert await _order_status(varsel.database, order_id) == order_status


async def test_a_failing_condition_is_retried_once_then_the_order_is_sent(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    settings: Settings,
    condition_peer: ConditionPeer,
) -> None:
    order_id = await _order(client, auth, _email("a@example.com", conditionEndpoint=condition_peer.url + "/broken"))
    await varsel.workers.drain()
    assert condition_peer.calls == ["/broken"]
    assert await _order_status(varsel.database, order_id) == "Registered"
    clock.advance(timedelta(seconds=59))
    await varsel.workers.drain()
    assert len(condition_peer.calls) == 1
    clock.advance(timedelta(seconds=1))
    await varsel.workers.drain()
    assert len(condition_peer.calls) == 2
    # The reference sends when the retry fails too (the setting's default).
    assert len(_outbox(settings)) == 1
    assert await _order_status(varsel.database, order_id) == "Completed"


def _oslo(*args: int) -> datetime:
    return datetime(*args, tzinfo=OSLO).astimezone(UTC)  # type: ignore[misc]


def _sms_lines(settings: Settings) -> list[dict[str, Any]]:
    path = settings.data_dir / "outbox" / "sms.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize(
    ("ordered", "sent_at"),
    [
        (_oslo(2026, 3, 2, 16, 59), _oslo(2026, 3, 2, 16, 59)),
        (_oslo(2026, 3, 2, 17, 0), _oslo(2026, 3, 3, 9, 0)),
        (_oslo(2026, 3, 2, 3, 0), _oslo(2026, 3, 2, 9, 0)),
        # Across the change to summer time on 29 March: still 09:00 on the wall clock.
        (_oslo(2026, 3, 28, 22, 0), _oslo(2026, 3, 29, 9, 0)),
    ],
)
async def test_daytime_sms_waits_for_the_window(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    settings: Settings,
    ordered: datetime,
    sent_at: datetime,
) -> None:
    clock.set(ordered)
    order_id = await _order(
        client, auth, {"body": "Hei", "recipients": [{"mobileNumber": "+4790000001"}]}, "/orders/sms"
    )
    await varsel.workers.drain()
    if sent_at > ordered:
        assert _sms_lines(settings) == []
        clock.set(sent_at - timedelta(seconds=1))
        await varsel.workers.drain()
        assert _sms_lines(settings) == []
        clock.set(sent_at)
        await varsel.workers.drain()
    (line,) = _sms_lines(settings)
    assert (line["to"], line["body"], line["from"]) == ("+4790000001", "Hei", "Varsel")
    # 48 hours to live, counted from when it may first be sent.
    assert datetime.fromisoformat(line["expiry"]) == sent_at + timedelta(hours=48)
    assert await _order_status(varsel.database, order_id) == "Completed"


@pytest.mark.parametrize(
    ("window", "ordered", "sent_at"),
    [
        # The operator's own hours and zone: 08:00-20:00 in Helsinki (UTC+2 in March).
        ({"opens": "08:00", "closes": "20:00", "timezone": "Europe/Helsinki"}, _oslo(2026, 3, 2, 18, 30),
         _oslo(2026, 3, 2, 18, 30)),
        ({"opens": "08:00", "closes": "20:00", "timezone": "Europe/Helsinki"}, _oslo(2026, 3, 2, 19, 0),
         _oslo(2026, 3, 3, 7, 0)),
        # Both at 00:00: the window never closes, so a Daytime SMS goes out at 03:00.
        ({"opens": "00:00", "closes": "00:00"}, _oslo(2026, 3, 2, 3, 0), _oslo(2026, 3, 2, 3, 0)),
    ],
)  # fmt: skip
async def test_the_sms_window_is_a_setting(
    varsel: Varsel,
    client: httpx.AsyncClient,
    auth: Auth,
    clock: FrozenClock,
    settings: Settings,
    window: dict[str, str],
    ordered: datetime,
    sent_at: datetime,
) -> None:
    configured = Settings(data_dir=settings.data_dir, dispatch={"sms_daytime": window})
    other = build(configured, clock=clock, database=varsel.database)
    workers = other.workers
    clock.set(ordered)
    await _order(client, auth, {"body": "Hei", "recipients": [{"mobileNumber": "+4790000001"}]}, "/orders/sms")
    await workers.drain()
    if sent_at > ordered:
        assert _sms_lines(settings) == []
        clock.set(sent_at - timedelta(seconds=1))
        await workers.drain()
        assert _sms_lines(settings) == []
        clock.set(sent_at)
        await workers.drain()
    (line,) = _sms_lines(settings)
    assert datetime.fromisoformat(line["expiry"]) == sent_at + timedelta(hours=48)
    await other.http.aclose()


@pytest.mark.parametrize(
    "window",
    [
        {"opens": "17:00", "closes": "09:00"},
        {"opens": "09:00", "closes": "09:00"},
        {"timezone": "Europe/Atlantis"},
        {"opens": "09:00+01:00"},
    ],
)
def test_an_sms_window_that_cannot_be_is_refused_at_start(window: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(dispatch={"sms_daytime": window})


async def test_notifications_never_sent_expire_and_the_order_completes(
    client: httpx.AsyncClient, auth: Auth, varsel: Varsel, clock: FrozenClock
) -> None:
    order_id = await _order(client, auth, _email("a@example.com"))
    await varsel.workers.processor.run_once()  # generated, but no sender ever runs (a provider long down)
    clock.advance(timedelta(hours=48))
    assert await varsel.workers.sweeper.run_once() == 0  # not yet: expiry is exclusive
    clock.advance(timedelta(seconds=1))
    assert await varsel.workers.sweeper.run_once() == 1
    assert await _statuses(varsel.database, email_notifications) == ["Failed_TTL"]
    assert await _order_status(varsel.database, order_id) == "Completed"


class RecordingEmailProvider:
    """Stands in for the email provider's side of the wire: counts what it is handed."""

    name = "recording"

    def __init__(self, sends: Counter[str]) -> None:
        self.sends = sends

    async def send(self, message: EmailMessage) -> Accepted:
        await asyncio.sleep(0)  # let the other worker run between calls
        self.sends[str(message.notification_id)] += 1
        return Accepted(reference=str(message.notification_id))

    async def close(self) -> None:
        return None


async def test_two_workers_hand_each_notification_to_the_provider_exactly_once(
    postgres_url: str, settings: Settings, clock: FrozenClock, auth: Auth
) -> None:
    # PostgreSQL only: there the claims of concurrent workers really overlap (FOR UPDATE SKIP LOCKED); SQLite
    # admits one writer at a time.
    cleaner = Database(postgres_url)
    async with cleaner.transaction() as conn:
        names = ", ".join(table.name for table in metadata.sorted_tables)
        await conn.execute(text(f"TRUNCATE {names} CASCADE"))
    await cleaner.dispose()
    sends: Counter[str] = Counter()
    small_batches = settings.model_copy(
        update={"dispatch": settings.dispatch.model_copy(update={"notification_batch_size": 25})}
    )
    first = build(small_batches, clock=clock, database=Database(postgres_url),
                  email_provider=RecordingEmailProvider(sends))  # fmt: skip
    second = build(small_batches, clock=clock, database=Database(postgres_url),
                   email_provider=RecordingEmailProvider(sends))  # fmt: skip
    app = create_app(first)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test") as client:
        for batch in range(2):
            addresses = [f"r{batch}-{i}@example.com" for i in range(1_000)]
            await _order(client, auth, _email(*addresses))
    await first.workers.processor.run_once()  # generate the 2,000 notifications first, so every drain finds work
    # Four drains in two "processes" (two worker identities, two connection pools) claim side by side.
    await asyncio.gather(first.workers.drain(), second.workers.drain(), first.workers.drain(), second.workers.drain())
    try:
        assert len(sends) == 2_000
        assert max(sends.values()) == 1
        assert await _statuses(first.database, email_notifications) == ["Succeeded"] * 2_000
        assert await _statuses(first.database, sms_notifications) == []
    finally:
        await first.close()
        await second.close()
