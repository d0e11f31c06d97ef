"""Hostile peers: whatever a report webhook's caller, a condition endpoint, a provider or a registry sends, varsel
answers with a clear 400 (webhooks, registry pushes), an inconclusive check (conditions), a clear transient or
permanent failure (providers' answers) or a clear import error: never a 500, an unexpected exception or stuck work.

The hostile input: JSON nested past Python's recursion limit, nested deeper than varsel reads (64 levels), integers
of more digits than Python converts (4,300), and timestamps whose UTC time falls outside the years 1-9999.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from tests.conftest import NOW
from tests.providers.acs_peer import AcsPeer
from tests.providers.linkmobility_peer import LinkMobilityPeer, delivery_report
from tests.providers.test_delivery_reports import EMAIL, SMS, Channel, _event, _with_reports
from tests.test_hostile_input import BODY_ENDPOINTS, BodyEndpoint
from varsel.app import Varsel
from varsel.clock import FrozenClock, SystemClock
from varsel.db.engine import Database
from varsel.db.tables import delivery_reports, orders
from varsel.dispatch.conditions import ConditionChecker, ConditionResult
from varsel.notifications.statuses import EmailStatus, SmsStatus
from varsel.orders.vocabulary import EmailContentType
from varsel.providers.acs import AcsEmailProvider, AcsSettings
from varsel.providers.base import (
    Accepted,
    EmailMessage,
    PermanentEmailError,
    PermanentSmsError,
    ProviderUnavailable,
    SmsMessage,
    TransientProviderError,
)
from varsel.providers.guard import GuardSettings, ProviderGuard
from varsel.providers.http import MAX_RETRY_AFTER_SECONDS
from varsel.providers.linkmobility import LinkMobilitySmsProvider
from varsel.recipients.imports import ImportSummary, RegistryImporter, parse_record
from varsel.settings import ConditionSettings, Settings

V1 = "/notifications/api/v1"
Auth = Callable[..., dict[str, str]]

# Past Python's recursion limit: json.loads raises RecursionError, which is no ValueError.
PAST_RECURSION = b"[" * 100_000
# Within Python's recursion limit, but deeper than any document varsel reads.
DEEPER_THAN_READ = b"[" * 100 + b"]" * 100
# More digits than Python converts to an int: json.loads raises a ValueError that is no JSONDecodeError.
HUGE_INTEGER = "1" * 5_000


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------- delivery-report webhooks


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Report credentials for the webhooks; the condition peer below lives on loopback, allow-listed.
    return _with_reports(settings.model_copy(update={"conditions": ConditionSettings(allowed_hosts=["127.0.0.1"])}))


@pytest.fixture(params=[SMS, EMAIL], ids=["linkmobility", "acs"])
def channel(request: pytest.FixtureRequest) -> Channel:
    value: Channel = request.param
    return value


def _link_report(**fields: Any) -> dict[str, Any]:
    return {**delivery_report(str(uuid.uuid4()), "lm-1"), **fields}


def _acs_event(*, time_field: str = "deliveryAttemptTimeStamp", **data: Any) -> dict[str, Any]:
    event = _event(str(uuid.uuid4()), "Delivered", **data)
    if time_field == "eventTime":
        del event["data"]["deliveryAttemptTimeStamp"]
    return event


def _hostile_reports(channel: Channel) -> dict[str, bytes]:
    def body(document: Any) -> bytes:
        return json.dumps(document).encode()

    if channel.name == "sms":
        return {
            "past-recursion": PAST_RECURSION,
            "objects-past-recursion": b'{"refId":' * 50_000 + b"1" + b"}" * 50_000,
            "deeper-than-read": body(_link_report(customParameters=_nested(100))),
            "huge-integer": body(_link_report()).replace(
                b'"resultCode": 1001', f'"resultCode": {HUGE_INTEGER}'.encode()
            ),
            "year-1-ahead-of-utc": body(_link_report(timestamp="0001-01-01T00:30:00+01:00")),
            "year-9999-behind-utc": body(_link_report(timestamp="9999-12-31T23:30:00-01:00")),
        }
    return {
        "past-recursion": PAST_RECURSION,
        "objects-past-recursion": b'{"data":' * 50_000 + b"1" + b"}" * 50_000,
        "deeper-than-read": body([_acs_event(deliveryStatusDetails=_nested(100))]),
        "huge-integer": body([_acs_event(size=0)]).replace(b'"size": 0', f'"size": {HUGE_INTEGER}'.encode()),
        "year-1-ahead-of-utc": body([_acs_event(deliveryAttemptTimeStamp="0001-01-01T00:30:00+01:00")]),
        "year-9999-behind-utc": body([_acs_event(deliveryAttemptTimeStamp="9999-12-31T23:30:00-01:00")]),
        "event-time-year-1": body([{**_acs_event(time_field="eventTime"), "eventTime": "0001-01-01T00:00:00+14:00"}]),
        "event-time-year-9999": body(
            [{**_acs_event(time_field="eventTime"), "eventTime": "9999-12-31T23:59:59-12:00"}]
        ),
    }


async def _stored_reports(database: Database) -> list[Any]:
    async with database.read() as conn:
        return list(await conn.execute(select(delivery_reports)))


@pytest.mark.parametrize(
    ("hostile", "name"),
    [(channel, name) for channel in (SMS, EMAIL) for name in _hostile_reports(channel)],
    ids=lambda value: value if isinstance(value, str) else value.provider,
)
async def test_a_hostile_delivery_report_is_a_400_problem_and_nothing_is_stored(
    client: httpx.AsyncClient, varsel: Varsel, hostile: Channel, name: str
) -> None:
    answer = await hostile.post(client, _hostile_reports(hostile)[name])
    assert answer.status_code == 400, answer.text[:300]
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["detail"].startswith(("Not a LINK Mobility delivery report", "Not an Event Grid"))
    assert await _stored_reports(varsel.database) == []
    # And the webhook still takes an ordinary report.
    answer = await hostile.post(client, hostile.report(str(uuid.uuid4()), "lm-1"))
    assert answer.json() == {"received": 1, "states": {"pending": 1}}


@pytest.mark.parametrize(
    ("timestamp", "occurred"),
    [
        ("0001-01-01T00:00:00+00:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59+00:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("0001-01-01T00:00:00-01:00", datetime(1, 1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T22:00:00+01:00", datetime(9999, 12, 31, 21, tzinfo=UTC)),
    ],
)
async def test_the_first_and_last_times_utc_holds_are_stored(
    client: httpx.AsyncClient, varsel: Varsel, channel: Channel, timestamp: str, occurred: datetime
) -> None:
    report = (
        _link_report(timestamp=timestamp) if channel.name == "sms" else [_acs_event(deliveryAttemptTimeStamp=timestamp)]
    )
    answer = await channel.post(client, report)
    assert answer.status_code == 200, answer.text
    (stored,) = await _stored_reports(varsel.database)
    assert stored.occurred == occurred


# ---------------------------------------------------------------- condition answers


class HostileConditionPeer:
    """A condition endpoint on loopback that answers 200 with the body registered for the path, or for a path
    registered with a str, redirects there."""

    def __init__(self, bodies: dict[str, bytes | str]) -> None:
        self.calls: list[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer.calls.append(self.path)
                body = bodies[self.path]
                if isinstance(body, str):
                    self.send_response(302)
                    self.send_header("Location", body)
                    self.end_headers()
                    return
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
        self.server.shutdown()
        self.server.server_close()


CONDITION_ANSWERS: dict[str, bytes | str] = {
    "/brackets": b"[" * 60_000,  # under the 64 KB an answer may have
    "/objects": b'{"sendNotification":' * 6_000 + b"true" + b"}" * 6_000,
    "/huge-integer": b'{"sendNotification": true, "n": ' + HUGE_INTEGER.encode() + b"}",
    "/yes": b'{"sendNotification": true}',
    # Redirects to what is no URL: a bracket left open, a port that is no number.
    "/to-an-open-bracket": "http://[::1/yes",
    "/to-a-port-out-of-range": "http://127.0.0.1:99999/yes",
}


@pytest.fixture
def condition_peer() -> Iterator[HostileConditionPeer]:
    peer = HostileConditionPeer(CONDITION_ANSWERS)
    yield peer
    peer.close()


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/brackets", "not JSON"),
        ("/objects", "not JSON"),
        ("/huge-integer", "not JSON"),
        ("/to-an-open-bracket", "URL"),  # httpx itself refuses to read that Location
        ("/to-a-port-out-of-range", "not a valid URL"),
    ],
)
async def test_a_hostile_condition_answer_is_inconclusive(
    condition_peer: HostileConditionPeer, path: str, detail: str
) -> None:
    async with httpx.AsyncClient() as http:
        answer = await ConditionChecker(http, 5.0, frozenset({"127.0.0.1"})).check(condition_peer.url + path)
    assert answer.result is ConditionResult.FAILED
    assert detail in answer.detail


async def _order_status(database: Database, order_id: str) -> str:
    async with database.read() as conn:
        rows = await conn.execute(select(orders.c.id, orders.c.status))
        return next(str(row.status) for row in rows if str(row.id) == order_id)


async def test_an_order_whose_condition_answers_deep_json_is_retried_once_then_sent(
    client: httpx.AsyncClient,
    auth: Auth,
    varsel: Varsel,
    clock: FrozenClock,
    settings: Settings,
    condition_peer: HostileConditionPeer,
) -> None:
    order = {
        "subject": "Hei",
        "body": "Hallo",
        "recipients": [{"emailAddress": "a@example.com"}],
        "conditionEndpoint": condition_peer.url + "/brackets",
    }
    response = await client.post(f"{V1}/orders/email", json=order, headers=auth())
    assert response.status_code == 202, response.text
    order_id = response.json()["orderId"]
    await varsel.workers.drain()
    assert condition_peer.calls == ["/brackets"]
    assert await _order_status(varsel.database, order_id) == "Registered"
    # Inconclusive, as the reference has it: tried again after a minute, and then sent anyway.
    clock.advance(timedelta(seconds=settings.dispatch.condition_retry_seconds))
    await varsel.workers.drain()
    assert condition_peer.calls == ["/brackets", "/brackets"]
    assert await _order_status(varsel.database, order_id) == "Completed"
    assert len(list((settings.data_dir / "outbox" / "email").glob("*.eml"))) == 1


# ---------------------------------------------------------------- registry pushes and imports


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_a_huge_integer_anywhere_in_a_body_is_a_400_problem(
    client: httpx.AsyncClient, auth: Auth, endpoint: BodyEndpoint
) -> None:
    scopes = ["altinn:serviceowner/notifications.create", "varsel:notifications.preview", "varsel:registry.write"]
    document = json.loads(json.dumps(endpoint.body))
    target = document[0] if isinstance(document, list) else document
    target["extra"] = 0
    body = json.dumps(document).encode().replace(b'"extra": 0', f'"extra": {HUGE_INTEGER}'.encode())
    answer = await client.post(
        endpoint.path, content=body, headers={**auth(scopes=scopes), "Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "number out of range" in answer.text


PERSON = '{"kind": "person", "nationalIdentityNumber": "01017012345", "name": "Ola"'


@pytest.mark.parametrize(
    "line",
    [
        PAST_RECURSION.decode(),
        PERSON + ', "extra": ' + json.dumps(_nested(100)) + "}",
        PERSON + ', "extra": ' + HUGE_INTEGER + "}",
    ],
    ids=["past-recursion", "deeper-than-read", "huge-integer"],
)
def test_a_hostile_import_line_is_a_clear_error(line: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_record(line)


async def test_hostile_import_lines_are_rejected_and_the_rest_imported(database: Database, clock: FrozenClock) -> None:
    lines = [PAST_RECURSION.decode(), PERSON + ', "extra": ' + HUGE_INTEGER + "}", PERSON + "}"]

    async def numbered() -> AsyncIterator[tuple[int, str]]:
        for number, line in enumerate(lines, start=1):
            yield number, line

    summary = await RegistryImporter(database, clock).import_lines(numbered(), ImportSummary())
    assert [number for number, _ in summary.rejected] == [1, 2]
    assert all("not valid JSON" in reason for _, reason in summary.rejected)
    assert summary.inserted == 1


# ---------------------------------------------------------------- providers' answers


def _sms() -> SmsMessage:
    return SmsMessage(
        notification_id=uuid.uuid4(),
        sender="Altinn",
        to_number="+4799999999",
        body="Hei",
        expiry=NOW + timedelta(days=2),
    )


def _email() -> EmailMessage:
    return EmailMessage(
        notification_id=uuid.uuid4(),
        from_address="noreply@example.com",
        to_address="kari@example.com",
        subject="Hei",
        body="Hallo",
        content_type=EmailContentType.PLAIN,
    )


@pytest.fixture
async def link_peer() -> AsyncIterator[LinkMobilityPeer]:
    async with LinkMobilityPeer() as running:
        yield running


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(200, PAST_RECURSION, TransientProviderError, id="200-past-recursion"),
        pytest.param(
            200,
            b'{"messageId": ' + json.dumps(_nested(100)).encode() + b"}",
            TransientProviderError,
            id="200-deeper-than-read",
        ),
        pytest.param(
            200,
            b'{"messageId": "x", "resultCode": ' + HUGE_INTEGER.encode() + b"}",
            TransientProviderError,
            id="200-huge-integer",
        ),
        pytest.param(400, PAST_RECURSION, PermanentSmsError, id="400-past-recursion"),
        pytest.param(400, b'{"resultCode": ' + HUGE_INTEGER.encode() + b"}", PermanentSmsError, id="400-huge-integer"),
        pytest.param(503, PAST_RECURSION, TransientProviderError, id="503-past-recursion"),
    ],
)
async def test_a_hostile_linkmobility_answer_is_a_clear_failure(
    link_peer: LinkMobilityPeer, clock: FrozenClock, status: int, body: bytes, expected: type[Exception]
) -> None:
    provider = LinkMobilitySmsProvider(link_peer.settings(), clock)
    try:
        link_peer.respond_next(1, status, body, "application/json")
        with pytest.raises(expected) as raised:
            await provider.send(_sms())
        if isinstance(raised.value, PermanentSmsError):
            assert raised.value.status is SmsStatus.FAILED
    finally:
        await provider.close()


class RawAcsPeer(AcsPeer):
    """The loopback ACS, but the next answers are exactly these bytes (after the signature is checked)."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[tuple[str, int, bytes, dict[str, str]]] = []

    def answer_raw(self, method: str, status: int, body: bytes, **headers: str) -> None:
        self.raw.append((method, status, body, headers))

    def _answer(self, request: Request, body: bytes) -> Response:
        answer = super()._answer(request, body)
        for index, (method, status, raw, headers) in enumerate(self.raw):
            if method == request.method and answer.status_code != 401:
                del self.raw[index]
                return Response(raw, status_code=status, media_type="application/json", headers=headers)
        return answer


