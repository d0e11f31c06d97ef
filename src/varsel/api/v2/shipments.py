"""GET /future/shipment/{id} (an order's delivery manifest) and GET /future/shipment/feed (the status feed), as
reference sections 4 and 5 have them, with varsel's two improvements to the feed: no blind spot (an entry is served
as soon as it commits, and a reader paging by sequenceNumber never skips one: see varsel.shipments.repository), and
a cancelled order's Order_Cancelled entry."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from varsel.api_types import ApiModel, UtcTimestamp
from varsel.auth.tokens import Caller
from varsel.http import problem_responses
from varsel.problems import PROBLEM_MEDIA_TYPE, Problem, ValidationProblem, trace_id
from varsel.shipments.repository import EMAIL, SMS, FeedEntry, Shipment, ShipmentRecipient
from varsel.shipments.service import ShipmentNotFound, Shipments
from varsel.webhooks.events import order_lifecycle, recipient_lifecycle

PREFIX = "/notifications/api/v1/future"
MAX_PAGE_SIZE = 500

router = APIRouter(prefix=PREFIX, tags=["Shipments (v2)"])


async def authenticated(request: Request) -> Caller:
    caller: Caller = await request.app.state.varsel.authenticator.caller(request)
    return caller


CallerDep = Annotated[Caller, Depends(authenticated)]


# The lifecycle vocabulary (reference 9.1): order_lifecycle and recipient_lifecycle, shared with the webhook events'
# payloads (varsel.webhooks.events), which say the same as the manifest and the feed.


# ---------------------------------------------------------------- response models


class FallbackForExt(ApiModel):
    """varsel only: why a notification exists that the order did not ask for directly (receipt-driven fallback)."""

    notification_id: UUID = Field(description="The first notification, on the other channel, that did not reach.")
    type: Literal["Email", "SMS"] = Field(description="The first notification's channel.")
    reason: str = Field(
        examples=["Email_Failed_Bounced", "NoDeliveryReport"],
        description="The first notification's failed status (Email_*/SMS_*), or NoDeliveryReport: none within the "
        "window.",
    )


_FALLBACK_FOR = (
    "varsel only, and only on a notification sent by receipt-driven fallback (an EmailPreferred/SmsPreferred order "
    "whose first notification did not reach the recipient): which notification it follows, and why."
)


class DeliveryManifestRecipientExt(ApiModel):
    # Declared first, so written first: Altinn's clients read it as the polymorphism discriminator.
    type: Literal["Email", "SMS"] = Field(description="Email or SMS; written first (a type discriminator).")
    destination: str = Field(description='The email address or mobile number; "" when none was found or reserved.')
    status: str = Field(examples=["Email_Delivered"], description="Email_* or SMS_* (reference 9.1).")
    last_update: UtcTimestamp = Field(description="When the notification reached this status.")
    fallback_for: FallbackForExt | None = Field(default=None, description=_FALLBACK_FOR)


class NotificationDeliveryManifestExt(ApiModel):
    shipment_id: UUID = Field(description="The order's id (also readable through v1 GET /orders/{id}).")
    senders_reference: str | None = None
    type: str = Field(examples=["Notification"], description="Notification, Reminder, Instant or Composed.")
    status: str = Field(examples=["Order_Completed"], description="Order_* (reference 9.1); Order_Processed as it is.")
    last_update: UtcTimestamp = Field(description="The later of the order's creation and its last status change.")
    recipients: list[DeliveryManifestRecipientExt] = Field(
        description="One per generated email or SMS; empty until the order is processed."
    )


class StatusFeedRecipientExt(ApiModel):
    """As a manifest's recipient, without the type."""

    destination: str
    status: str = Field(examples=["SMS_Delivered"])
    last_update: UtcTimestamp
    fallback_for: FallbackForExt | None = Field(default=None, description=_FALLBACK_FOR)


class StatusFeedExt(ApiModel):
    sequence_number: int = Field(description="Pass the last one received as the next request's seq.")
    shipment_id: UUID
    senders_reference: str | None = None
    recipients: list[StatusFeedRecipientExt] = Field(description="The order's notifications when it ended.")
    status: str = Field(
        examples=["Order_Completed"],
        description="Order_Completed, Order_SendConditionNotMet or (varsel only) Order_Cancelled.",
    )
    last_update: UtcTimestamp
    shipment_type: str = Field(examples=["Notification"])


