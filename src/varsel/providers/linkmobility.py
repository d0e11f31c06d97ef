"""SMS through LINK Mobility's "Common" SMS REST API, and the delivery reports its gates post back.

Wire formats, and where they come from
======================================

Main source: "LINK Mobility SMS REST API" version 1.6 (3 July 2019), the MT and delivery-report document LINK hands
its customers (a text copy is public in several GitHub repositories; the same content, slightly newer, is on
sergel.se/foretagstjanster/sergel-connect/sergel-connect-support/smsapi, Sergel Connect being the same "Common"
platform). Field types cross-checked against deveel/deveel.lm.client (an OpenAPI description written from LINK's
documentation, with a ResultCodes table) and digitalcreations/sms_link (a PHP client with a delivery-report parser).
Altinn's own SMS service (Altinn/altinn-notifications-sms) talks to LINK through the older PSWin XML gateway and its
NuGet client, so it shows no JSON; it gives the reference's delivery-state mapping (SmsSendResultMapper) and the
rule that a rejected receiver becomes Failed_InvalidReceiver.

Request: ``POST {base_url}/sms/send`` (base URLs: n-eu, c-eu, s-eu, no, deb .linkmobility.io, wsx.sp247.net),
HTTP basic authentication, ``Content-Type: application/json``, one object (sent with aiohttp through
varsel.providers.http, not httpx: at 2,000 SMS/s the client's CPU per request decides, and measured on 2 cores
httpx spent 2-5 ms per request where aiohttp spent about 0.3 ms)::

    {"source": "Altinn", "sourceTON": "ALPHANUMERIC",       # or MSISDN ("+47...") or SHORTNUMBER (1-14 digits)
     "destination": "+4799999999", "destinationTON": "MSISDN",
     "userData": "text", "dcs": "TEXT",                     # TEXT: the gateway picks GSM-7/UCS-2 and splits
     "platformId": "...", "platformPartnerId": "...",
     "refId": "<our notification id>",                      # mirrored in the delivery report
     "relativeValidityTime": 172800000,                     # milliseconds; the documented default is 48 h
     "useDeliveryReport": true, "deliveryReportGates": ["<gate id>"],
     "ignoreResponse": false}                               # documented default true: 204 and no messageId

Response: 200 ``{"messageId": "Dcshuhod0PMAAAFQ+/PbnR3x", "resultCode": 1005, "description": "Queued"}`` (204 with
no body when ignoreResponse is true). Errors: 400 (invalid request), 401 (invalid login), 403 (no access), each with
an "ErrorResponse" whose fields the document does not spell out. Documented error result codes: 106000 unknown,
106100 invalid authentication, 106101 access denied, 106200/106201 invalid platformId/platformPartnerId, 106202
currency, 106300/106301 no gate / unknown gate.

Delivery report: posted by the gate as JSON (the gate can also be set up for XML or form posts; varsel expects
JSON)::

    {"refId": "<our notification id>", "id": "<messageId>", "operator": "no.telenor",
     "sentTimestamp": "2015-11-19T09:37:35Z", "timestamp": "2015-11-19T09:37:00Z",
     "resultCode": 1001, "operatorResultCode": "2", "segments": 1,
     "gateCustomParameters": {}, "customParameters": {}}

resultCode 1001 is delivered; the table in the document marks each code FINAL or TEMP. A message split into parts
gets one report per part, with ``id`` = ``{messageId}${n}`` (sergel.se's copy of the document).

Assumptions, where the documentation is silent
==============================================

* The ErrorResponse body: read leniently as ``{"resultCode" | "errorCode": int, "description" | "message": str}``
  (deveel's model names errorCode and description). The document lists no error code for a bad destination; a 400
  whose code is a destination code of the delivery-report table (2100-2102, 2104, 2106) or whose description names
  the destination is taken as an invalid recipient (the reference does the same with PSWin's "Invalid RCV" text).
  Codes 2105/2107 (subscriber barred) become Failed_BarredReceiver.
* 429 is not documented; it is read as any HTTP service would mean it. Retry-After may be seconds or an HTTP date.
* The reference maps PSWin's textual delivery states (DELIVRD, EXPIRED, DELETED, UNDELIV, REJECTD, BARRED, ...).
  The JSON report carries ``resultCode`` instead, so each code is mapped onto the state the reference would have
  seen (table below). A report with a textual ``status`` field instead of ``resultCode`` is accepted too, mapped
  exactly as the reference maps states; when both are present ``resultCode`` wins, being the documented one.
* Intermediate reports (TEMP result codes such as 1000 "sent to operator", 1005 queued, 1008/1011/1012/1013
  billing steps; textual ENROUTE, SCHEDLD, ACCEPTD) say nothing final: they yield no DeliveryReport at all, so they
  can never mark a message failed. 1007 "delivered, billing delayed" is TEMP only for billing and is read as
  delivered.
* A report's ``timestamp`` that is not RFC 3339 leaves ``occurred`` empty rather than losing the whole report;
  one without a zone is read as UTC, which the document says it is. One that lies outside the years 1-9999 once
  in UTC (year 1 with a positive offset, 9999 with a negative one) is no gate's and refuses the body, as JSON
  nested deeper than 64 levels or a number of more than 4,300 digits does (varsel.jsonsafe).
* ``relativeValidityTime`` is never below one second: zero may be read as "not set" and get the 48 h default, and
  SMSCs count validity in whole seconds. A message already past its expiry therefore dies at the SMSC at once and
  is reported EXPIRED, instead of living two more days.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from varsel import jsonsafe
from varsel.clock import Clock
from varsel.notifications.statuses import SmsStatus
from varsel.providers.base import (
    Accepted,
    DeliveryReport,
    PermanentSmsError,
    ReportFormatError,
    SmsMessage,
    TooManyReports,
    TransientProviderError,
)
from varsel.providers.http import (
    DEFAULT_CONNECTION_LIMIT,
    ProviderAnswer,
    ProviderConnectionError,
    ProviderHttp,
    ProviderTimeout,
    basic_authorization,
    bounded_retry_after,
)

SEND_PATH = "/sms/send"
MIN_VALIDITY_MS = 1_000


class LinkMobilitySettings(BaseModel):
    """Account details LINK Mobility's support hands out, and the credentials its gate uses towards us."""

    base_url: str = "https://n-eu.linkmobility.io"
    username: str | None = None
    password: SecretStr | None = None
    platform_id: str | None = None
    platform_partner_id: str | None = None
    # Without a gate no delivery reports come back, and messages stay Accepted until Failed_TTL.
    delivery_report_gate: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    report_username: str | None = None
    report_password: SecretStr | None = None

    def missing(self) -> list[str]:
        """The settings sending cannot do without that are unset or empty, by field name."""
        values: dict[str, str | None] = {
            "username": self.username,
            "password": self.password.get_secret_value() if self.password is not None else None,
            "platform_id": self.platform_id,
            "platform_partner_id": self.platform_partner_id,
        }
        return [name for name, value in values.items() if not value]


