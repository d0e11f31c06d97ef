"""The v2 order API: POST /notifications/api/v1/future/orders (an order chain) and the chain's receipt at the
Location it answers, GET /notifications/api/v1/orders/chain/{id} (a route Altinn names but does not serve).

The order of work: the token; the body (framework layer); the rules (400, all together); the look-ups, outside any
transaction (422 NOT-00001, nothing stored); one transaction for the chain and its orders (201). A request whose
idempotency key is taken answers 200 with the stored chain's receipt whatever its body (better than the reference,
which answers 400 to a retry whose send time has passed since, and 500 to concurrent first requests): when the
rules or the look-ups refuse it, the key is looked up before refusing; otherwise its insert yields to the key's
unique index and the request answers the chain that holds it. So a first request costs no extra read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from varsel.api.v2.models import (
    AltinnProblemDetails,
    NotificationOrderChainReceiptExt,
    NotificationOrderChainRequestExt,
    NotificationOrderChainResponseExt,
    NotificationOrderChainShipmentExt,
    OrderChainExt,
    OrderChainMainShipmentExt,
    OrderChainShipmentExt,
)
from varsel.api.v2.shipments import manifest_answer
from varsel.api.v2.validation import (
    BODY_PARAMETER,
    ChainValidator,
    Errors,
    conversion_errors,
    framework_errors,
)
from varsel.auth.tokens import Caller
from varsel.http import base_url, json_body, json_request_body, problem_responses
from varsel.orders.chain_repository import ChainReceipt, Shipment
from varsel.orders.chains import ChainService, MissingContactInformation
from varsel.orders.vocabulary import IdempotencyFamily
from varsel.problems import PROBLEM_MEDIA_TYPE, Problem, ValidationProblem, trace_id
from varsel.shipments.repository import Shipment as StoredShipment

PREFIX = "/notifications/api/v1"

router = APIRouter(prefix=PREFIX, tags=["Orders (v2)"])

_ORDER_BODY = json_body(NotificationOrderChainRequestExt)
_JSON = "application/json"


def _chains(request: Request) -> ChainService:
    chains: ChainService = request.app.state.varsel.chains
    return chains


def _validator(request: Request) -> ChainValidator:
    validator: ChainValidator = request.app.state.varsel.chain_validator
    return validator


def chain_url(request: Request, chain_id: UUID) -> str:
    return f"{base_url(request)}{PREFIX}/orders/chain/{chain_id}"


def receipt_answer(receipt: ChainReceipt) -> NotificationOrderChainResponseExt:
    reminders = [
        NotificationOrderChainShipmentExt(shipment_id=r.order_id, senders_reference=r.senders_reference)
        for r in receipt.reminders
    ]
    return NotificationOrderChainResponseExt(
        notification_order_id=receipt.chain_id,
        notification=NotificationOrderChainReceiptExt(
            shipment_id=receipt.main.order_id,
            senders_reference=receipt.main.senders_reference,
            reminders=reminders or None,
        ),
    )


def _answer(receipt: ChainReceipt, status: int, headers: dict[str, str] | None = None) -> Response:
    body = receipt_answer(receipt).model_dump_json(by_alias=True, exclude_none=True)
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def altinn_problem(request: Request, status: int, code: str, title: str) -> Response:
    """An AltinnProblemDetails answer (reference 0.6 b): no detail; the reason phrase as statusDescription."""
    body = {
        "type": f"urn:altinn:error:{code}",
        "title": title,
        "status": status,
        "code": code,
        "traceId": trace_id(request),
        "statusDescription": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "",
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE)


B = TypeVar("B")


async def parse_body(
    request: Request,
    read: Callable[[Request], Awaitable[B]],
    framework: Callable[[B], Errors],
    parameter: str = BODY_PARAMETER,
) -> B:
    """A v2 order body through ASP.NET's layer as the reference answers it: conversion failures keyed by JSON path
    (with `The <parameter> field is required.`), then `framework`'s required-member checks; 400 for either."""
    try:
        body = await read(request)
    except ValidationProblem as problem:
        errors = {key: list(messages) for key, messages in problem.errors.items()}
        raise ValidationProblem(conversion_errors(errors, parameter)) from None
    errors = framework(body)
    if errors:
        raise ValidationProblem(errors)
    return body


async def _parse(request: Request) -> NotificationOrderChainRequestExt:
    return await parse_body(request, _ORDER_BODY, framework_errors)