def fallback_for(r: ShipmentRecipient) -> FallbackForExt | None:
    """The fallbackFor of a notification sent by receipt-driven fallback; None for any other."""
    if r.fallback_of is None:
        return None
    first = SMS if r.channel == EMAIL else EMAIL
    reason = r.fallback_reason or ""
    return FallbackForExt(
        notification_id=r.fallback_of,
        type="Email" if first == EMAIL else "SMS",
        # A failed status is named as the manifest names statuses; NoDeliveryReport as it is.
        reason=recipient_lifecycle(first, reason) if reason.startswith("Failed") else reason,
    )


def _manifest_recipient(r: ShipmentRecipient) -> DeliveryManifestRecipientExt:
    return DeliveryManifestRecipientExt(
        type="Email" if r.channel == EMAIL else "SMS",
        destination=r.destination,
        status=recipient_lifecycle(r.channel, r.status),
        last_update=r.last_update,
        fallback_for=fallback_for(r),
    )


def manifest_answer(shipment: Shipment) -> NotificationDeliveryManifestExt:
    """A shipment as GET /future/shipment/{id} answers it (also used by the chain's answer)."""
    return NotificationDeliveryManifestExt(
        shipment_id=shipment.id,
        senders_reference=shipment.senders_reference or None,
        type=shipment.order_type,
        status=order_lifecycle(shipment.status),
        last_update=shipment.last_update,
        recipients=[_manifest_recipient(r) for r in shipment.recipients],
    )


def _feed_entry(entry: FeedEntry) -> StatusFeedExt:
    shipment = entry.shipment
    return StatusFeedExt(
        sequence_number=entry.seq,
        shipment_id=shipment.id,
        senders_reference=shipment.senders_reference or None,
        recipients=[
            StatusFeedRecipientExt(
                destination=r.destination,
                status=recipient_lifecycle(r.channel, r.status),
                last_update=r.last_update,
                fallback_for=fallback_for(r),
            )
            for r in shipment.recipients
        ],
        status=order_lifecycle(shipment.status),
        last_update=shipment.last_update,
        shipment_type=shipment.order_type,
    )


# ---------------------------------------------------------------- errors

_NOT_FOUND_CODE = "NOT-00003"


def shipment_not_found(request: Request) -> Response:
    """404 NOT-00003 as Altinn's AltinnProblemDetails: type, title, status, code, traceId, statusDescription."""
    body = {
        "type": f"urn:altinn:error:{_NOT_FOUND_CODE}",
        "title": "Shipment not found",
        "status": 404,
        "code": _NOT_FOUND_CODE,
        "traceId": trace_id(request),
        "statusDescription": "Not Found",
    }
    return JSONResponse(body, status_code=404, media_type=PROBLEM_MEDIA_TYPE)


_NOT_FOUND_RESPONSE: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "NOT-00003: no order with that id for this service owner.",
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "example": {
                    "type": "urn:altinn:error:NOT-00003",
                    "title": "Shipment not found",
                    "status": 404,
                    "code": "NOT-00003",
                    "traceId": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                    "statusDescription": "Not Found",
                }
            }
        },
    }
}


# ---------------------------------------------------------------- the feed's query (ASP.NET binding)

_LONG_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1


