"""The v2 composed email API: POST /notifications/api/v1/future/orders/composed-email (reference 3).

One email to one address, with attachments the sender fetches from the caller's storage when the email goes out. It
is stored as a chain of one order of type Composed (channel Email, the attachments on the order), so it is read,
listed and cancelled as every other order, and flows through the ordinary pipeline.

The order of work (reference 3.3): the token and its scope (401/403; the composed scope only); the body (framework
layer) and the rules (400, all together); the creator (403); the key. A request whose idempotency key is taken answers
200 with the stored receipt whatever its body has become since, as the chain endpoint does: when the rules refuse
it, the key is looked up before refusing; otherwise its insert yields to the key's unique index.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from varsel.api.v2.composed_models import ComposedEmailRequestExt
from varsel.api.v2.composed_validation import (
    BODY_PARAMETER,
    ComposedValidator,
    composed_framework_errors,
)
from varsel.api.v2.endpoints import chain_url, parse_body, receipt_answer
from varsel.api.v2.models import NotificationOrderChainResponseExt
from varsel.auth.tokens import Caller
from varsel.hostnames import dns_name
from varsel.http import json_body, json_request_body, problem_responses
from varsel.orders.attachments import AttachmentHosts
from varsel.orders.chain_repository import ChainReceipt
from varsel.orders.chains import ChainService
from varsel.orders.vocabulary import IdempotencyFamily
from varsel.problems import Problem, ValidationProblem

PREFIX = "/notifications/api/v1"

router = APIRouter(prefix=PREFIX, tags=["Orders (v2)"])

_BODY = json_body(ComposedEmailRequestExt)
_JSON = "application/json"


def _validator(request: Request) -> ComposedValidator:
    """The app's validator, built on first use from its settings (as the chain validator is, with the attachment
    hosts besides)."""
    state = request.app.state
    validator: ComposedValidator | None = getattr(state, "composed_validator", None)
    if validator is None:
        varsel = state.varsel
        settings = varsel.settings
        condition_hosts = frozenset(dns_name(host) for host in settings.conditions.allowed_hosts)
        validator = ComposedValidator(
            varsel.clock,
            settings.limits,
            settings.defaults,
            condition_hosts,
            AttachmentHosts(settings.attachments.allowed_hosts),
        )
        state.composed_validator = validator
    return validator


async def _parse(request: Request) -> ComposedEmailRequestExt:
    return await parse_body(request, _BODY, composed_framework_errors, BODY_PARAMETER)


def _answer(receipt: ChainReceipt, status: int, headers: dict[str, str] | None = None) -> Response:
    body = receipt_answer(receipt).model_dump_json(by_alias=True, exclude_none=True)
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


_EXAMPLE: dict[str, Any] = {
    "idempotencyId": "case-4711-decision-letter",
    "sendersReference": "case-4711",
    "recipient": {
        "emailAddress": "ola.nordmann@example.com",
        "emailSettings": {
            "subject": "Your decision letter",
            "body": "The decision in your case is attached.",
            "contentType": "Plain",
            "attachments": [
                {
                    "filename": "decision.pdf",
                    "mimeType": "application/pdf",
                    "sasUrl": (
                        "https://caseletters.blob.core.windows.net/letters/4711/decision.pdf"
                        "?sv=2024-11-04&sr=b&sp=r&se=2030-01-01T00:00:00Z&sig=REDACTED"
                    ),
                }
            ],
        },
    },
}
_RECEIPT = {"description": "The order's receipt.", "content": {_JSON: {"schema": {
    "$ref": f"#/components/schemas/{NotificationOrderChainResponseExt.__name__}"}}}}  # fmt: skip
_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {
        **_RECEIPT,
        "description": "The order is created: its receipt (never with reminders).",
        "headers": {
            "Location": {
                "description": "GET /notifications/api/v1/orders/chain/{notificationOrderId}",
                "schema": {"type": "string", "format": "uri"},
            }
        },
    },
    200: {**_RECEIPT, "description": "The idempotencyId was used before: the first request's receipt."},
    **problem_responses(400, 401, 403, 413, 415, 503),
}
_RESPONSES[403] = {
    **_RESPONSES[403],
    "description": (
        "The token lacks the scope altinn:serviceowner/notifications.composedemail.create (notifications.create "
        "does not do, nor does a PlatformAccessToken alone), or names no service owner."
    ),
}


@router.post(
    "/future/orders/composed-email",
    status_code=201,
    response_model=NotificationOrderChainResponseExt,
    response_model_exclude_none=True,
    summary="Order an email with attachments (composed email)",
    description=(
        "One email to one address, with attachments fetched from the given URLs when the email is sent (never when "
        "it is ordered): Azure Blob SAS URLs (sr=b, sp with r, valid until 15 minutes after the send time), or "
        "URLs on a host the operator allows. Needs the scope altinn:serviceowner/notifications.composedemail.create. "
        "The order is an ordinary order of type Composed: GET /future/shipment/{shipmentId} and the v1 /orders "
        "endpoints read it. The same idempotencyId again answers 200 with the first request's receipt."
    ),
    openapi_extra=json_request_body(ComposedEmailRequestExt, _EXAMPLE),
    responses=_RESPONSES,
)
async def create_composed_email(request: Request) -> Response:
    varsel = request.app.state.varsel
    caller: Caller = await varsel.authenticator.scoped_caller(request, varsel.settings.auth.composed_email_scope)
    body = await _parse(request)
    draft = _validator(request).composed(body)
    # The creator after the rules, as the reference resolves it (3.3): without one, no key to look up either.
    if not caller.org:
        if isinstance(draft, dict):
            raise ValidationProblem(draft)
        raise Problem(
            403, "Forbidden", f"The token has no valid {varsel.settings.auth.org_claim} claim naming the service owner."
        )
    chains: ChainService = varsel.chains
    family = IdempotencyFamily.COMPOSED
    if isinstance(draft, dict):
        # A replay is answered whatever its body has become since (a send time now past): the key first.
        replayed = await chains.find(caller.org, family, body.idempotency_id or "")
        if replayed is not None:
            return _answer(replayed, 200)
        raise ValidationProblem(draft)
    registered = await chains.register(caller.org, draft, family)
    if not registered.created:
        return _answer(registered.receipt, 200)
    return _answer(registered.receipt, 201, {"Location": chain_url(request, registered.receipt.chain_id)})