@pytest.fixture
async def acs_peer() -> AsyncIterator[RawAcsPeer]:
    peer = RawAcsPeer()
    async with peer:
        yield peer


def _acs(peer: AcsPeer) -> AcsEmailProvider:
    settings = AcsSettings(
        connection_string=peer.connection_string, poll_interval_seconds=0.01, poll_max_seconds=0.3, timeout_seconds=2
    )
    # The peer checks the signature's date against the real time, so the adapter signs with it too.
    return AcsEmailProvider(settings, SystemClock())


@pytest.mark.parametrize("body", [PAST_RECURSION, b'{"id": "x", "n": ' + HUGE_INTEGER.encode() + b"}"])
async def test_a_hostile_acs_send_answer(acs_peer: RawAcsPeer, body: bytes) -> None:
    provider = _acs(acs_peer)
    try:
        # Accepted with a body nobody can read: the operation is ours (its id is the notification's), so it is
        # followed as after any 202, and the delivery report settles it.
        acs_peer.answer_raw("POST", 202, body)
        message = _email()
        accepted = await provider.send(message)
        assert accepted == Accepted(reference=str(message.notification_id), delivered=False)
        for status, expected in ((400, PermanentEmailError), (500, TransientProviderError)):
            acs_peer.answer_raw("POST", status, body)
            with pytest.raises(expected) as raised:
                await provider.send(_email())
            if isinstance(raised.value, PermanentEmailError):
                assert raised.value.status is EmailStatus.FAILED
    finally:
        await provider.close()