_SHORT_NUMBER = re.compile(r"\d{1,14}")
_INTERNATIONAL_NUMBER = re.compile(r"\+\d{2,15}")


def source_type_of_number(sender: str) -> str:
    """The documented TON for a sender: a "+" number is an MSISDN, bare digits a short number, else alphanumeric."""
    if _INTERNATIONAL_NUMBER.fullmatch(sender):
        return "MSISDN"
    if _SHORT_NUMBER.fullmatch(sender):
        return "SHORTNUMBER"
    return "ALPHANUMERIC"


# Send-time errors that mean varsel's account is misconfigured: the operator must act, recipients are not at fault.
_CONFIGURATION_CODES = {106100, 106101, 106200, 106201, 106300, 106301}
_INVALID_DESTINATION_CODES = {2100, 2101, 2102, 2104, 2106}
_BARRED_DESTINATION_CODES = {2105, 2107}


class LinkMobilitySmsProvider:
    name = "linkmobility"

    def __init__(
        self,
        settings: LinkMobilitySettings,
        clock: Clock,
        http: ProviderHttp | None = None,
        connections: int = DEFAULT_CONNECTION_LIMIT,
    ) -> None:
        missing = settings.missing()
        username, password = settings.username, settings.password
        if missing or username is None or password is None:
            raise ValueError(f"LINK Mobility needs these settings to send: {', '.join(missing)}")
        self._settings = settings
        self._clock = clock
        # Given a client, the adapter uses it and leaves it open; its own it closes in close().
        self._owns_http = http is None
        self._http = http if http is not None else ProviderHttp(limit=connections)
        self._url = settings.base_url.rstrip("/") + SEND_PATH
        self._headers = {"Authorization": basic_authorization(username, password.get_secret_value())}

    def request_body(self, message: SmsMessage) -> dict[str, Any]:
        """The JSON object posted for one message."""
        remaining = message.expiry - self._clock.now()
        validity_ms = max(MIN_VALIDITY_MS, math.floor(remaining / timedelta(milliseconds=1)))
        body: dict[str, Any] = {
            "source": message.sender,
            "sourceTON": source_type_of_number(message.sender),
            "destination": message.to_number,
            "destinationTON": "MSISDN",
            "userData": message.body,
            "dcs": "TEXT",
            "platformId": self._settings.platform_id,
            "platformPartnerId": self._settings.platform_partner_id,
            "refId": str(message.notification_id),
            "relativeValidityTime": validity_ms,
            # Without it the gateway answers 204 and keeps its message id to itself.
            "ignoreResponse": False,
        }
        gate = self._settings.delivery_report_gate
        if gate:
            body["useDeliveryReport"] = True
            body["deliveryReportGates"] = [gate]
        else:
            # The documentation asks for this explicitly when no gate is given (reports are on by default).
            body["useDeliveryReport"] = False
        return body

    async def send(self, message: SmsMessage) -> Accepted:
        try:
            response = await self._http.post_json(
                self._url,
                self.request_body(message),
                headers=self._headers,
                timeout_seconds=self._settings.timeout_seconds,
            )
        except ProviderTimeout as error:
            raise TransientProviderError(
                f"LINK Mobility did not answer within {self._settings.timeout_seconds:g} s ({error})"
            ) from error
        except ProviderConnectionError as error:
            raise TransientProviderError(f"could not reach LINK Mobility at {self._url}: {error}") from error
        return self._interpret(response, message)

    def _interpret(self, response: ProviderAnswer, message: SmsMessage) -> Accepted:
        status = response.status_code
        if status == 204:
            # Only if the gateway ignored ignoreResponse=false: the message is queued all the same, and sending it
            # again would reach the recipient twice. Reports are matched on refId, so that is the reference.
            return Accepted(reference=str(message.notification_id))
        if 200 <= status < 300:
            return Accepted(reference=_message_id(response))
        code, description = _error_details(response)
        said = _describe(status, code, description, response)
        if status == 429:
            raise TransientProviderError(
                f"LINK Mobility is rate limiting varsel: {said}", retry_after=self._retry_after(response)
            )
        if status in (401, 403) or code in _CONFIGURATION_CODES:
            raise TransientProviderError(
                f"LINK Mobility refused varsel's account (check username, password, platform_id, "
                f"platform_partner_id and delivery_report_gate): {said}"
            )
        if status in (404, 405):
            raise TransientProviderError(f"LINK Mobility has no send endpoint at {self._url} (check base_url): {said}")
        if status == 408 or status >= 500:
            raise TransientProviderError(f"LINK Mobility failed: {said}", retry_after=self._retry_after(response))
        if 400 <= status < 500:
            if code in _INVALID_DESTINATION_CODES or "destination" in (description or "").lower():
                raise PermanentSmsError(
                    f"LINK Mobility refused the destination {message.to_number}: {said}",
                    status=SmsStatus.FAILED_INVALID_RECIPIENT,
                )
            if code in _BARRED_DESTINATION_CODES:
                raise PermanentSmsError(
                    f"LINK Mobility reports {message.to_number} barred: {said}",
                    status=SmsStatus.FAILED_BARRED_RECEIVER,
                )
            raise PermanentSmsError(f"LINK Mobility refused the message: {said}", status=SmsStatus.FAILED)
        raise TransientProviderError(f"LINK Mobility answered unexpectedly: {said}")

    def _retry_after(self, response: ProviderAnswer) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"), self._clock.now())

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def _message_id(response: ProviderAnswer) -> str:
    try:
        answer = jsonsafe.loads(response.content)
    except jsonsafe.UnreadableJson as error:
        # The message may or may not be queued; retrying risks a duplicate but failing would lose it for sure.
        raise TransientProviderError(
            f"LINK Mobility answered HTTP {response.status_code} with a body that is not JSON: {_excerpt(response)!r}"
        ) from error
    message_id = answer.get("messageId") if isinstance(answer, dict) else None
    if not isinstance(message_id, str) or not message_id:
        raise TransientProviderError(
            f"LINK Mobility answered HTTP {response.status_code} without a messageId: {_excerpt(response)!r}"
        )
    return message_id