def _query(request: Request) -> dict[str, str]:
    """The query's parameters by lower-case name, as ASP.NET binds them (in any case; the first value of a name)."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        found.setdefault(name.lower(), value)
    return found


def _integer(raw: str, low: int, high: int) -> int | None:
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit():
        return None
    value = int(text)
    return value if low <= value <= high else None


def _feed_parameters(request: Request) -> tuple[int, int, bool]:
    query = _query(request)
    errors: dict[str, list[str]] = {}
    seq, page_size, descending = 0, MAX_PAGE_SIZE, False
    if "seq" in query:
        parsed = _integer(query["seq"], -_LONG_MAX - 1, _LONG_MAX)
        if parsed is None:
            errors["Seq"] = [f"The value '{query['seq']}' is not valid for Seq."]
        elif parsed < 0:
            errors["Seq"] = ["The field Seq must be between 0 and 9.223372036854776E+18."]
        else:
            seq = parsed
    if "pagesize" in query:
        parsed = _integer(query["pagesize"], -_INT_MAX - 1, _INT_MAX)
        if parsed is None:
            errors["PageSize"] = [f"The value '{query['pagesize']}' is not valid for PageSize."]
        else:
            page_size = min(max(parsed, 1), MAX_PAGE_SIZE)  # clamped, never refused
    if "orderby" in query:
        direction = query["orderby"].strip().lower()
        if direction in ("asc", "0"):
            descending = False
        elif direction in ("desc", "1"):
            descending = True
        else:
            errors["OrderBy"] = [f"The value '{query['orderby']}' is not valid for OrderBy."]
    if errors:
        raise ValidationProblem(errors)
    return seq, page_size, descending


_FEED_PARAMETERS = [
    {
        "name": "seq",
        "in": "query",
        "required": False,
        "description": "The last sequenceNumber received (0, the default, for the start; with desc, the newest).",
        "schema": {"type": "integer", "format": "int64", "minimum": 0, "default": 0},
    },
    {
        "name": "pageSize",
        "in": "query",
        "required": False,
        "description": "Entries per page, 1-500 (clamped, never refused); default 500.",
        "schema": {"type": "integer", "format": "int32", "default": MAX_PAGE_SIZE},
    },
    {
        "name": "orderBy",
        "in": "query",
        "required": False,
        "description": "asc (0, the default) or desc (1), in any case.",
        "schema": {"type": "string", "pattern": r"^\s*([Aa][Ss][Cc]|[Dd][Ee][Ss][Cc]|0|1)\s*$", "default": "asc"},
    },
]


# ---------------------------------------------------------------- routes
# The feed is declared before /shipment/{id}, which would otherwise take "feed" for an id.


@router.get(
    "/shipment/feed",
    response_model=list[StatusFeedExt],
    response_model_exclude_none=True,
    summary="The status feed: one entry per order once it has ended, paged by sequenceNumber",
    description=(
        "Entries of the caller's orders that reached a final state (Order_Completed, Order_SendConditionNotMet, and "
        "Order_Cancelled, which Altinn does not write), each with a snapshot of the order's notifications then. "
        "Query (names in any case): seq (default 0; the last sequenceNumber received), pageSize (default and at "
        "most 500; clamped to 1-500), orderBy (asc, the default, or desc; 0 or 1). asc answers the entries after "
        "seq, oldest first; desc the entries before seq (all of them for seq 0), newest first. Every entry is "
        "served as soon as it is committed, and a reader paging by seq never skips one that commits late: varsel "
        "numbers entries in commit order (Altinn instead hides every entry for its first 2 seconds). Entries are "
        "kept for 90 days (dispatch.feed_retention_days)."
    ),
    responses=problem_responses(400, 401, 403, 415, 503),
    # Read from the query by hand (names in any case, as ASP.NET binds them): declared here for the documentation.
    openapi_extra={"parameters": _FEED_PARAMETERS},
)
async def status_feed(request: Request, caller: CallerDep) -> list[StatusFeedExt]:
    # Altinn's action declares JSON consumption: a GET with another Content-Type is 415 (after the token's check).
    content_type = request.headers.get("content-type")
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise Problem(415, detail="This endpoint takes no body other than JSON.")
    seq, page_size, descending = _feed_parameters(request)
    entries = await Shipments(request.app.state.varsel.database).feed(caller.org, seq, page_size, descending=descending)
    return [_feed_entry(entry) for entry in entries]


@router.get(
    "/shipment/{id}",
    response_model=NotificationDeliveryManifestExt,
    response_model_exclude_none=True,
    summary="A shipment's delivery manifest: the order's status and each notification's",
    description=(
        "Any order of the caller: a v1 order (type Notification), a chain's main order or one of its reminders. "
        "recipients lists every generated email and SMS with its Email_*/SMS_* status; a recipient that was "
        'reserved or could not be identified has destination "".'
    ),
    responses={**problem_responses(401, 403, 503), **_NOT_FOUND_RESPONSE},
)
async def shipment(request: Request, id: str) -> NotificationDeliveryManifestExt | Response:
    try:
        shipment_id = UUID(id)
    except ValueError:
        # Altinn's route takes only a GUID: anything else matches no route, and is a plain 404.
        raise Problem(404) from None
    caller = await authenticated(request)
    try:
        found = await Shipments(request.app.state.varsel.database).manifest(caller.org, shipment_id)
    except ShipmentNotFound:
        return shipment_not_found(request)
    return manifest_answer(found)
