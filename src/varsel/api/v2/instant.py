"""The v2 instant order API: POST /notifications/api/v1/future/orders/instant/sms, /instant/email and the deprecated
/instant (reference 2): one message to one address, handed to the provider while the caller waits.

The order of work: the token (401/403, before the body); the body (415, 413, the framework layer's 400); the rules
(400, all together); then varsel.orders.instant.InstantService, which stores the order under its key and a claim,
sends it through the provider's guard and records the outcome: 201 with the receipt and a Location, 200 with the
first receipt when the key was used before (on any of the three routes: one idempotency family), or 503 NOT-00004
when the provider cannot take it now, the key left free for a retry.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response

from varsel.api.v2.endpoints import altinn_problem, chain_url, parse_body
from varsel.api.v2.instant_models import (
    InstantEmailNotificationOrderRequestExt,
    InstantNotificationOrderRequestExt,
    InstantNotificationOrderResponseExt,
    InstantRequest,
    InstantSmsNotificationOrderRequestExt,
)
from varsel.api.v2.instant_validation import BODY_PARAMETER, InstantValidator, framework_errors
from varsel.api.v2.models import AltinnProblemDetails, NotificationOrderChainShipmentExt
from varsel.api.v2.validation import Errors
from varsel.auth.tokens import Caller
from varsel.http import json_body, json_request_body, problem_responses
from varsel.orders.drafts import InstantDraft
from varsel.orders.instant import InstantAnswer, InstantResult, InstantService
from varsel.problems import PROBLEM_MEDIA_TYPE, ValidationProblem

PREFIX = "/notifications/api/v1"

router = APIRouter(prefix=PREFIX, tags=["Orders (v2)"])

R = TypeVar("R", bound=InstantRequest)

_JSON = "application/json"
_UNAVAILABLE = "A temporary network failure occurred"


def _service(request: Request) -> InstantService:
    service: InstantService = request.app.state.varsel.instant
    return service


def _validator(request: Request) -> InstantValidator:
    settings = request.app.state.varsel.settings
    return InstantValidator(settings.limits, settings.defaults)


_SMS_BODY = json_body(InstantSmsNotificationOrderRequestExt)
_EMAIL_BODY = json_body(InstantEmailNotificationOrderRequestExt)
_DEPRECATED_BODY = json_body(InstantNotificationOrderRequestExt)


async def _parse(request: Request, read: Callable[[Request], Awaitable[R]]) -> R:
    return await parse_body(request, read, framework_errors, BODY_PARAMETER)


async def _order(request: Request, caller: Caller, draft: InstantDraft | Errors) -> Response:
    if isinstance(draft, dict):
        raise ValidationProblem(draft)
    result = await _service(request).order(caller.org, draft)
    if result.answer is InstantAnswer.UNAVAILABLE:
        response = altinn_problem(request, 503, "NOT-00004", _UNAVAILABLE)
        if result.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(result.retry_after)))
        return response
    body = _receipt(result).model_dump_json(by_alias=True, exclude_none=True)
    if result.answer is InstantAnswer.REPLAYED:
        return Response(body, status_code=200, media_type=_JSON)
    return Response(body, status_code=201, media_type=_JSON, headers={"Location": chain_url(request, result.chain_id)})


def _receipt(result: InstantResult) -> InstantNotificationOrderResponseExt:
    return InstantNotificationOrderResponseExt(
        notification_order_id=result.chain_id,
        notification=NotificationOrderChainShipmentExt(
            shipment_id=result.shipment.order_id, senders_reference=result.shipment.senders_reference
        ),
    )


# ---------------------------------------------------------------- OpenAPI


_SMS_EXAMPLE: dict[str, Any] = {
    "idempotencyId": "login-4711-otp-1",
    "sendersReference": "login-4711",
    "recipientSms": {
        "phoneNumber": "+4799999999",
        "timeToLiveInSeconds": 300,
        "smsSettings": {"sender": "Varsel", "body": "Your one-time code is 123456. It expires in 5 minutes."},
    },
}
_DEPRECATED_EXAMPLE: dict[str, Any] = {
    "idempotencyId": _SMS_EXAMPLE["idempotencyId"],
    "sendersReference": _SMS_EXAMPLE["sendersReference"],
    "recipient": {"recipientSms": copy.deepcopy(_SMS_EXAMPLE["recipientSms"])},
}
_EMAIL_EXAMPLE: dict[str, Any] = {
    "idempotencyId": "case-4711-ready",
    "sendersReference": "case-4711",
    "recipientEmail": {
        "emailAddress": "ola.nordmann@example.com",
        "emailSettings": {
            "subject": "Your document is ready",
            "body": "Your document is ready. Log in to read it.",
            "contentType": "Plain",
        },
    },
}

_RECEIPT_SCHEMA = {"$ref": f"#/components/schemas/{InstantNotificationOrderResponseExt.__name__}"}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {
        "description": "Stored and handed to the provider: the receipt. The shipment shows what the provider said.",
        "content": {_JSON: {"schema": _RECEIPT_SCHEMA}},
        "headers": {
            "Location": {
                "description": "GET /notifications/api/v1/orders/chain/{notificationOrderId}",
                "schema": {"type": "string", "format": "uri"},
            }
        },
    },
    200: {
        "description": "The idempotencyId was used before, on any instant route: the first receipt; nothing sent.",
        "content": {_JSON: {"schema": _RECEIPT_SCHEMA}},
    },
    **problem_responses(400, 401, 403, 413, 415),
    503: {
        "description": (
            "NOT-00004: the provider could not take the message now (unreachable, failing, or paused by varsel's "
            "guard), or a dependency is unavailable. Nothing was sent; the same idempotencyId may be retried, after "
            "Retry-After seconds when given."
        ),
        "headers": {"Retry-After": {"description": "Seconds to wait, when known.", "schema": {"type": "integer"}}},
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {
                    "anyOf": [
                        {"$ref": f"#/components/schemas/{AltinnProblemDetails.__name__}"},
                        {"$ref": "#/components/schemas/ProblemDetails"},
                    ]
                }
            }
        },
    },
}

_GUARANTEES = (
    "What instant means in varsel: the order and its notification are stored first, under the idempotencyId and a "
    "claim that keeps the background senders off it; the message is then handed to the provider through the "
    "provider's guard (its concurrency cap, rate limit, 429 pause and circuit breaker), with no transaction open, "
    "while the caller waits; the outcome is recorded before the answer. 201: the provider took the message, or "
    "refused it for good (an invalid number, say), which GET /future/shipment/{shipmentId} then shows. 503 "
    "NOT-00004: a transient failure (or an open breaker); nothing was sent and the idempotencyId stays retryable: "
    "a retry with it sends once. The same idempotencyId again, on any of the three instant routes, answers 200 "
    "with the first receipt and sends nothing, also when requests arrive together. A client that disconnects does "
    "not stop the send: once stored, the message is sent and its outcome recorded. Instant orders ignore the SMS "
    "daytime window; the shipment's type is Instant."
)


@router.post(
    "/future/orders/instant/sms",
    status_code=201,
    response_model=InstantNotificationOrderResponseExt,
    response_model_exclude_none=True,
    summary="Send one SMS now (an instant order)",
    description=(
        'Sends one SMS to one mobile number while the caller waits: a one-time code, a "your document is ready" '
        "message. timeToLiveInSeconds (60 to 172800) is how long the gateway may keep trying to deliver it.\n\n"
        + _GUARANTEES
    ),
    openapi_extra=json_request_body(InstantSmsNotificationOrderRequestExt, _SMS_EXAMPLE),
    responses=_RESPONSES,
)
async def instant_sms(request: Request) -> Response:
    caller: Caller = await request.app.state.varsel.authenticator.caller(request)
    body = await _parse(request, _SMS_BODY)
    return await _order(request, caller, _validator(request).sms(body))


@router.post(
    "/future/orders/instant/email",
    status_code=201,
    response_model=InstantNotificationOrderResponseExt,
    response_model_exclude_none=True,
    summary="Send one email now (an instant order)",
    description="Sends one email to one address while the caller waits.\n\n" + _GUARANTEES,
    openapi_extra=json_request_body(InstantEmailNotificationOrderRequestExt, _EMAIL_EXAMPLE),
    responses=_RESPONSES,
)
async def instant_email(request: Request) -> Response:
    caller: Caller = await request.app.state.varsel.authenticator.caller(request)
    body = await _parse(request, _EMAIL_BODY)
    return await _order(request, caller, _validator(request).email(body))


@router.post(
    "/future/orders/instant",
    status_code=201,
    response_model=InstantNotificationOrderResponseExt,
    response_model_exclude_none=True,
    deprecated=True,
    summary="Send one SMS now (deprecated: use /future/orders/instant/sms)",
    description=(
        "The first shape of instant SMS, kept for the clients that use it: the same as /future/orders/instant/sms "
        "with the SMS details one level deeper (recipient.recipientSms).\n\n" + _GUARANTEES
    ),
    openapi_extra=json_request_body(InstantNotificationOrderRequestExt, _DEPRECATED_EXAMPLE),
    responses=_RESPONSES,
)
async def instant_deprecated(request: Request) -> Response:
    caller: Caller = await request.app.state.varsel.authenticator.caller(request)
    body = await _parse(request, _DEPRECATED_BODY)
    return await _order(request, caller, _validator(request).deprecated(body))