def _error_details(response: ProviderAnswer) -> tuple[int | None, str | None]:
    try:
        answer = jsonsafe.loads(response.content)
    except jsonsafe.UnreadableJson:
        return None, None
    if not isinstance(answer, dict):
        return None, None
    code: int | None = None
    for key in ("resultCode", "errorCode"):
        value = answer.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            code = value
            break
        if isinstance(value, str) and value.strip().isdigit():
            code = int(value)
            break
    description: str | None = None
    for key in ("description", "message"):
        value = answer.get(key)
        if isinstance(value, str) and value:
            description = value
            break
    return code, description


def _describe(status: int, code: int | None, description: str | None, response: ProviderAnswer) -> str:
    parts = [f"HTTP {status}"]
    if code is not None:
        parts.append(f"resultCode {code}")
    if description:
        parts.append(description)
    elif code is None and response.content:
        parts.append(repr(_excerpt(response)))
    return ", ".join(parts)


def _excerpt(response: ProviderAnswer, limit: int = 200) -> str:
    return response.content[:limit].decode("utf-8", errors="replace")


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return bounded_retry_after(seconds)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return bounded_retry_after((moment - now).total_seconds())


# Result codes of the delivery report (document section 0.9.1; 1003 and 1013 from deveel's ResultCodes), mapped
# onto the state the reference would have seen. None: intermediate, no report is produced.
_RESULT_CODES: dict[int, tuple[SmsStatus | None, str]] = {
    0: (SmsStatus.FAILED, "Unknown error"),
    1: (SmsStatus.FAILED_UNDELIVERED, "Temporary routing error"),
    2: (SmsStatus.FAILED_UNDELIVERED, "Permanent routing error"),
    3: (SmsStatus.FAILED_REJECTED, "Maximum throttling exceeded"),
    4: (SmsStatus.FAILED, "Timeout"),
    5: (SmsStatus.FAILED, "Operator unknown error"),
    6: (SmsStatus.FAILED, "Operator error"),
    104: (SmsStatus.FAILED, "Configuration error"),
    105: (SmsStatus.FAILED, "Internal error"),
    1000: (None, "Sent (to operator)"),
    1001: (SmsStatus.DELIVERED, "Billed and delivered"),
    1002: (SmsStatus.FAILED_EXPIRED, "Expired"),
    1003: (SmsStatus.FAILED_DELETED, "Deleted"),
    1004: (SmsStatus.FAILED_UNDELIVERED, "Mobile full"),
    1005: (None, "Queued"),
    1006: (SmsStatus.FAILED_UNDELIVERED, "Not delivered"),
    1007: (SmsStatus.DELIVERED, "Delivered, billing delayed"),
    1008: (None, "Billed OK (charged before sending)"),
    1009: (SmsStatus.FAILED_UNDELIVERED, "Billed OK and not delivered"),
    1010: (SmsStatus.FAILED_EXPIRED, "Expired, absence of operator delivery report"),
    1011: (None, "Billed OK and sent (to operator)"),
    1012: (None, "Delayed (temporary billing error, will be resent)"),
    1013: (None, "Sent to operator, billing delayed"),
    2000: (SmsStatus.FAILED_REJECTED, "Invalid source"),
    2001: (SmsStatus.FAILED_REJECTED, "Source short number not supported"),
    2002: (SmsStatus.FAILED_REJECTED, "Source alphanumeric not supported"),
    2003: (SmsStatus.FAILED_REJECTED, "Source MSISDN not supported"),
    2100: (SmsStatus.FAILED_REJECTED, "Destination short number not supported"),
    2101: (SmsStatus.FAILED_REJECTED, "Destination alphanumeric not supported"),
    2102: (SmsStatus.FAILED_REJECTED, "Destination MSISDN not supported"),
    2103: (SmsStatus.FAILED_REJECTED, "Operation blocked"),
    2104: (SmsStatus.FAILED_UNDELIVERED, "Unknown subscriber"),
    2105: (SmsStatus.FAILED_BARRED_RECEIVER, "Destination blocked (subscriber permanently barred)"),
    2106: (SmsStatus.FAILED_UNDELIVERED, "Number error"),
    2107: (SmsStatus.FAILED_BARRED_RECEIVER, "Destination temporarily blocked (subscriber temporarily barred)"),
    2200: (SmsStatus.FAILED_REJECTED, "Charging error"),
    2201: (SmsStatus.FAILED_REJECTED, "Subscriber has low balance"),
    2202: (SmsStatus.FAILED_BARRED_RECEIVER, "Subscriber barred for overcharged (premium) messages"),
    2203: (SmsStatus.FAILED_REJECTED, "Subscriber too young"),
    2204: (SmsStatus.FAILED_REJECTED, "Prepaid subscriber not allowed"),
    2205: (SmsStatus.FAILED_REJECTED, "Service rejected by subscriber"),
    2206: (SmsStatus.FAILED_REJECTED, "Subscriber not registered in payment system"),
    2207: (SmsStatus.FAILED_REJECTED, "Subscriber has reached max balance"),
    3000: (SmsStatus.FAILED_REJECTED, "GSM encoding is not supported"),
    3001: (SmsStatus.FAILED_REJECTED, "UCS2 encoding is not supported"),
    3002: (SmsStatus.FAILED_REJECTED, "Binary encoding is not supported"),
    4000: (SmsStatus.FAILED_REJECTED, "Delivery report is not supported"),
    4001: (SmsStatus.FAILED_REJECTED, "Invalid message content"),
    4002: (SmsStatus.FAILED_REJECTED, "Invalid tariff"),
    4003: (SmsStatus.FAILED_REJECTED, "Invalid user data"),
    4004: (SmsStatus.FAILED_REJECTED, "Invalid user data header"),
    4005: (SmsStatus.FAILED_REJECTED, "Invalid data coding"),
    4006: (SmsStatus.FAILED_REJECTED, "Invalid VAT"),
    4007: (SmsStatus.FAILED_REJECTED, "Unsupported content for destination"),
}

