"""Status webhooks (/notifications/api/v1/webhooks): a service owner's subscriptions, their events and delivery log.

The same authentication as v1 order creation (the create scope, or a platform access token): a subscription belongs
to the service owner that made it, and another owner's is 404 everywhere. HTTP in and out only; the rules are in
varsel.webhooks.service.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from varsel.api.v1.endpoints import PREFIX, authenticated
from varsel.api_types import ApiModel, RequestDateTime, Text, UtcTimestamp
from varsel.auth.tokens import Caller
from varsel.http import base_url, json_body, problem_responses
from varsel.problems import ValidationProblem
from varsel.webhooks.outbox import EVENT_KINDS
from varsel.webhooks.repository import AttemptRow, EventRow, Subscription
from varsel.webhooks.service import SubscriptionChange, SubscriptionNotFound, WebhookSubscriptions

WEBHOOKS = f"{PREFIX}/webhooks"
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
_LONG_MAX = 2**63 - 1

router = APIRouter(prefix=WEBHOOKS, tags=["Status webhooks"])


# ---------------------------------------------------------------- the JSON shapes


class WebhookSubscriptionRequest(ApiModel):
    url: Text = Field(description="Where events are posted: https (http only for hosts the operator allow-lists).")
    events: list[Text] = Field(description=f"The event kinds to receive: any of {', '.join(EVENT_KINDS)}.")


class WebhookSubscriptionChange(ApiModel):
    url: Text | None = None
    events: list[Text] | None = None
    enabled: bool | None = Field(
        default=None,
        description="true enables a disabled subscription again (its pending events are delivered); false disables.",
    )


class WebhookSubscriptionReplacement(WebhookSubscriptionChange):
    url: Text
    events: list[Text]


class ReplayRequest(ApiModel):
    since: RequestDateTime | None = Field(default=None, description="Events of changes at or after this time.")
    from_sequence_number: int | None = Field(
        default=None, ge=0, le=_LONG_MAX, description="Events from this sequence number on."
    )


class WebhookSubscriptionExt(ApiModel):
    id: UUID
    url: str
    events: list[str]
    enabled: bool
    disabled_at: UtcTimestamp | None = None
    disabled_reason: str | None = None
    failing_since: UtcTimestamp | None = Field(
        default=None, description="The first failed delivery since the last success; absent while deliveries succeed."
    )
    created: UtcTimestamp
    updated: UtcTimestamp
    secret: str | None = Field(
        default=None, description="The signing secret: answered only when the subscription is made and on rotation."
    )
    previous_secret_expires: UtcTimestamp | None = Field(
        default=None, description="Until when the previous secret still signs beside the new one, after a rotation."
    )


class ReplayAccepted(ApiModel):
    replayed: int = Field(description="How many retained events are pending again.")


class WebhookEventExt(ApiModel):
    sequence_number: int
    id: UUID = Field(description="The webhook-id header of every attempt of this event.")
    type: str
    state: str = Field(description="pending or delivered.")
    attempts: int
    occurred: UtcTimestamp
    delivered_at: UtcTimestamp | None = None


class WebhookEventPage(ApiModel):
    events: list[WebhookEventExt]
    next: str | None = Field(default=None, description="The next page, absent on the last.")


class WebhookAttemptExt(ApiModel):
    id: int
    attempt: int = Field(description="The event's attempt number (1 for its first).")
    event_id: UUID
    sequence_number: int
    type: str
    at: UtcTimestamp
    status_code: int | None = Field(default=None, description="The receiver's HTTP status, absent when none came.")
    latency_ms: int | None = None
    error: str | None = Field(default=None, description="Why the attempt failed; absent when it was delivered.")


class WebhookAttemptPage(ApiModel):
    attempts: list[WebhookAttemptExt]
    next: str | None = None


_CREATE_BODY = json_body(WebhookSubscriptionRequest)
_CHANGE_BODY = json_body(WebhookSubscriptionChange)
_REPLACE_BODY = json_body(WebhookSubscriptionReplacement)
_REPLAY_BODY = json_body(ReplayRequest)


def _request_body(model: type[ApiModel], example: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a body read by json_body, its schema inline (the models are flat)."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}}


_EXAMPLE = {"url": "https://hooks.example.com/varsel", "events": ["order.completed", "notification.status_changed"]}
_READ = problem_responses(401, 403, 404, 503)
_TOO_MANY: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The service owner has as many subscriptions as it may "
        "(VARSEL_WEBHOOKS__MAX_SUBSCRIPTIONS_PER_OWNER).",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }
}
_WRITE = problem_responses(400, 401, 403, 404, 413, 415, 503)


# ---------------------------------------------------------------- answers


def _subscriptions(request: Request) -> WebhookSubscriptions:
    service: WebhookSubscriptions = request.app.state.varsel.webhooks
    return service


def _parse_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise SubscriptionNotFound() from None


def _answer(subscription: Subscription, *, with_secret: bool = False) -> WebhookSubscriptionExt:
    return WebhookSubscriptionExt(
        id=subscription.id,
        url=subscription.url,
        events=list(subscription.kinds),
        enabled=subscription.enabled,
        disabled_at=subscription.disabled_at,
        disabled_reason=subscription.disabled_reason,
        failing_since=subscription.failing_since,
        created=subscription.created,
        updated=subscription.updated,
        secret=subscription.secret if with_secret else None,
        previous_secret_expires=subscription.previous_secret_until if subscription.previous_secret else None,
    )


def _json(model: ApiModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        model.model_dump_json(by_alias=True, exclude_none=True),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _event(row: EventRow) -> WebhookEventExt:
    return WebhookEventExt(
        sequence_number=row.seq,
        id=row.id,
        type=row.kind,
        state=row.state,
        attempts=row.attempts,
        occurred=row.occurred,
        delivered_at=row.delivered_at,
    )


def _attempt(row: AttemptRow) -> WebhookAttemptExt:
    return WebhookAttemptExt(
        id=row.id,
        attempt=row.attempt,
        event_id=row.event_id,
        sequence_number=row.event_seq,
        type=row.kind,
        at=row.at,
        status_code=row.status_code,
        latency_ms=row.latency_ms,
        error=row.error,
    )


# ---------------------------------------------------------------- routes


@router.post(
    "",
    status_code=201,
    response_model=WebhookSubscriptionExt,
    response_model_exclude_none=True,
    summary="Subscribe an endpoint to status events",
    description=(
        "Answers the subscription with its signing secret (whsec_…), shown only here and on rotation. Deliveries "
        "are signed as Standard Webhooks says (webhook-id, webhook-timestamp, webhook-signature headers)."
    ),
    openapi_extra=_request_body(WebhookSubscriptionRequest, _EXAMPLE),
    responses={**problem_responses(400, 401, 403, 413, 415, 503), **_TOO_MANY},
)
async def create_subscription(request: Request) -> Response:
    caller = await authenticated(request)
    body = await _CREATE_BODY(request)
    made = await _subscriptions(request).create(caller.org, body.url, body.events)
    location = f"{base_url(request)}{WEBHOOKS}/{made.id}"
    return _json(_answer(made, with_secret=True), 201, {"Location": location})


@router.get(
    "",
    response_model=list[WebhookSubscriptionExt],
    response_model_exclude_none=True,
    summary="The caller's webhook subscriptions",
    responses=problem_responses(401, 403, 503),
)
async def list_subscriptions(request: Request) -> Response:
    caller = await authenticated(request)
    found = await _subscriptions(request).listed(caller.org)
    body = "[" + ",".join(_answer(s).model_dump_json(by_alias=True, exclude_none=True) for s in found) + "]"
    return Response(body, media_type="application/json")


@router.get(
    "/{id}",
    response_model=WebhookSubscriptionExt,
    response_model_exclude_none=True,
    summary="One webhook subscription",
    responses=_READ,
)
async def get_subscription(request: Request, id: str) -> Response:
    caller = await authenticated(request)
    return _json(_answer(await _subscriptions(request).get(caller.org, _parse_id(id))))


async def _change(request: Request, caller: Caller, id: str, body: WebhookSubscriptionChange) -> Response:
    change = SubscriptionChange(url=body.url, kinds=body.events, enabled=body.enabled)
    return _json(_answer(await _subscriptions(request).change(caller.org, _parse_id(id), change)))


@router.patch(
    "/{id}",
    response_model=WebhookSubscriptionExt,
    response_model_exclude_none=True,
    summary="Change a subscription's URL, events or enabled state",
    description="Only the properties given change. Enabling clears the disabled state and failingSince, and resumes "
    "delivery of the pending events.",
    openapi_extra=_request_body(WebhookSubscriptionChange, {"enabled": True}),
    responses=_WRITE,
)
async def patch_subscription(request: Request, id: str) -> Response:
    caller = await authenticated(request)
    return await _change(request, caller, id, await _CHANGE_BODY(request))


@router.put(
    "/{id}",
    response_model=WebhookSubscriptionExt,
    response_model_exclude_none=True,
    summary="Replace a subscription's URL and events (and enabled state, when given)",
    openapi_extra=_request_body(WebhookSubscriptionReplacement, _EXAMPLE),
    responses=_WRITE,
)
async def put_subscription(request: Request, id: str) -> Response:
    caller = await authenticated(request)
    return await _change(request, caller, id, await _REPLACE_BODY(request))


@router.delete("/{id}", status_code=204, summary="Delete a subscription with its events and delivery log",
               responses=_READ)  # fmt: skip
async def delete_subscription(request: Request, id: str) -> Response:
    caller = await authenticated(request)
    await _subscriptions(request).delete(caller.org, _parse_id(id))
    return Response(status_code=204)


@router.post(
    "/{id}/rotate-secret",
    response_model=WebhookSubscriptionExt,
    response_model_exclude_none=True,
    summary="A new signing secret; the previous one keeps signing beside it for 24 hours",
    description="Deliveries carry a signature by each secret in webhook-signature (space-separated) until "
    "previousSecretExpires (VARSEL_WEBHOOKS__SECRET_GRACE_HOURS).",
    responses=_READ,
)
async def rotate_secret(request: Request, id: str) -> Response:
    caller = await authenticated(request)
    return _json(_answer(await _subscriptions(request).rotate_secret(caller.org, _parse_id(id)), with_secret=True))


@router.post(
    "/{id}/replay",
    status_code=202,
    response_model=ReplayAccepted,
    summary="Deliver retained events again, from a time or a sequence number on",
    description="Exactly one of since (ISO 8601 with a UTC offset) and fromSequenceNumber. The events keep their ids "
    "(webhook-id) and are delivered again in sequence order. Delivered events are retained for 7 days "
    "(VARSEL_WEBHOOKS__RETENTION_DAYS).",
    openapi_extra=_request_body(ReplayRequest, {"since": "2026-01-01T00:00:00Z"}),
    responses=_WRITE,
)
async def replay(request: Request, id: str) -> Response:
    caller = await authenticated(request)
    subscription_id = _parse_id(id)
    body = await _REPLAY_BODY(request)
    if (body.since is None) == (body.from_sequence_number is None):
        raise ValidationProblem({"$": ["Give exactly one of since and fromSequenceNumber."]})
    since = None
    if body.since is not None:
        if body.since.tzinfo is None or body.since.utcoffset() is None:
            raise ValidationProblem({"Since": ["The time must have a UTC offset (Z or +01:00, say)."]})
        try:
            # Converted here: a time at the calendar's edge (0001-01-01T00:00:00+01:00) has no UTC equivalent, and
            # would otherwise overflow where the database layer converts it.
            since = body.since.astimezone(UTC)
        except OverflowError:
            raise ValidationProblem({"Since": ["The time is out of range in UTC."]}) from None
    count = await _subscriptions(request).replay(
        caller.org, subscription_id, since=since, from_seq=body.from_sequence_number
    )
    return _json(ReplayAccepted(replayed=count), 202)


PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE, description="1-500; default 100.")]


@router.get(
    "/{id}/events",
    response_model=WebhookEventPage,
    response_model_exclude_none=True,
    summary="The subscription's retained events, in sequence order",
    responses=_READ,
)
async def events(
    request: Request,
    id: str,
    after: Annotated[int, Query(ge=0, le=_LONG_MAX, description="The last sequenceNumber read (default 0).")] = 0,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
) -> Response:
    caller = await authenticated(request)
    subscription_id = _parse_id(id)
    rows = await _subscriptions(request).events(caller.org, subscription_id, after, page_size)
    following = None
    if len(rows) == page_size:
        following = f"{base_url(request)}{WEBHOOKS}/{subscription_id}/events?after={rows[-1].seq}&pageSize={page_size}"
    return _json(WebhookEventPage(events=[_event(row) for row in rows], next=following))


@router.get(
    "/{id}/attempts",
    response_model=WebhookAttemptPage,
    response_model_exclude_none=True,
    summary="The delivery log: every attempt, newest first",
    responses=_READ,
)
async def attempts(
    request: Request,
    id: str,
    before: Annotated[int | None, Query(ge=1, le=_LONG_MAX, description="The last attempt id read.")] = None,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
) -> Response:
    caller = await authenticated(request)
    subscription_id = _parse_id(id)
    rows = await _subscriptions(request).attempts(caller.org, [subscription_id], before, page_size)
    following = None
    if len(rows) == page_size:
        following = (
            f"{base_url(request)}{WEBHOOKS}/{subscription_id}/attempts?before={rows[-1].id}&pageSize={page_size}"
        )
    return _json(WebhookAttemptPage(attempts=[_attempt(row) for row in rows], next=following))