async def test_a_hostile_acs_poll_answer_is_no_news(acs_peer: RawAcsPeer) -> None:
    provider = _acs(acs_peer)
    try:
        acs_peer.running_polls = 1
        acs_peer.answer_raw("GET", 200, PAST_RECURSION)
        message = _email()
        accepted = await provider.send(message)
        # The unreadable poll answer is skipped; the next poll finds the operation Succeeded.
        assert accepted == Accepted(reference=str(message.notification_id), delivered=False)
        assert acs_peer.polls_of(str(message.notification_id)) >= 1
    finally:
        await provider.close()


HOSTILE_RETRY_AFTER = ["1e300", str(10**30), "inf", "nan", "-inf", "Fri, 31 Dec 9999 23:59:59 -1200"]


@pytest.mark.parametrize("retry_after", HOSTILE_RETRY_AFTER)
async def test_a_hostile_linkmobility_retry_after_is_bounded(
    link_peer: LinkMobilityPeer, clock: FrozenClock, retry_after: str
) -> None:
    provider = LinkMobilitySmsProvider(link_peer.settings(), clock)
    guarded = ProviderGuard(provider, GuardSettings(), clock)
    try:
        link_peer.rate_limit(retry_after, times=1)
        with pytest.raises(TransientProviderError) as raised:
            await guarded.send(_sms())
        assert raised.value.retry_after is None or 0 <= raised.value.retry_after <= MAX_RETRY_AFTER_SECONDS
        # The guard took the wait without overflowing: paused for at most the bound, or not at all.
        if raised.value.retry_after:
            with pytest.raises(ProviderUnavailable) as paused:
                await guarded.send(_sms())
            assert paused.value.retry_after is not None
            assert paused.value.retry_after <= MAX_RETRY_AFTER_SECONDS
        else:
            assert isinstance(await guarded.send(_sms()), Accepted)
    finally:
        await provider.close()


@pytest.mark.parametrize("header", ["Retry-After", "retry-after-ms", "x-ms-retry-after-ms"])
@pytest.mark.parametrize("retry_after", HOSTILE_RETRY_AFTER)
async def test_a_hostile_acs_retry_after_is_bounded(
    acs_peer: RawAcsPeer, clock: FrozenClock, header: str, retry_after: str
) -> None:
    provider = _acs(acs_peer)
    guarded = ProviderGuard(provider, GuardSettings(), clock)
    try:
        acs_peer.answer_raw("POST", 429, b"{}", **{header: retry_after})
        with pytest.raises(TransientProviderError) as raised:
            await guarded.send(_email())
        assert raised.value.retry_after is None or 0 <= raised.value.retry_after <= MAX_RETRY_AFTER_SECONDS
        if raised.value.retry_after:
            with pytest.raises(ProviderUnavailable) as paused:
                await guarded.send(_email())
            assert paused.value.retry_after is not None
            assert paused.value.retry_after <= MAX_RETRY_AFTER_SECONDS
    finally:
        await provider.close()