# The reference's mapping of delivery states (SmsSendResultMapper); any other state is Failed.
_STATES: dict[str, SmsStatus] = {
    "DELIVRD": SmsStatus.DELIVERED,
    "EXPIRED": SmsStatus.FAILED_EXPIRED,
    "DELETED": SmsStatus.FAILED_DELETED,
    "UNDELIV": SmsStatus.FAILED_UNDELIVERED,
    "REJECTD": SmsStatus.FAILED_REJECTED,
    "BARRED": SmsStatus.FAILED_BARRED_RECEIVER,
}
_INTERMEDIATE_STATES = frozenset({"ENROUTE", "SCHEDLD", "ACCEPTD"})

_PART_SUFFIX = re.compile(r"^(?P<id>.+)\$\d+$")


def parse_delivery_reports(body: bytes, max_reports: int | None = None) -> list[DeliveryReport]:
    """The reports in one body a LINK Mobility gate posted: one report object, or a JSON list of them.

    Intermediate reports are left out, so the list may be empty. Raises ReportFormatError, naming the problem,
    when the body is not JSON or a report lacks refId or a status, or has fields of the wrong type; TooManyReports
    when it holds more than `max_reports` (intermediate ones counted).
    """
    try:
        document = jsonsafe.loads(body)
    except jsonsafe.UnreadableJson as error:
        raise ReportFormatError(f"the delivery report is not JSON varsel reads: {error}") from None
    if isinstance(document, dict):
        items: list[Any] = [document]
    elif isinstance(document, list):
        items = document
    else:
        raise ReportFormatError(f"a delivery report must be a JSON object or a list of them, not {_kind(document)}")
    if max_reports is not None and len(items) > max_reports:
        raise TooManyReports(len(items), max_reports)
    reports: list[DeliveryReport] = []
    for index, item in enumerate(items):
        where = f"report {index}: " if isinstance(document, list) else ""
        if not isinstance(item, dict):
            raise ReportFormatError(f"{where}a delivery report must be a JSON object, not {_kind(item)}")
        try:
            report = _parse_one(item)
        except ReportFormatError as error:
            raise ReportFormatError(f"{where}{error}") from None
        if report is not None:
            reports.append(report)
    return reports


