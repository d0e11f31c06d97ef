"""The ACS email adapter against a loopback ACS that checks signatures itself, and the Event Grid report parser."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from tests.providers.acs_peer import AcsPeer
from varsel.clock import FrozenClock, SystemClock
from varsel.notifications.statuses import EmailStatus
from varsel.orders.vocabulary import EmailContentType
from varsel.providers.acs import (
    AcsEmailProvider,
    AcsSettings,
    EventGridDelivery,
    parse_connection_string,
    parse_event_grid,
)
from varsel.providers.base import (
    Accepted,
    EmailMessage,
    PermanentEmailError,
    ReportFormatError,
    TransientProviderError,
)
from varsel.providers.http import ProviderHttp


def message(
    to: str = "kari.nordmann@example.no",
    content_type: EmailContentType = EmailContentType.PLAIN,
    body: str = "Hei Kari, du har en ny melding i innboksen.",
) -> EmailMessage:
    return EmailMessage(
        notification_id=uuid.uuid4(),
        from_address="noreply@varsel.example.no",
        to_address=to,
        subject="Ny melding: æøå",
        body=body,
        content_type=content_type,
    )


def settings_for(peer: AcsPeer, **overrides: Any) -> AcsSettings:
    values: dict[str, Any] = {
        "connection_string": SecretStr(peer.connection_string),
        "timeout_seconds": 2.0,
        "poll_interval_seconds": 0.01,
        "poll_max_seconds": 2.0,
    }
    values.update(overrides)
    return AcsSettings(**values)


@pytest.fixture
async def peer() -> AsyncIterator[AcsPeer]:
    async with AcsPeer() as running:
        yield running


@pytest.fixture
async def provider(peer: AcsPeer) -> AsyncIterator[AcsEmailProvider]:
    adapter = AcsEmailProvider(settings_for(peer), SystemClock())
    yield adapter
    await adapter.close()


def sends(peer: AcsPeer) -> list[Any]:
    return [request for request in peer.requests if request.method == "POST"]


def polls(peer: AcsPeer) -> list[Any]:
    return [request for request in peer.requests if request.method == "GET"]


# ---------------------------------------------------------------- settings


def test_settings_name_what_is_missing() -> None:
    assert AcsSettings().missing() == ["connection_string"]
    assert AcsSettings(connection_string=SecretStr("  ")).missing() == ["connection_string"]
    [problem] = AcsSettings(connection_string=SecretStr("endpoint=https://x.communication.azure.com/")).missing()
    assert problem.startswith("connection_string")
    assert "accesskey" in problem
    [problem] = AcsSettings(connection_string=SecretStr("accesskey=c2VjcmV0")).missing()
    assert "endpoint" in problem
    [problem] = AcsSettings(
        connection_string=SecretStr("endpoint=https://x.communication.azure.com/;accesskey=not base64!")
    ).missing()
    assert "base64" in problem
    assert "not base64!" not in problem
    key = base64.b64encode(os.urandom(64)).decode()
    assert (
        AcsSettings(
            connection_string=SecretStr(f"Endpoint=https://x.communication.azure.com/;AccessKey={key};")
        ).missing()
        == []
    )


def test_connection_string_keeps_the_key_padding_and_drops_the_slash() -> None:
    key = base64.b64encode(b"\x01" * 31).decode()
    assert key.endswith("=")
    parsed = parse_connection_string(f"endpoint=https://res.norway.communication.azure.com/;accesskey={key}")
    assert parsed.endpoint == "https://res.norway.communication.azure.com"
    assert parsed.access_key == b"\x01" * 31


def test_provider_refuses_incomplete_settings() -> None:
    with pytest.raises(ValueError, match="connection_string"):
        AcsEmailProvider(AcsSettings(), SystemClock())


# ---------------------------------------------------------------- sending


async def test_plain_email_is_signed_and_sent_with_the_notification_id(
    peer: AcsPeer, provider: AcsEmailProvider
) -> None:
    sent = message()
    result = await provider.send(sent)

    assert result == Accepted(reference=str(sent.notification_id), delivered=False)
    # The peer answers 401 to a request whose signature it cannot reproduce, so 202 + 200 mean both were signed.
    assert [request.status for request in peer.requests] == [202, 200]
    [request] = sends(peer)
    assert request.headers["operation-id"] == str(sent.notification_id)
    assert request.query == "api-version=2025-09-01"
    [email] = peer.emails
    assert email.operation_id == str(sent.notification_id)
    assert email.sender == "noreply@varsel.example.no"
    assert email.to == ["kari.nordmann@example.no"]
    assert email.subject == "Ny melding: æøå"
    assert email.plain_text == sent.body
    assert email.html is None
    assert email.user_engagement_tracking_disabled is True
    assert peer.operation_status(str(sent.notification_id)) == "Succeeded"


async def test_html_email_goes_as_html_only(peer: AcsPeer, provider: AcsEmailProvider) -> None:
    html = "<p>Hei <a href='https://example.no/innboks'>Kari</a></p>"
    await provider.send(message(content_type=EmailContentType.HTML, body=html))

    [email] = peer.emails
    assert email.html == html
    assert email.plain_text is None
    assert "plainText" not in email.body["content"]


@pytest.mark.parametrize("repeat_answer", [409, 202])
async def test_a_repeated_send_is_not_a_second_email(peer: AcsPeer, repeat_answer: int) -> None:
    peer.repeat_answer = repeat_answer
    sent = message()
    first = AcsEmailProvider(settings_for(peer), SystemClock())
    # A second worker (its own client) picks the same notification up after the first one crashed.
    second = AcsEmailProvider(settings_for(peer), SystemClock())
    try:
        assert (await first.send(sent)).reference == str(sent.notification_id)
        assert (await second.send(sent)).reference == str(sent.notification_id)
    finally:
        await first.close()
        await second.close()

    assert [request.status for request in sends(peer)] == [202, repeat_answer]
    assert [email.operation_id for email in peer.emails] == [str(sent.notification_id)]


async def test_polls_through_running_to_succeeded(peer: AcsPeer, provider: AcsEmailProvider) -> None:
    peer.running_polls = 3
    sent = message()

    assert await provider.send(sent) == Accepted(reference=str(sent.notification_id), delivered=False)
    assert peer.polls_of(str(sent.notification_id)) == 4
    assert peer.operation_status(str(sent.notification_id)) == "Succeeded"


async def test_an_operation_still_running_at_the_poll_limit_counts_as_accepted(peer: AcsPeer) -> None:
    peer.running_polls = 1_000_000
    adapter = AcsEmailProvider(settings_for(peer, poll_max_seconds=0.2), SystemClock())
    sent = message()
    try:
        result = await adapter.send(sent)
    finally:
        await adapter.close()

    assert result == Accepted(reference=str(sent.notification_id), delivered=False)
    assert peer.operation_status(str(sent.notification_id)) == "Running"
    assert len(peer.emails) == 1


async def test_retry_after_of_the_accepted_send_sets_the_poll_pace(peer: AcsPeer) -> None:
    peer.running_polls = 1_000_000
    peer.retry_after = 30
    adapter = AcsEmailProvider(settings_for(peer, poll_max_seconds=0.3), SystemClock())
    try:
        await adapter.send(message())
    finally:
        await adapter.close()

    # At poll_interval_seconds (0.01) there would be some thirty polls; Retry-After 30 leaves one, at the limit.
    assert len(polls(peer)) == 1


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InvalidEmailAddress", EmailStatus.FAILED_INVALID_EMAIL_FORMAT),
        ("EmailDroppedAllRecipientsSuppressed", EmailStatus.FAILED_SUPPRESSED_RECIPIENT),
        ("EmailDropped", EmailStatus.FAILED),
    ],
)
async def test_a_failed_operation_is_a_permanent_failure(
    peer: AcsPeer, provider: AcsEmailProvider, code: str, status: EmailStatus
) -> None:
    peer.running_polls = 1
    peer.fail_code = code

    with pytest.raises(PermanentEmailError) as raised:
        await provider.send(message())

    assert raised.value.status is status
    assert code in str(raised.value)


async def test_an_invalid_recipient_is_refused_at_send(peer: AcsPeer, provider: AcsEmailProvider) -> None:
    peer.answer_next(400, code="InvalidEmailAddress", message="Invalid format for email address.")

    with pytest.raises(PermanentEmailError) as raised:
        await provider.send(message(to="kari.nordmann@example"))

    assert raised.value.status is EmailStatus.FAILED_INVALID_EMAIL_FORMAT
    assert "400" in str(raised.value)
    assert peer.emails == []


async def test_a_recipient_that_is_no_address_is_refused_without_calling_acs(
    peer: AcsPeer, provider: AcsEmailProvider
) -> None:
    with pytest.raises(PermanentEmailError) as raised:
        await provider.send(message(to="kari.nordmann.example.no"))

    assert raised.value.status is EmailStatus.FAILED_INVALID_EMAIL_FORMAT
    assert peer.requests == []


@pytest.mark.parametrize("status", [400, 404, 413])
async def test_other_client_errors_fail_the_email(peer: AcsPeer, provider: AcsEmailProvider, status: int) -> None:
    peer.answer_next(status, code="DomainNotLinked", message="The sender's domain is not linked.")

    with pytest.raises(PermanentEmailError) as raised:
        await provider.send(message())

    assert raised.value.status is EmailStatus.FAILED
    assert "DomainNotLinked" in str(raised.value)


async def test_throttling_is_transient_with_the_retry_after(peer: AcsPeer, provider: AcsEmailProvider) -> None:
    peer.throttle(retry_after=7)
    sent = message()

    with pytest.raises(TransientProviderError) as raised:
        await provider.send(sent)
    assert raised.value.retry_after == 7

    assert (await provider.send(sent)).reference == str(sent.notification_id)
    assert len(peer.emails) == 1


@pytest.mark.parametrize("header", ["retry-after-ms", "x-ms-retry-after-ms"])
async def test_throttling_in_milliseconds(peer: AcsPeer, provider: AcsEmailProvider, header: str) -> None:
    peer.answer_next(429, code="TooManyRequests", headers={header: "1500"})

    with pytest.raises(TransientProviderError) as raised:
        await provider.send(message())

    assert raised.value.retry_after == 1.5


async def test_a_burst_of_server_errors_then_recovery(peer: AcsPeer, provider: AcsEmailProvider) -> None:
    peer.fail_next(2, status=503)
    sent = message()

    for _ in range(2):
        with pytest.raises(TransientProviderError, match="503"):
            await provider.send(sent)
    assert (await provider.send(sent)).reference == str(sent.notification_id)

    assert [request.status for request in sends(peer)] == [503, 503, 202]
    assert len(peer.emails) == 1


async def test_a_timeout_is_transient_and_the_retry_sends_nothing_twice(peer: AcsPeer) -> None:
    peer.delay_seconds = 0.5
    adapter = AcsEmailProvider(settings_for(peer, timeout_seconds=0.1), SystemClock())
    sent = message()
    try:
        with pytest.raises(TransientProviderError, match="in time"):
            await adapter.send(sent)
        # ACS took the message all the same, after the client gave up.
        await asyncio.to_thread(peer.wait_for_requests, 1)
        peer.delay_seconds = 0
        assert (await adapter.send(sent)).reference == str(sent.notification_id)
    finally:
        await adapter.close()

    assert [request.status for request in sends(peer)] == [202, 409]
    assert [email.operation_id for email in peer.emails] == [str(sent.notification_id)]


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    key = base64.b64encode(os.urandom(32)).decode()
    settings = AcsSettings(connection_string=SecretStr(f"endpoint=http://127.0.0.1:{port}/;accesskey={key}"))
    adapter = AcsEmailProvider(settings, SystemClock())
    try:
        with pytest.raises(TransientProviderError, match="could not be reached"):
            await adapter.send(message())
    finally:
        await adapter.close()


async def test_a_wrong_key_is_transient_and_says_so(peer: AcsPeer) -> None:
    wrong = base64.b64encode(os.urandom(32)).decode()
    settings = settings_for(peer, connection_string=SecretStr(f"endpoint={peer.endpoint}/;accesskey={wrong}"))
    adapter = AcsEmailProvider(settings, SystemClock())
    try:
        with pytest.raises(TransientProviderError, match="access key") as raised:
            await adapter.send(message())
    finally:
        await adapter.close()

    assert "401" in str(raised.value)
    assert peer.emails == []


async def test_a_date_too_far_off_is_refused(peer: AcsPeer) -> None:
    adapter = AcsEmailProvider(settings_for(peer), FrozenClock(datetime(2020, 1, 1, tzinfo=UTC)))
    try:
        with pytest.raises(TransientProviderError, match="401"):
            await adapter.send(message())
    finally:
        await adapter.close()

    assert peer.emails == []


async def test_the_signature_uses_the_injected_clock(peer: AcsPeer) -> None:
    moment = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    peer.clock = FrozenClock(moment)
    adapter = AcsEmailProvider(settings_for(peer), FrozenClock(moment))
    try:
        await adapter.send(message())
    finally:
        await adapter.close()

    assert {request.headers["x-ms-date"] for request in peer.requests} == {"Mon, 02 Mar 2026 10:00:00 GMT"}


async def test_a_given_client_is_used_and_left_open(peer: AcsPeer) -> None:
    client = ProviderHttp()
    try:
        adapter = AcsEmailProvider(settings_for(peer), SystemClock(), http=client)
        await adapter.send(message())
        await adapter.close()
        assert not client.closed
    finally:
        await client.aclose()
    assert len(peer.emails) == 1


# ---------------------------------------------------------------- Event Grid delivery reports


def report_event(
    status: str,
    message_id: str = "8f0c1d1e-4a31-4d7e-9d55-0b7d6b1f3a11",
    *,
    status_message: str | None = "No error.",
    timestamp: str | None = "2026-03-02T10:00:05.2855749+00:00",
    event_type: str = "Microsoft.Communication.EmailDeliveryReportReceived",
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sender": "noreply@varsel.example.no",
        "recipient": "kari.nordmann@example.no",
        "messageId": message_id,
        "status": status,
    }
    if status_message is not None:
        data["deliveryStatusDetails"] = {"statusMessage": status_message}
    if timestamp is not None:
        data["deliveryAttemptTimeStamp"] = timestamp
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/x/resourceGroups/y/providers/microsoft.communication/communicationservices/z",
        "subject": f"sender/noreply@varsel.example.no/message/{message_id}",
        "data": data,
        "eventType": event_type,
        "dataVersion": "1.0",
        "metadataVersion": "1",
        "eventTime": "2026-03-02T10:00:06.822Z",
    }


def parse(events: Any) -> EventGridDelivery:
    return parse_event_grid(json.dumps(events).encode())


def test_subscription_validation_handshake() -> None:
    delivery = parse(
        [
            {
                "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
                "topic": "/subscriptions/x",
                "subject": "",
                "data": {
                    "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                    "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/s/validate?id=1",
                },
                "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                "eventTime": "2026-03-02T10:00:00Z",
                "metadataVersion": "1",
                "dataVersion": "1",
            }
        ]
    )
    assert delivery == EventGridDelivery(validation_code="512d38b6-c7b8-40c8-89fe-f46f9e9622b6", reports=[])


@pytest.mark.parametrize(
    ("status", "mapped"),
    [
        ("Delivered", EmailStatus.DELIVERED),
        ("Bounced", EmailStatus.FAILED_BOUNCED),
        ("Suppressed", EmailStatus.FAILED_SUPPRESSED_RECIPIENT),
        ("FilteredSpam", EmailStatus.FAILED_FILTERED_SPAM),
        ("Quarantined", EmailStatus.FAILED_QUARANTINED),
        ("Failed", EmailStatus.FAILED),
    ],
)
def test_each_delivery_status_is_mapped(status: str, mapped: EmailStatus) -> None:
    delivery = parse([report_event(status, status_message=f"{status} at the recipient's server")])

    assert delivery.validation_code is None
    [report] = delivery.reports
    assert report.status is mapped
    assert report.notification_id == "8f0c1d1e-4a31-4d7e-9d55-0b7d6b1f3a11"
    assert report.provider_reference == "8f0c1d1e-4a31-4d7e-9d55-0b7d6b1f3a11"
    assert report.detail == f"{status} at the recipient's server"
    assert report.occurred == datetime(2026, 3, 2, 10, 0, 5, 285574, tzinfo=UTC)
    assert report.occurred.tzinfo is UTC


def test_suppressed_keeps_the_reference_spelling() -> None:
    [report] = parse([report_event("Suppressed")]).reports
    assert report.status.value == "Failed_SupressedRecipient"


@pytest.mark.parametrize("status", ["Expanded", "SomethingNew"])
def test_expanded_and_unknown_statuses_make_no_report(status: str) -> None:
    assert parse([report_event(status)]) == EventGridDelivery(validation_code=None, reports=[])


def test_other_event_types_are_ignored() -> None:
    events = [
        report_event("Delivered", event_type="Microsoft.Communication.EmailEngagementTrackingReportReceived"),
        report_event("Delivered", event_type="Microsoft.Communication.SMSDeliveryReportReceived"),
    ]
    assert parse(events).reports == []


def test_a_batch_of_several_events() -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    events = [
        report_event("Delivered", ids[0]),
        report_event("Expanded", ids[1]),
        report_event("Bounced", ids[2], status_message=None),
        report_event("Delivered", ids[3], timestamp=None),
        report_event("Delivered", ids[0], event_type="Microsoft.Communication.EmailEngagementTrackingReportReceived"),
    ]
    reports = parse(events).reports

    assert [(report.notification_id, report.status) for report in reports] == [
        (ids[0], EmailStatus.DELIVERED),
        (ids[2], EmailStatus.FAILED_BOUNCED),
        (ids[3], EmailStatus.DELIVERED),
    ]
    assert reports[1].detail is None
    # Without a delivery attempt time the event's own time stands in.
    assert reports[2].occurred == datetime(2026, 3, 2, 10, 0, 6, 822000, tzinfo=UTC)


def test_timestamps_are_read_in_either_spelling_and_without_offset_as_utc() -> None:
    event = report_event("Delivered", timestamp=None)
    event["data"]["deliveryAttemptTimestamp"] = "2026-03-02T11:00:05"
    [report] = parse([event]).reports
    assert report.occurred == datetime(2026, 3, 2, 11, 0, 5, tzinfo=UTC)

    [report] = parse([report_event("Delivered", timestamp="2026-03-02T12:00:05+01:00")]).reports
    assert report.occurred == datetime(2026, 3, 2, 11, 0, 5, tzinfo=UTC)


def test_cloud_events_schema_single_and_batch() -> None:
    def cloud_event(message_id: str, status: str) -> dict[str, Any]:
        classic = report_event(status, message_id)
        return {
            "specversion": "1.0",
            "id": classic["id"],
            "source": classic["topic"],
            "subject": classic["subject"],
            "type": classic["eventType"],
            "time": classic["eventTime"],
            "datacontenttype": "application/json",
            "data": classic["data"],
        }

    [single] = parse(cloud_event("a", "Delivered")).reports
    assert (single.notification_id, single.status) == ("a", EmailStatus.DELIVERED)
    batch = parse([cloud_event("b", "Quarantined"), cloud_event("c", "FilteredSpam")]).reports
    assert [(report.notification_id, report.status) for report in batch] == [
        ("b", EmailStatus.FAILED_QUARANTINED),
        ("c", EmailStatus.FAILED_FILTERED_SPAM),
    ]


def _without(key: str) -> list[dict[str, Any]]:
    event = report_event("Delivered")
    del event["data"][key]
    return [event]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"42", "neither"),
        (b'"Delivered"', "neither"),
        (b"[1]", "event 0 is not an object"),
        (json.dumps([report_event("Delivered"), {"data": {}}]).encode(), "event 1 has no eventType"),
        (json.dumps([{**report_event("Delivered"), "data": "Delivered"}]).encode(), "data is not an object"),
        (json.dumps(_without("messageId")).encode(), "messageId"),
        (json.dumps(_without("status")).encode(), "status"),
        (json.dumps([report_event("Delivered", timestamp="yesterday")]).encode(), "ISO 8601"),
        (
            json.dumps([{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}]).encode(),
            "validationCode",
        ),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(ReportFormatError, match=reason):
        parse_event_grid(body)
