"""The LINK Mobility adapter against a loopback gateway, and the delivery-report parser."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from varsel.clock import FrozenClock
from varsel.notifications.statuses import SmsStatus
from varsel.providers.base import (
    DeliveryReport,
    PermanentSmsError,
    ReportFormatError,
    SmsMessage,
    TransientProviderError,
)
from varsel.providers.http import ProviderHttp
from varsel.providers.linkmobility import LinkMobilitySettings, LinkMobilitySmsProvider, parse_delivery_reports

from .linkmobility_peer import LinkMobilityPeer, LoopbackServer, delivery_report

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NUMBER = "+4799999999"


def sms(
    *,
    sender: str = "Altinn",
    to: str = NUMBER,
    body: str = "Hei! Du har fått et varsel om søknaden din. Ærlig talt: blåbærsyltetøy.",
    expiry: datetime | None = None,
    notification_id: UUID | None = None,
) -> SmsMessage:
    return SmsMessage(
        notification_id=notification_id or uuid4(),
        sender=sender,
        to_number=to,
        body=body,
        expiry=expiry or NOW + timedelta(hours=48),
    )


@pytest.fixture
def frozen() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
async def peer() -> AsyncIterator[LinkMobilityPeer]:
    async with LinkMobilityPeer() as running:
        yield running


@pytest.fixture
async def provider(peer: LinkMobilityPeer, frozen: FrozenClock) -> AsyncIterator[LinkMobilitySmsProvider]:
    adapter = LinkMobilitySmsProvider(peer.settings(), frozen)
    yield adapter
    await adapter.close()


async def adapter_for(peer: LinkMobilityPeer, clock: FrozenClock, **overrides: Any) -> LinkMobilitySmsProvider:
    return LinkMobilitySmsProvider(peer.settings(**overrides), clock)


# -- sending ---------------------------------------------------------------------------------------------------


async def test_sends_the_documented_request(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider, frozen: FrozenClock
) -> None:
    message = sms(expiry=NOW + timedelta(hours=2, minutes=30, milliseconds=250))

    accepted = await provider.send(message)

    [received] = peer.messages
    assert accepted.reference == received.message_id
    assert accepted.delivered is False
    assert received.username == "varsel"
    assert received.body == {
        "source": "Altinn",
        "sourceTON": "ALPHANUMERIC",
        "destination": NUMBER,
        "destinationTON": "MSISDN",
        "userData": message.body,
        "dcs": "TEXT",
        "platformId": "COMMON_API",
        "platformPartnerId": "4321",
        "refId": str(message.notification_id),
        "relativeValidityTime": 9_000_250,
        "ignoreResponse": False,
        "useDeliveryReport": True,
        "deliveryReportGates": ["GATE1"],
    }
    assert "æ" in received.body["userData"]
    assert "ø" in received.body["userData"]
    assert "å" in received.body["userData"]
    assert peer.counts_by_ref() == {str(message.notification_id): 1}


@pytest.mark.parametrize(
    ("sender", "ton"),
    [("Altinn", "ALPHANUMERIC"), ("+4790000000", "MSISDN"), ("2333", "SHORTNUMBER"), ("Altinn2026", "ALPHANUMERIC")],
)
async def test_source_type_follows_the_sender(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider, sender: str, ton: str
) -> None:
    await provider.send(sms(sender=sender))

    [received] = peer.messages
    assert received.body["source"] == sender
    assert received.body["sourceTON"] == ton


async def test_validity_is_the_time_left_and_never_below_a_second(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider, frozen: FrozenClock
) -> None:
    await provider.send(sms(expiry=NOW + timedelta(minutes=15)))
    frozen.advance(timedelta(minutes=10))
    await provider.send(sms(expiry=NOW + timedelta(minutes=15)))
    await provider.send(sms(expiry=NOW - timedelta(hours=1)))

    assert [received.body["relativeValidityTime"] for received in peer.messages] == [900_000, 300_000, 1_000]


async def test_without_a_gate_no_delivery_report_is_asked_for(peer: LinkMobilityPeer, frozen: FrozenClock) -> None:
    adapter = await adapter_for(peer, frozen, delivery_report_gate=None)
    try:
        await adapter.send(sms())
    finally:
        await adapter.close()

    [received] = peer.messages
    assert received.body["useDeliveryReport"] is False
    assert "deliveryReportGates" not in received.body


async def test_each_message_arrives_once(peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider) -> None:
    messages = [sms(to=f"+47{90000000 + n}") for n in range(20)]

    references = await asyncio.gather(*(provider.send(message) for message in messages))

    assert peer.counts_by_ref() == {str(message.notification_id): 1 for message in messages}
    assert len({accepted.reference for accepted in references}) == len(messages)


async def test_a_204_answer_is_accepted_under_our_own_reference(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider
) -> None:
    message = sms()
    peer.respond_next(1, status=204)

    accepted = await provider.send(message)

    assert accepted.reference == str(message.notification_id)


# -- failures --------------------------------------------------------------------------------------------------


async def test_429_is_transient_with_retry_after_seconds(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider
) -> None:
    peer.rate_limit(retry_after=7, times=1)

    with pytest.raises(TransientProviderError) as raised:
        await provider.send(sms())

    assert raised.value.retry_after == 7
    assert peer.messages == []
    await provider.send(sms())
    assert peer.statuses() == [429, 200]


async def test_429_retry_after_as_http_date(peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider) -> None:
    peer.rate_limit(retry_after=format_datetime(NOW + timedelta(seconds=90), usegmt=True))

    with pytest.raises(TransientProviderError) as raised:
        await provider.send(sms())

    assert raised.value.retry_after == 90


async def test_5xx_burst_is_transient_then_recovers(peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider) -> None:
    message = sms()
    peer.fail_next(2, status=503)

    for _ in range(2):
        with pytest.raises(TransientProviderError):
            await provider.send(message)
    accepted = await provider.send(message)

    assert peer.statuses() == [503, 503, 200]
    assert peer.counts_by_ref() == {str(message.notification_id): 1}
    assert accepted.reference == peer.messages[0].message_id


async def test_500_is_transient(peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider) -> None:
    peer.fail_next(1, status=500)

    with pytest.raises(TransientProviderError, match="HTTP 500"):
        await provider.send(sms())


async def test_timeout_is_transient(peer: LinkMobilityPeer, frozen: FrozenClock) -> None:
    adapter = await adapter_for(peer, frozen, timeout_seconds=0.3)
    peer.delay = 5
    try:
        with pytest.raises(TransientProviderError, match=r"did not answer within 0\.3 s"):
            await adapter.send(sms())
    finally:
        await adapter.close()


async def test_connection_refused_is_transient(frozen: FrozenClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = LinkMobilitySmsProvider(
        LinkMobilitySettings(
            base_url=f"http://127.0.0.1:{port}",
            username="u",
            password=SecretStr("p"),
            platform_id="x",
            platform_partner_id="y",
        ),
        frozen,
    )
    try:
        with pytest.raises(TransientProviderError, match="could not reach"):
            await adapter.send(sms())
    finally:
        await adapter.close()


async def test_wrong_credentials_are_transient_not_the_recipients_fault(
    peer: LinkMobilityPeer, frozen: FrozenClock
) -> None:
    adapter = await adapter_for(peer, frozen, password="feil")
    try:
        with pytest.raises(TransientProviderError, match=r"refused varsel's account.*HTTP 401.*106100"):
            await adapter.send(sms())
    finally:
        await adapter.close()
    assert peer.statuses() == [401]
    assert peer.messages == []


async def test_403_is_transient(peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider) -> None:
    peer.fail_next(1, status=403)

    with pytest.raises(TransientProviderError, match="refused varsel's account"):
        await provider.send(sms())


async def test_wrong_platform_partner_is_transient(peer: LinkMobilityPeer, frozen: FrozenClock) -> None:
    adapter = await adapter_for(peer, frozen, platform_partner_id="9999")
    try:
        with pytest.raises(TransientProviderError, match="106201"):
            await adapter.send(sms())
    finally:
        await adapter.close()


async def test_wrong_base_url_is_transient(peer: LinkMobilityPeer, frozen: FrozenClock) -> None:
    adapter = await adapter_for(peer, frozen, base_url=peer.url + "/elsewhere")
    try:
        with pytest.raises(TransientProviderError, match="check base_url"):
            await adapter.send(sms())
    finally:
        await adapter.close()


async def test_rejected_destination_is_an_invalid_recipient(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider
) -> None:
    peer.reject_destination(NUMBER)

    with pytest.raises(PermanentSmsError) as raised:
        await provider.send(sms(to=NUMBER))

    assert raised.value.status is SmsStatus.FAILED_INVALID_RECIPIENT
    assert NUMBER in str(raised.value)
    assert peer.messages == []


async def test_malformed_destination_is_an_invalid_recipient(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider
) -> None:
    with pytest.raises(PermanentSmsError) as raised:
        await provider.send(sms(to="+47"))

    assert raised.value.status is SmsStatus.FAILED_INVALID_RECIPIENT


async def test_other_400_fails_the_message(peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider) -> None:
    with pytest.raises(PermanentSmsError, match="Invalid source") as raised:
        await provider.send(sms(sender="EtAltforLangtNavn"))

    assert raised.value.status is SmsStatus.FAILED
    assert peer.statuses() == [400]


async def test_400_without_a_json_body_fails_the_message(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider
) -> None:
    peer.respond_next(1, status=400, body=b"Bad Request")

    with pytest.raises(PermanentSmsError, match="Bad Request") as raised:
        await provider.send(sms())

    assert raised.value.status is SmsStatus.FAILED


@pytest.mark.parametrize(
    "answer",
    [b"<html>queued</html>", b"", b"[]", b'{"resultCode": 1005}', b'{"messageId": 17}'],
)
async def test_unreadable_2xx_answer_is_transient(
    peer: LinkMobilityPeer, provider: LinkMobilitySmsProvider, answer: bytes
) -> None:
    peer.respond_next(1, status=200, body=answer)

    with pytest.raises(TransientProviderError, match="HTTP 200"):
        await provider.send(sms())


async def test_closing_leaves_a_given_client_open(peer: LinkMobilityPeer, frozen: FrozenClock) -> None:
    http = ProviderHttp()
    try:
        adapter = LinkMobilitySmsProvider(peer.settings(), frozen, http=http)
        await adapter.send(sms())
        await adapter.close()

        assert not http.closed
        assert (await http.request("GET", peer.url + "/", timeout_seconds=5)).status_code == 404
    finally:
        await http.aclose()
    assert len(peer.messages) == 1


async def test_closing_closes_its_own_client(peer: LinkMobilityPeer, frozen: FrozenClock) -> None:
    adapter = LinkMobilitySmsProvider(peer.settings(), frozen)
    await adapter.close()

    with pytest.raises(RuntimeError, match="closed"):
        await adapter.send(sms())


def test_settings_name_what_sending_needs() -> None:
    assert LinkMobilitySettings().missing() == ["username", "password", "platform_id", "platform_partner_id"]
    assert LinkMobilitySettings(username="u", password=SecretStr(""), platform_id="p").missing() == [
        "password",
        "platform_partner_id",
    ]
    assert LinkMobilitySettings().timeout_seconds == 30
    assert LinkMobilitySettings().base_url == "https://n-eu.linkmobility.io"
    with pytest.raises(ValueError, match="username, password, platform_id, platform_partner_id"):
        LinkMobilitySmsProvider(LinkMobilitySettings(), FrozenClock(NOW))


# -- delivery reports ------------------------------------------------------------------------------------------


def report_body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("DELIVRD", SmsStatus.DELIVERED),
        ("EXPIRED", SmsStatus.FAILED_EXPIRED),
        ("DELETED", SmsStatus.FAILED_DELETED),
        ("UNDELIV", SmsStatus.FAILED_UNDELIVERED),
        ("REJECTD", SmsStatus.FAILED_REJECTED),
        ("BARRED", SmsStatus.FAILED_BARRED_RECEIVER),
        ("FAILED", SmsStatus.FAILED),
        ("UNKNOWN", SmsStatus.FAILED),
        ("NULL", SmsStatus.FAILED),
        ("SOMETHING_NEW", SmsStatus.FAILED),
        ("delivrd", SmsStatus.DELIVERED),
    ],
)
def test_report_states_map_as_the_reference_does(state: str, status: SmsStatus) -> None:
    [report] = parse_delivery_reports(report_body(refId="n-1", id="m-1", status=state))

    assert report == DeliveryReport(
        notification_id="n-1", status=status, provider_reference="m-1", detail=f"status {state.upper()}"
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (1001, SmsStatus.DELIVERED),
        (1007, SmsStatus.DELIVERED),
        (1002, SmsStatus.FAILED_EXPIRED),
        (1010, SmsStatus.FAILED_EXPIRED),
        (1003, SmsStatus.FAILED_DELETED),
        (1006, SmsStatus.FAILED_UNDELIVERED),
        (2104, SmsStatus.FAILED_UNDELIVERED),
        (2106, SmsStatus.FAILED_UNDELIVERED),
        (4001, SmsStatus.FAILED_REJECTED),
        (2105, SmsStatus.FAILED_BARRED_RECEIVER),
        (2107, SmsStatus.FAILED_BARRED_RECEIVER),
        (0, SmsStatus.FAILED),
        (105, SmsStatus.FAILED),
        (98765, SmsStatus.FAILED),
    ],
)
def test_report_result_codes_map_onto_the_reference_states(code: int, status: SmsStatus) -> None:
    [report] = parse_delivery_reports(json.dumps(delivery_report("n-1", "m-1", code)).encode())

    assert report.status is status
    assert report.detail is not None
    assert report.detail.startswith(f"resultCode {code}: ")


def test_documented_report_is_read_in_full() -> None:
    body = b"""{
        "refId": "0b7f2e4c-4d1e-4f5e-9a51-000000000001", "id": "Dcshuhod0PMAAAFQ+/PbnR3x",
        "operator": "no.telenor", "sentTimestamp": "2015-11-19T09:37:35Z", "timestamp": "2015-11-19T09:37:00Z",
        "resultCode": 1001, "operatorResultCode": "2", "segments": 1,
        "gateCustomParameters": {}, "customParameters": {"received": "2015-11-19 10:37:36"}
    }"""

    assert parse_delivery_reports(body) == [
        DeliveryReport(
            notification_id="0b7f2e4c-4d1e-4f5e-9a51-000000000001",
            status=SmsStatus.DELIVERED,
            provider_reference="Dcshuhod0PMAAAFQ+/PbnR3x",
            detail="resultCode 1001: Billed and delivered (operatorResultCode 2)",
            occurred=datetime(2015, 11, 19, 9, 37, tzinfo=UTC),
        )
    ]


@pytest.mark.parametrize(
    "fields", [{"resultCode": 1000}, {"resultCode": 1005}, {"status": "ENROUTE"}, {"status": "ACCEPTD"}]
)
def test_intermediate_reports_yield_nothing(fields: dict[str, Any]) -> None:
    assert parse_delivery_reports(report_body(refId="n-1", id="m-1", **fields)) == []


def test_a_list_of_reports() -> None:
    body = json.dumps(
        [
            delivery_report("n-1", "m-1", 1001),
            delivery_report("n-2", "m-2", 1000),
            {"refId": "n-3", "id": "m-3", "status": "EXPIRED"},
        ]
    ).encode()

    reports = parse_delivery_reports(body)

    assert [(r.notification_id, r.status) for r in reports] == [
        ("n-1", SmsStatus.DELIVERED),
        ("n-3", SmsStatus.FAILED_EXPIRED),
    ]
    assert parse_delivery_reports(b"[]") == []


def test_a_part_of_a_long_message_names_the_message() -> None:
    [report] = parse_delivery_reports(json.dumps(delivery_report("n-1", "QC5BGwiuYk0AAAFiQ08nTFOS$1")).encode())

    assert report.provider_reference == "QC5BGwiuYk0AAAFiQ08nTFOS"


def test_report_timestamps() -> None:
    def occurred(value: Any) -> datetime | None:
        [report] = parse_delivery_reports(report_body(refId="n", id="m", resultCode=1001, timestamp=value))
        return report.occurred

    assert occurred("2026-03-02T11:00:00+01:00") == NOW
    assert occurred("2026-03-02T10:00:00") == NOW
    assert occurred("yesterday-ish") is None
    assert occurred(None) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"", "not JSON"),
        (b"42", "object or a list"),
        (b'"DELIVRD"', "object or a list"),
        (b"[1]", "report 0: a delivery report must be a JSON object"),
        (report_body(id="m", resultCode=1001), "refId is missing"),
        (report_body(refId=None, id="m", resultCode=1001), "refId is missing"),
        (report_body(refId=17, id="m", resultCode=1001), "refId must be a non-empty string"),
        (report_body(refId="", id="m", resultCode=1001), "refId must be a non-empty string"),
        (report_body(refId="n", id="m"), "neither resultCode nor status"),
        (report_body(refId="n", id="m", resultCode="1001"), "resultCode must be an integer"),
        (report_body(refId="n", id="m", resultCode=True), "resultCode must be an integer"),
        (report_body(refId="n", id="m", status=5), "status must be a non-empty string"),
        (report_body(refId="n", id="m", status=""), "status must be a non-empty string"),
        (report_body(refId="n", id=123, resultCode=1001), "id must be a string"),
        (report_body(refId="n", id="m", resultCode=1001, timestamp=5), "timestamp must be an RFC 3339 string"),
        (
            json.dumps([delivery_report("n", "m"), {"refId": "n2", "id": "m2"}]).encode(),
            "report 1: the report has neither resultCode nor status",
        ),
    ],
)
def test_malformed_reports_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ReportFormatError, match=reason):
        parse_delivery_reports(body)


# -- the peer's own delivery reports, end to end ---------------------------------------------------------------


async def test_peer_posts_delivery_reports_the_parser_reads(frozen: FrozenClock) -> None:
    received: list[tuple[bytes, str]] = []

    async def reports(request: Request) -> Response:
        received.append((await request.body(), request.headers.get("authorization", "")))
        return Response(status_code=200)

    receiver = LoopbackServer(Starlette(routes=[Route("/reports", reports, methods=["POST"])]))
    async with receiver:
        peer = LinkMobilityPeer(report_url=receiver.url + "/reports", report_auth=("gate", "rapport"))
        async with peer:
            peer.report_result("+4741000000", 2106)
            adapter = LinkMobilitySmsProvider(peer.settings(), frozen)
            try:
                delivered, undelivered = sms(), sms(to="+4741000000")
                first = await adapter.send(delivered)
                second = await adapter.send(undelivered)
            finally:
                await adapter.close()
            for _ in range(500):
                if len(peer.reports) == 2:
                    break
                await asyncio.sleep(0.01)

    assert [posted.status for posted in peer.reports] == [200, 200]
    assert {auth for _, auth in received} == {"Basic " + base64.b64encode(b"gate:rapport").decode()}
    parsed = {report.notification_id: report for body, _ in received for report in parse_delivery_reports(body)}
    assert parsed[str(delivered.notification_id)].status is SmsStatus.DELIVERED
    assert parsed[str(delivered.notification_id)].provider_reference == first.reference
    assert parsed[str(undelivered.notification_id)].status is SmsStatus.FAILED_UNDELIVERED
    assert parsed[str(undelivered.notification_id)].provider_reference == second.reference


def test_peer_works_from_sync_code() -> None:
    with LinkMobilityPeer(username="a", password="b") as peer:
        answer = httpx.post(peer.url + "/sms/send", json={}, auth=("a", "wrong"))
        assert answer.status_code == 401
        assert answer.json() == {"resultCode": 106100, "description": answer.json()["description"]}
        answer = httpx.post(
            peer.url + "/sms/send",
            auth=("a", "b"),
            json={
                "source": "Test",
                "destination": NUMBER,
                "userData": "x",
                "platformId": peer.platform_id,
                "platformPartnerId": peer.platform_partner_id,
                "useDeliveryReport": False,
            },
        )
        assert answer.status_code == 204  # ignoreResponse defaults to true, as documented
    assert peer.statuses() == [401, 204]
    assert peer.counts_by_ref() == {None: 1}