_MISSING_CONTACT = "Missing contact information for recipient(s)"
_TEXT = "Your case has been updated. Log in to read the decision."
_CHAIN_EXAMPLE: dict[str, Any] = {
    "idempotencyId": "case-4711-decision",
    "sendersReference": "case-4711",
    "recipient": {
        "recipientPerson": {
            "nationalIdentityNumber": "01017012345",
            "channelSchema": "EmailPreferred",
            "emailSettings": {"subject": "Your case has been updated", "body": _TEXT},
            "smsSettings": {"body": _TEXT},
        }
    },
    "reminders": [
        {
            "delayDays": 7,
            "sendersReference": "case-4711-reminder",
            "recipient": {
                "recipientEmail": {
                    "emailAddress": "ola.nordmann@example.com",
                    "emailSettings": {"subject": "Reminder: your case has been updated", "body": _TEXT},
                }
            },
        }
    ],
}
_RECEIPT = {"description": "The chain's receipt.", "content": {_JSON: {"schema": {
    "$ref": "#/components/schemas/NotificationOrderChainResponseExt"}}}}  # fmt: skip
_ALTINN_PROBLEM = {"$ref": f"#/components/schemas/{AltinnProblemDetails.__name__}"}
_CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {
        **_RECEIPT,
        "description": "The chain is created: its receipt.",
        "headers": {
            "Location": {
                "description": "GET /notifications/api/v1/orders/chain/{notificationOrderId}",
                "schema": {"type": "string", "format": "uri"},
            }
        },
    },
    200: {**_RECEIPT, "description": "The idempotencyId was used before: the first request's receipt."},
    **problem_responses(400, 401, 403, 413, 415, 503),
    422: {
        "description": "A looked-up recipient has no contact details for the channel (NOT-00001); nothing stored.",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _ALTINN_PROBLEM}},
    },
}


@router.post(
    "/future/orders",
    status_code=201,
    response_model=NotificationOrderChainResponseExt,
    response_model_exclude_none=True,
    summary="Order a notification with reminders (an order chain)",
    description=(
        "Creates the main notification and each reminder as ordinary orders (readable, listable and cancellable "
        "through the v1 /orders endpoints by their shipmentId). The same idempotencyId again answers 200 with the "
        "first request's receipt, also after its send time has passed and also for concurrent first requests."
    ),
    openapi_extra=json_request_body(NotificationOrderChainRequestExt, _CHAIN_EXAMPLE),
    responses=_CREATE_RESPONSES,
)
async def create_chain(request: Request) -> Response:
    caller: Caller = await request.app.state.varsel.authenticator.caller(request)
    body = await _parse(request)
    chains = _chains(request)
    family = IdempotencyFamily.ORDERS
    key = body.idempotency_id or ""
    draft = _validator(request).chain(body)
    if isinstance(draft, dict):
        # A replay is answered whatever its body has become since (a send time now past): the key first.
        replayed = await chains.find(caller.org, family, key)
        if replayed is not None:
            return _answer(replayed, 200)
        raise ValidationProblem(draft)
    try:
        # A replay of a valid body finds its key taken when it is stored, and answers the stored chain.
        registered = await chains.register(caller.org, draft, family)
    except MissingContactInformation:
        replayed = await chains.find(caller.org, family, key)
        if replayed is not None:
            return _answer(replayed, 200)
        return altinn_problem(request, 422, "NOT-00001", _MISSING_CONTACT)
    if not registered.created:
        return _answer(registered.receipt, 200)
    return _answer(registered.receipt, 201, {"Location": chain_url(request, registered.receipt.chain_id)})


def _with_manifest(shipment: Shipment, manifests: dict[UUID, StoredShipment]) -> OrderChainShipmentExt:
    return OrderChainShipmentExt(
        shipment_id=shipment.order_id,
        senders_reference=shipment.senders_reference,
        manifest=manifest_answer(manifests[shipment.order_id]),
    )


@router.get(
    "/orders/chain/{id}",
    response_model=OrderChainExt,
    response_model_exclude_none=True,
    summary="Get an order chain: its receipt, each shipment with its delivery manifest",
    description="The Location of POST /future/orders' 201 (a route Altinn names but does not serve).",
    responses=problem_responses(401, 403, 404, 503),
)
async def get_chain(request: Request, id: str) -> Response:
    caller: Caller = await request.app.state.varsel.authenticator.caller(request)
    found = None
    try:
        chain_id = UUID(id)
    except ValueError:
        chain_id = None
    if chain_id is not None:
        found = await _chains(request).get_with_manifests(caller.org, chain_id)
    if found is None:
        raise Problem(404, "Order chain not found", "No order chain with that id exists for this service owner.")
    receipt, manifests = found
    answer = OrderChainExt(
        notification_order_id=receipt.chain_id,
        notification=OrderChainMainShipmentExt(
            shipment_id=receipt.main.order_id,
            senders_reference=receipt.main.senders_reference,
            manifest=manifest_answer(manifests[receipt.main.order_id]),
            reminders=[_with_manifest(r, manifests) for r in receipt.reminders] or None,
        ),
    )
    return Response(answer.model_dump_json(by_alias=True, exclude_none=True), media_type=_JSON)