def _parse_one(item: dict[str, Any]) -> DeliveryReport | None:
    ref_id = item.get("refId")
    if ref_id is None:
        raise ReportFormatError("refId is missing (varsel sends every message with one)")
    if not isinstance(ref_id, str) or not ref_id.strip():
        raise ReportFormatError(f"refId must be a non-empty string, not {_kind(ref_id)}")

    message_id = item.get("id", item.get("messageId"))
    if message_id is not None and not isinstance(message_id, str):
        raise ReportFormatError(f"id must be a string, not {_kind(message_id)}")
    if message_id is not None:
        # Each part of a long message is reported as "{messageId}${n}"; the message is what varsel knows.
        part = _PART_SUFFIX.match(message_id)
        if part:
            message_id = part.group("id")

    status, detail = _status(item)
    if status is None:
        return None
    return DeliveryReport(
        notification_id=ref_id,
        status=status,
        provider_reference=message_id or None,
        detail=detail,
        occurred=_occurred(item.get("timestamp")),
    )


def _status(item: dict[str, Any]) -> tuple[SmsStatus | None, str]:
    code = item.get("resultCode")
    if code is not None:
        if not isinstance(code, int) or isinstance(code, bool):
            raise ReportFormatError(f"resultCode must be an integer, not {_kind(code)}")
        status, description = _RESULT_CODES.get(code, (SmsStatus.FAILED, "unknown result code"))
        detail = f"resultCode {code}: {description}"
        operator_code = item.get("operatorResultCode")
        if operator_code is not None:
            if not isinstance(operator_code, str | int) or isinstance(operator_code, bool):
                raise ReportFormatError(f"operatorResultCode must be a string or number, not {_kind(operator_code)}")
            detail += f" (operatorResultCode {operator_code})"
        return status, detail
    state = item.get("status")
    if state is None:
        raise ReportFormatError("the report has neither resultCode nor status")
    if not isinstance(state, str) or not state.strip():
        raise ReportFormatError(f"status must be a non-empty string, not {_kind(state)}")
    name = state.strip().upper()
    if name in _INTERMEDIATE_STATES:
        return None, name
    return _STATES.get(name, SmsStatus.FAILED), f"status {name}"


def _occurred(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReportFormatError(f"timestamp must be an RFC 3339 string, not {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Year 1 with a positive offset or year 9999 with a negative one: no gate writes that.
        raise ReportFormatError(f"timestamp {value[:40]!r} is out of range in UTC") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
