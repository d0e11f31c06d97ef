"""Azure Communication Services (ACS) email over its REST API, and the Event Grid delivery reports it sends back.

The reference (Altinn Notifications) sends its email through ACS with Microsoft's SDK; varsel speaks the REST API
with aiohttp (through varsel.providers.http), so no Azure SDK is needed. aiohttp rather than httpx because provider
calls are the dispatch path: measured on 2 cores, httpx spent 2-5 ms of CPU per request, aiohttp about 0.3 ms.

Sending (Email REST API, stable versions 2023-03-31 and 2025-09-01; source: the OpenAPI files
``specification/communication/data-plane/Email/stable/*/CommunicationServicesEmail.json`` in Azure/azure-rest-api-specs
and learn.microsoft.com/rest/api/communication/email/send)::

    POST {endpoint}/emails:send?api-version=2025-09-01
    Operation-Id: <uuid>            optional; "provided by the customer to identify the long running operation"
    Content-Type: application/json
    {"senderAddress": "...", "content": {"subject": "...", "plainText": "...", "html": "..."},
     "recipients": {"to": [{"address": "...", "displayName": "..."}]},
     "attachments": [{"name": "...", "contentType": "...", "contentInBase64": "..."}],
     "headers": {...}, "userEngagementTrackingDisabled": true}

    202 Accepted, headers Operation-Location and retry-after (seconds),
        body {"id": "<operation id>", "status": "Running"}
    error: {"error": {"code", "message", "target", "details"}}, header x-ms-error-code
    413 when the message with its attachments is over ACS's limit (10 MB): Failed_PayloadTooLarge

    GET {endpoint}/emails/operations/{operationId}?api-version=2025-09-01
    200 {"id", "status": NotStarted|Running|Succeeded|Failed|Canceled, "error": {"code", "message"}}
        retry-after (seconds) while the status is not terminal

2025-09-01 is the current GA version (the .NET SDK's default ServiceVersion); 2023-03-31 has the same shape.
Known operation error codes (from SDK issues, not a documented list): ``EmailDropped``,
``EmailDroppedAllRecipientsSuppressed``, and at send time 400 ``InvalidEmailAddress`` whose message is "Invalid
format for email address" (the reference recognises that message).

A repeated Operation-Id: not documented. The "Repeatability of requests" page
(learn.microsoft.com/rest/api/communication/repeatable-requests) says the Email Send API answers a repeated
request 409 while the original is in progress and replays the original status code otherwise. varsel therefore
treats 409 on send as "this notification's operation exists already" and polls it, as it does after a 202. The
operation is polled at the documented path built from the endpoint, not at Operation-Location: after a 409 there is
no Operation-Location, and the id is ours anyway.

Authentication (HMAC-SHA256; learn.microsoft.com/rest/api/communication/authentication and the SDKs'
HMACCredentialsPolicy): the connection string is ``endpoint=https://<resource>.communication.azure.com/;accesskey=<b64>``
(keys case-insensitive). Every request carries::

    x-ms-date: <RFC 1123 date, GMT>
    x-ms-content-sha256: base64(SHA-256(body))          (of the empty body for GET)
    Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<sig>
    sig = base64(HMAC-SHA256(base64decode(accesskey), "VERB\\n<path?query>\\n<x-ms-date>;<host>;<content hash>"))

How far the date may be off is not documented; the loopback peer in the tests allows 15 minutes (an assumption).

Delivery reports (Event Grid; learn.microsoft.com/azure/event-grid/communication-services-email-events and
.../webhook-event-delivery). Event Grid posts a JSON array of events::

    [{"id", "topic", "subject", "eventType": "Microsoft.Communication.EmailDeliveryReportReceived",
      "eventTime", "dataVersion", "metadataVersion",
      "data": {"sender", "recipient", "messageId": "<operation id>", "status": "Delivered",
               "deliveryStatusDetails": {"statusMessage": "..."},
               "deliveryAttemptTimeStamp": "2020-09-18T00:22:20.2855749+00:00"}}]

The example in the docs spells ``deliveryAttemptTimeStamp``; the SDK models say ``deliveryAttemptTimestamp``: both are
read. Statuses: Delivered, Expanded (a distribution list was expanded: not final), Bounced, Suppressed, FilteredSpam,
Quarantined, Failed. When a subscription is created Event Grid first posts
``Microsoft.EventGrid.SubscriptionValidationEvent`` (header ``aeg-event-type: SubscriptionValidation``) with
``data.validationCode``; the endpoint answers ``{"validationResponse": "<code>"}``.

Event Grid can also deliver the CloudEvents 1.0 schema: one event per request as a JSON object (content type
application/cloudevents+json) or a JSON array (batch), each with ``type`` instead of ``eventType`` and ``time`` instead
of ``eventTime``; the same ``data``. That schema has no validation event: its handshake is an HTTP OPTIONS request
carrying ``WebHook-Request-Origin``, answered 200 with ``WebHook-Allowed-Origin`` (the webhook route's job, not this
parser's). ``parse_event_grid`` reads both schemas.

The webhook is authenticated, as in the reference, by an access key that the operator puts in the subscription's URL
(``?accesskey=…``): ``AcsSettings.report_access_key``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, SecretStr
from yarl import URL

from varsel import jsonsafe
from varsel.clock import Clock
from varsel.notifications.statuses import EmailStatus
from varsel.orders.text import subject_line
from varsel.orders.vocabulary import EmailContentType
from varsel.providers import mime
from varsel.providers.base import (
    Accepted,
    DeliveryReport,
    EmailMessage,
    EmailRefused,
    PermanentEmailError,
    ReportFormatError,
    TooManyReports,
    TransientProviderError,
)
from varsel.providers.http import (
    DEFAULT_CONNECTION_LIMIT,
    ProviderAnswer,
    ProviderConnectionError,
    ProviderHttp,
    ProviderTimeout,
    bounded_retry_after,
)

log = logging.getLogger(__name__)

API_VERSION = "2025-09-01"
SIGNED_HEADERS = "x-ms-date;host;x-ms-content-sha256"

_NOT_FINISHED = frozenset({"notstarted", "running"})
_INVALID_ADDRESS_CODES = frozenset({"invalidemailaddress"})
_INVALID_ADDRESS_MESSAGE = "invalid format for email address"
_SUPPRESSED_CODES = frozenset({"emaildroppedallrecipientssuppressed"})

VALIDATION_EVENT = "microsoft.eventgrid.subscriptionvalidationevent"
DELIVERY_REPORT_EVENT = "microsoft.communication.emaildeliveryreportreceived"

# None: not final, no report (Expanded means a distribution list was expanded; its members get reports of their own).
_DELIVERY_STATUSES: dict[str, EmailStatus | None] = {
    "delivered": EmailStatus.DELIVERED,
    "expanded": None,
    "bounced": EmailStatus.FAILED_BOUNCED,
    "suppressed": EmailStatus.FAILED_SUPPRESSED_RECIPIENT,
    "filteredspam": EmailStatus.FAILED_FILTERED_SPAM,
    "quarantined": EmailStatus.FAILED_QUARANTINED,
    "failed": EmailStatus.FAILED,
}


# ---------------------------------------------------------------- settings and signing


@dataclass(frozen=True)
class AcsConnection:
    """A parsed connection string: where the resource is and the key that signs requests to it."""

    endpoint: str  # scheme://host[:port], no trailing slash
    access_key: bytes


def parse_connection_string(value: str) -> AcsConnection:
    """Parse ``endpoint=…;accesskey=…``; ValueError names what is wrong (never the key)."""
    parts: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        name, sep, item = part.partition("=")
        if not sep:
            raise ValueError(f"'{name.strip()[:20]}' is not name=value")
        # The key is base64 and may end in '=': only the first '=' separates name from value.
        parts[name.strip().lower()] = item.strip()
    endpoint = parts.get("endpoint")
    if not endpoint:
        raise ValueError("endpoint=https://<resource>.communication.azure.com/ is missing")
    try:
        url = URL(endpoint)
    except ValueError:
        raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
    key_text = parts.get("accesskey")
    if not key_text:
        raise ValueError("accesskey=<base64 key> is missing")
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("accesskey is not base64") from None
    if not key:
        raise ValueError("accesskey is empty")
    # host_port_subcomponent: the host lower-cased and IDNA-encoded, IPv6 in brackets, the port unless the default.
    return AcsConnection(endpoint=f"{url.scheme}://{url.host_port_subcomponent}", access_key=key)


class AcsSettings(BaseModel):
    # endpoint=https://<resource>.communication.azure.com/;accesskey=<base64 key>
    connection_string: SecretStr | None = None
    api_version: str = API_VERSION
    timeout_seconds: float = 30.0
    poll_interval_seconds: float = 1.0
    # After this the message counts as accepted, and its delivery report settles it.
    poll_max_seconds: float = 30.0
    # The key Event Grid must present on the delivery-report webhook (the ?accesskey= of the subscription's URL).
    report_access_key: SecretStr | None = None

    def missing(self) -> list[str]:
        """What must still be set (or fixed) before varsel can send email through ACS."""
        if self.connection_string is None or not self.connection_string.get_secret_value().strip():
            return ["connection_string"]
        try:
            parse_connection_string(self.connection_string.get_secret_value())
        except ValueError as error:
            return [f"connection_string ({error})"]
        return []


def content_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def sign(
    method: str, path_and_query: str, host: str, body: bytes, access_key: bytes, moment: datetime
) -> dict[str, str]:
    """The headers that authenticate one request to ACS."""
    date = format_datetime(moment.astimezone(UTC), usegmt=True)
    digest = content_hash(body)
    string_to_sign = f"{method.upper()}\n{path_and_query}\n{date};{host};{digest}"
    signature = base64.b64encode(hmac.new(access_key, string_to_sign.encode("utf-8"), hashlib.sha256).digest())
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": digest,
        "Authorization": f"HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}&Signature={signature.decode('ascii')}",
    }


# ---------------------------------------------------------------- sending


def _retry_after(response: ProviderAnswer, now: datetime) -> float | None:
    """Seconds to wait, from retry-after-ms / x-ms-retry-after-ms (as azure-core reads them) or Retry-After."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = response.headers.get(name)
        if value:
            try:
                return bounded_retry_after(float(value) / 1000.0)
            except ValueError:
                pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return bounded_retry_after(float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return bounded_retry_after((moment - now).total_seconds())


def _error_of(response: ProviderAnswer) -> tuple[str, str, str]:
    """(code, message, target) of an ACS error answer; empty strings for what it does not say."""
    code = response.headers.get("x-ms-error-code", "")
    message = target = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        target = str(error.get("target") or "")
    return code, message, target


def _names_invalid_address(code: str, message: str, target: str = "") -> bool:
    if "sender" in target.lower():
        # A malformed senderAddress is the operator's configuration, not the recipient's address.
        return False
    return code.lower() in _INVALID_ADDRESS_CODES or _INVALID_ADDRESS_MESSAGE in message.lower()


def _describe(status: int, code: str, message: str) -> str:
    said = ": ".join(part for part in (code, message) if part)
    return f"ACS answered HTTP {status}" + (f" ({said})" if said else "")


class AcsEmailProvider:
    """Sends each email as one ACS operation whose id is the notification id.

    The id makes sending idempotent: a retry after a timeout, or a second worker after a crash, names the same
    operation, and ACS does not send it twice. The same id comes back as ``messageId`` in the delivery report.
    """

    name = "acs"

    def __init__(
        self,
        settings: AcsSettings,
        clock: Clock,
        http: ProviderHttp | None = None,
        connections: int = DEFAULT_CONNECTION_LIMIT,
    ) -> None:
        problems = settings.missing()
        if problems or settings.connection_string is None:
            raise ValueError(f"ACS email is not configured: set {', '.join(problems)}")
        self._connection = parse_connection_string(settings.connection_string.get_secret_value())
        self._settings = settings
        self._clock = clock
        # Given a client, the adapter uses it and leaves it open; its own it closes in close().
        self._owns_http = http is None
        self._http = http if http is not None else ProviderHttp(limit=connections)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def send(self, message: EmailMessage) -> Accepted:
        operation_id = str(message.notification_id)
        # Base64 and JSON of megabytes of attachments take milliseconds: off the event loop.
        body = (
            await asyncio.to_thread(self._request_body, message) if message.attachments else self._request_body(message)
        )
        url = f"{self._connection.endpoint}/emails:send?api-version={quote(self._settings.api_version)}"
        response = await self._request(
            "POST", url, body, {"Operation-Id": operation_id, "Content-Type": "application/json"}
        )
        wait: float | None = None
        if response.status_code == 409:
            log.info("ACS knows operation %s already (a repeated send): polling it", operation_id)
        elif response.is_success:
            wait = _retry_after(response, self._clock.now())
            try:
                answered = response.json().get("id")
            except (ValueError, AttributeError):
                answered = None
            # The delivery report names the id ACS answered; it is ours unless ACS ignored the header.
            if isinstance(answered, str) and answered:
                operation_id = answered
        else:
            raise self._send_error(response, bool(message.attachments))
        return await self._poll(operation_id, wait)

    def _request_body(self, message: EmailMessage) -> bytes:
        try:
            return json.dumps(self._payload(message), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError as error:
            # A lone surrogate, which has no UTF-8: this message's fault, not ACS's.
            raise EmailRefused(f"the message cannot be written as UTF-8: {error}") from error

    def _payload(self, message: EmailMessage) -> dict[str, Any]:
        # An HTML body goes without a plainText part, as the reference sends it: a text version derived here would be
        # a lossy guess (links, tables, layout) that text-only clients show as if the sender had written it.
        key = "html" if message.content_type is EmailContentType.HTML else "plainText"
        # ACS writes the headers itself: it gets the subject on the one line every provider sends, and plain
        # addresses with IDNA domains (ACS documents no more than "email address"; xn-- is what any relay takes).
        # A display name goes in its own field (a sender's name is set on the MailFrom address in Azure).
        sender = mime.mailbox(message.from_address, "from", EmailStatus.FAILED)
        recipient = mime.mailbox(message.to_address, "to", EmailStatus.FAILED_INVALID_EMAIL_FORMAT)
        to: dict[str, str] = {"address": recipient.addr_spec}
        if recipient.display_name:
            to["displayName"] = recipient.display_name
        payload: dict[str, Any] = {
            "senderAddress": sender.addr_spec,
            "content": {"subject": subject_line(message.subject), key: message.body},
            "recipients": {"to": [to]},
            # varsel ignores engagement (open/click) events, so the tracking pixel and rewritten links would only
            # cost recipients privacy, even where the resource has tracking enabled.
            "userEngagementTrackingDisabled": True,
        }
        if message.attachments:
            # EmailAttachment of the REST API: name, contentType, contentInBase64 (ACS checks the type against its
            # own list; intake checked it against the same one).
            payload["attachments"] = [
                {
                    "name": attachment.filename,
                    "contentType": attachment.mime_type,
                    "contentInBase64": base64.b64encode(attachment.content).decode("ascii"),
                }
                for attachment in message.attachments
            ]
        return payload

    async def _request(
        self, method: str, url: str, body: bytes, headers: dict[str, str] | None = None
    ) -> ProviderAnswer:
        # encoded=True: the path and query go on the wire exactly as built (already quoted) and as signed.
        target = URL(url, encoded=True)
        host = target.host_port_subcomponent or ""
        # The Host header is set to what was signed rather than left to the client to derive.
        signed = {**(headers or {}), "Host": host}
        signed.update(sign(method, target.raw_path_qs, host, body, self._connection.access_key, self._clock.now()))
        try:
            return await self._http.request(
                method, target, body=body or None, headers=signed, timeout_seconds=self._settings.timeout_seconds
            )
        except ProviderTimeout as error:
            raise TransientProviderError(f"ACS did not answer in time ({error})") from error
        except ProviderConnectionError as error:
            raise TransientProviderError(f"ACS could not be reached: {error}") from error

    def _send_error(self, response: ProviderAnswer, attachments: bool = False) -> Exception:
        status = response.status_code
        code, message, target = _error_of(response)
        described = _describe(status, code, message)
        if status == 429:
            return TransientProviderError(described, retry_after=_retry_after(response, self._clock.now()))
        if status >= 500 or status == 408:
            return TransientProviderError(described, retry_after=_retry_after(response, self._clock.now()))
        if status in (401, 403):
            # A wrong or rotated key is the operator's to fix; failing the notifications would lose them.
            return TransientProviderError(
                f"{described}: ACS refused the request's credentials; check the access key in the ACS connection "
                "string (and that the server's clock is right)"
            )
        if status == 413 and attachments:
            # The message with its attachments is more than ACS takes (10 MB): sending it again will not help. (The
            # status says the attachments are too large; an email without any keeps plain Failed.)
            return PermanentEmailError(described, EmailStatus.FAILED_PAYLOAD_TOO_LARGE)
        if status == 400 and _names_invalid_address(code, message, target):
            return PermanentEmailError(described, EmailStatus.FAILED_INVALID_EMAIL_FORMAT)
        return PermanentEmailError(described, EmailStatus.FAILED)

    async def _poll(self, operation_id: str, wait: float | None) -> Accepted:
        """Follow the operation until it ends or the poll budget is spent.

        Once ACS has taken the message nothing here turns it into an error except a Failed or Canceled operation:
        poll answers that are errors or unreadable are no news, and the delivery report will settle the message.
        """
        url = (
            f"{self._connection.endpoint}/emails/operations/{quote(operation_id, safe='')}"
            f"?api-version={quote(self._settings.api_version)}"
        )
        loop = asyncio.get_running_loop()
        # Real elapsed time, not the injected clock: a frozen test clock would otherwise poll forever.
        deadline = loop.time() + self._settings.poll_max_seconds
        interval = self._settings.poll_interval_seconds
        while (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(wait if wait is not None else interval, remaining))
            try:
                response = await self._request("GET", url, b"")
            except TransientProviderError as error:
                log.info("ACS operation %s: poll failed (%s)", operation_id, error)
                wait = None
                continue
            wait = _retry_after(response, self._clock.now())
            if response.status_code != 200:
                log.info("ACS operation %s: poll answered HTTP %s", operation_id, response.status_code)
                continue
            try:
                result = response.json()
            except ValueError:
                continue
            if not isinstance(result, dict):
                continue
            status = str(result.get("status") or "")
            if status.lower() == "succeeded":
                return Accepted(reference=operation_id, delivered=False)
            if status.lower() in ("failed", "canceled"):
                raise self._operation_error(operation_id, status, result.get("error"))
            if status.lower() not in _NOT_FINISHED:
                log.warning("ACS operation %s: unknown status %r, still polling", operation_id, status)
        return Accepted(reference=operation_id, delivered=False)

    @staticmethod
    def _operation_error(operation_id: str, status: str, error: object) -> PermanentEmailError:
        code = message = ""
        if isinstance(error, dict):
            code = str(error.get("code") or "")
            message = str(error.get("message") or "")
        said = ": ".join(part for part in (code, message) if part)
        described = f"ACS operation {operation_id} {status}" + (f" ({said})" if said else "")
        if _names_invalid_address(code, message):
            return PermanentEmailError(described, EmailStatus.FAILED_INVALID_EMAIL_FORMAT)
        if code.lower() in _SUPPRESSED_CODES:
            return PermanentEmailError(described, EmailStatus.FAILED_SUPPRESSED_RECIPIENT)
        return PermanentEmailError(described, EmailStatus.FAILED)


# ---------------------------------------------------------------- delivery reports


@dataclass(frozen=True)
class EventGridDelivery:
    """What one Event Grid post says: a validation code to echo (the handshake), and delivery reports."""

    validation_code: str | None
    reports: list[DeliveryReport]


def _timestamp(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ReportFormatError(f"{where} is not a timestamp string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ReportFormatError(f"{where} {value[:40]!r} is not an ISO 8601 timestamp") from None
    # A timestamp without an offset is taken as UTC, which is what Azure writes.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Year 1 with a positive offset or year 9999 with a negative one: no time Azure writes.
        raise ReportFormatError(f"{where} {value[:40]!r} is out of range in UTC") from None


def _report(event: dict[str, Any], where: str) -> DeliveryReport | None:
    data = event.get("data")
    if not isinstance(data, dict):
        raise ReportFormatError(f"{where}: data is not an object")
    message_id = data.get("messageId")
    if not isinstance(message_id, str) or not message_id.strip():
        raise ReportFormatError(f"{where}: data.messageId is missing")
    status = data.get("status")
    if not isinstance(status, str) or not status.strip():
        raise ReportFormatError(f"{where}: data.status is missing")
    if status.strip().lower() not in _DELIVERY_STATUSES:
        # As the reference does: an unknown status is logged and skipped, not guessed at. Guessing Failed could
        # fail an email that a later report says was delivered; left alone it still ends, at worst as Failed_TTL.
        log.warning("ACS delivery report for %s has an unknown status %r: ignored", message_id, status)
        return None
    mapped = _DELIVERY_STATUSES[status.strip().lower()]
    if mapped is None:
        return None
    details = data.get("deliveryStatusDetails")
    detail: str | None = None
    if isinstance(details, dict) and isinstance(details.get("statusMessage"), str):
        detail = details["statusMessage"]
    elif isinstance(details, str):
        # An early version of the event carried the details as a bare string.
        detail = details
    occurred: datetime | None = None
    for name in ("deliveryAttemptTimeStamp", "deliveryAttemptTimestamp"):
        if data.get(name) is not None:
            occurred = _timestamp(data[name], f"{where}: data.{name}")
            break
    else:
        for name in ("eventTime", "time"):
            if event.get(name) is not None:
                occurred = _timestamp(event[name], f"{where}: {name}")
                break
    return DeliveryReport(
        notification_id=message_id.strip(),
        status=mapped,
        provider_reference=message_id.strip(),
        detail=detail or None,
        occurred=occurred,
    )


def parse_event_grid(body: bytes, max_reports: int | None = None) -> EventGridDelivery:
    """Read an Event Grid post (Event Grid or CloudEvents schema); ReportFormatError when it is not one,
    TooManyReports when it holds more than `max_reports` events (of any type)."""
    try:
        parsed = jsonsafe.loads(body)
    except jsonsafe.UnreadableJson as error:
        raise ReportFormatError(f"the body is not JSON varsel reads: {error}") from None
    if isinstance(parsed, dict):
        # CloudEvents in structured mode: a single event per request.
        events: list[Any] = [parsed]
    elif isinstance(parsed, list):
        events = parsed
    else:
        raise ReportFormatError("the body is neither an array of events nor one event object")
    if max_reports is not None and len(events) > max_reports:
        raise TooManyReports(len(events), max_reports)
    validation_code: str | None = None
    reports: list[DeliveryReport] = []
    for index, event in enumerate(events):
        where = f"event {index}"
        if not isinstance(event, dict):
            raise ReportFormatError(f"{where} is not an object")
        event_type = event.get("eventType", event.get("type"))
        if not isinstance(event_type, str) or not event_type:
            raise ReportFormatError(f"{where} has no eventType (Event Grid schema) or type (CloudEvents)")
        kind = event_type.lower()
        if kind == VALIDATION_EVENT:
            data = event.get("data")
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str) or not code:
                raise ReportFormatError(f"{where}: a subscription validation event without data.validationCode")
            validation_code = code
        elif kind == DELIVERY_REPORT_EVENT:
            report = _report(event, where)
            if report is not None:
                reports.append(report)
        # Other event types (engagement tracking, events of other services on a shared topic) are not ours to judge.
    return EventGridDelivery(validation_code=validation_code, reports=reports)
