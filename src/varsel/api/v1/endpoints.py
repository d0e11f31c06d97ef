"""The v1 order API (/notifications/api/v1): translates HTTP to order use cases and back, nothing more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from varsel.api.v1.models import (
    ChannelSummary,
    EmailNotificationOrderRequest,
    EmailTemplate,
    FallbackFor,
    NotificationOrder,
    NotificationOrderList,
    NotificationOrderRequest,
    NotificationOrderWithStatus,
    NotificationsStatusSummary,
    NotificationSummary,
    NotificationWithResult,
    OrderAccepted,
    OrderLinks,
    OrderPreview,
    PreviewNotification,
    PreviewRecipient,
    PreviewUnreached,
    PreviewWarning,
    ProcessingStatus,
    Recipient,
    RecipientLookupResult,
    SendStatus,
    SmsNotificationOrderRequest,
    SmsTemplate,
    SummaryLinks,
)
from varsel.api.v1.validation import OrderValidator
from varsel.auth.tokens import Caller
from varsel.http import base_url, json_body, json_request_body, problem_responses
from varsel.notifications.repository import NotificationRow
from varsel.notifications.statuses import (
    EMAIL_STATUS_DESCRIPTIONS,
    EMAIL_SUCCESS,
    SMS_STATUS_DESCRIPTIONS,
    SMS_SUCCESS,
    EmailStatus,
    SmsStatus,
    notification_status_description,
    order_status_description,
    v1_order_status,
)
from varsel.orders.drafts import OrderDraft, RecipientSpec
from varsel.orders.repository import StoredOrder
from varsel.orders.service import OrderNotFound, OrderStatusView
from varsel.orders.vocabulary import EmailContentType
from varsel.problems import Problem, ValidationProblem
from varsel.recipients.keywords import NAME, NUMBER, render, render_subject
from varsel.recipients.lookup import Address, LookupSummary, Medium, Outcome, Reason, ResolvedRecipient

PREFIX = "/notifications/api/v1"

router = APIRouter(prefix=PREFIX, tags=["Orders (v1)"])


async def authenticated(request: Request) -> Caller:
    caller: Caller = await request.app.state.varsel.authenticator.caller(request)
    return caller


CallerDep = Annotated[Caller, Depends(authenticated)]


def _order_url(request: Request, order_id: UUID) -> str:
    return f"{base_url(request)}{PREFIX}/orders/{order_id}"


def _parse_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise OrderNotFound() from None


# The three ways to order, on the hot path of intake: they take the bare request and answer a ready Response, so
# that FastAPI neither solves dependencies nor validates and serialises the answer again (together about a tenth of
# the API's CPU per order). Their parameters and answer are declared to OpenAPI in the decorators as before. Each
# checks the token first, then the body: a caller without a valid token learns nothing about its request.
_ORDER_BODY = json_body(NotificationOrderRequest)
_EMAIL_ORDER_BODY = json_body(EmailNotificationOrderRequest)
_SMS_ORDER_BODY = json_body(SmsNotificationOrderRequest)


async def _accept(request: Request, caller: Caller, draft: OrderDraft) -> Response:
    order_id, lookup = await request.app.state.varsel.orders.register(caller.org, draft)
    accepted = OrderAccepted(order_id=order_id, recipient_lookup=_lookup_answer(lookup))
    return Response(
        accepted.model_dump_json(by_alias=True, exclude_none=True),
        status_code=202,
        media_type="application/json",
        headers={"Location": _order_url(request, order_id)},
    )


def _lookup_answer(summary: LookupSummary | None) -> RecipientLookupResult | None:
    if summary is None:
        return None
    return RecipientLookupResult(
        status=summary.status, is_reserved=summary.is_reserved, missing_contact=summary.missing_contact
    )


def _validator(request: Request) -> OrderValidator:
    validator: OrderValidator = request.app.state.varsel.validator
    return validator


def _order_ref(suffix: str, method: str) -> str:
    """An OpenAPI operationRef to the operation at /orders/{id}<suffix>."""
    path = f"{PREFIX}/orders/{{id}}{suffix}".replace("~", "~0").replace("/", "~1")
    return f"#/paths/{path}/{method}"


# The accepted order's id is what the order's own endpoints take: documented as OpenAPI links, which clients and
# stateful API testers follow.
_ORDER_LINKS = {
    name: {"operationRef": _order_ref(suffix, method), "parameters": {"id": "$response.body#/orderId"}}
    for name, suffix, method in [
        ("GetOrder", "", "get"),
        ("GetOrderStatus", "/status", "get"),
        ("GetEmailNotifications", "/notifications/email", "get"),
        ("GetSmsNotifications", "/notifications/sms", "get"),
        ("CancelOrder", "/cancel", "put"),
    ]
}
_CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "The order is accepted.",
        "headers": {"Location": {"description": "The order's URL.", "schema": {"type": "string", "format": "uri"}}},
        "links": _ORDER_LINKS,
    },
    **problem_responses(400, 401, 403, 413, 415, 503),
}

# Example requests for the documentation: each is accepted as it stands (no send time: the order is sent now).
_TEXT = "Your case has been updated. Log in to read the decision."
_ORDER_EXAMPLE = {
    "sendersReference": "case-4711",
    "notificationChannel": "EmailPreferred",
    "emailTemplate": {"subject": "Your case has been updated", "body": _TEXT},
    "smsTemplate": {"body": _TEXT},
    "recipients": [{"emailAddress": "ola.nordmann@example.com"}, {"mobileNumber": "+4799999999"}],
}
_EMAIL_ORDER_EXAMPLE = {
    "sendersReference": "case-4711",
    "subject": "Your case has been updated",
    "body": _TEXT,
    "recipients": [{"emailAddress": "ola.nordmann@example.com"}],
}
_SMS_ORDER_EXAMPLE = {"sendersReference": "case-4711", "body": _TEXT, "recipients": [{"mobileNumber": "+4799999999"}]}
_READ_RESPONSES = problem_responses(401, 403, 404, 503)


@router.post(
    "/orders",
    status_code=202,
    response_model=OrderAccepted,
    response_model_exclude_none=True,
    summary="Order notifications on any channel",
    openapi_extra=json_request_body(NotificationOrderRequest, _ORDER_EXAMPLE),
    responses=_CREATE_RESPONSES,
)
async def create_order(request: Request) -> Response:
    caller = await authenticated(request)
    return await _accept(request, caller, _validator(request).order(await _ORDER_BODY(request)))


@router.post(
    "/orders/email",
    status_code=202,
    response_model=OrderAccepted,
    response_model_exclude_none=True,
    summary="Order email notifications",
    openapi_extra=json_request_body(EmailNotificationOrderRequest, _EMAIL_ORDER_EXAMPLE),
    responses=_CREATE_RESPONSES,
)
async def create_email_order(request: Request) -> Response:
    caller = await authenticated(request)
    return await _accept(request, caller, _validator(request).email_order(await _EMAIL_ORDER_BODY(request)))


@router.post(
    "/orders/sms",
    status_code=202,
    response_model=OrderAccepted,
    response_model_exclude_none=True,
    summary="Order SMS notifications",
    openapi_extra=json_request_body(SmsNotificationOrderRequest, _SMS_ORDER_EXAMPLE),
    responses=_CREATE_RESPONSES,
)
async def create_sms_order(request: Request) -> Response:
    caller = await authenticated(request)
    return await _accept(request, caller, _validator(request).sms_order(await _SMS_ORDER_BODY(request)))


def _recipient_of(spec: RecipientSpec) -> Recipient:
    return Recipient(
        email_address=spec.email_address,
        mobile_number=spec.mobile_number,
        national_identity_number=spec.national_identity_number,
        organization_number=spec.organization_number,
    )


def _order_view(request: Request, order: StoredOrder) -> NotificationOrder:
    url = _order_url(request, order.id)
    email = order.email_template
    sms = order.sms_template
    return NotificationOrder(
        id=order.id,
        creator=order.creator,
        senders_reference=order.senders_reference,
        requested_send_time=order.requested_send_time,
        created=order.created,
        notification_channel=order.channel,
        ignore_reservation=order.ignore_reservation,
        resource_id=order.resource_id,
        resource_action=order.resource_action,
        condition_endpoint=order.condition_endpoint,
        recipients=[_recipient_of(r) for r in order.recipients],
        email_template=(
            EmailTemplate(
                from_address=email.from_address, subject=email.subject, body=email.body, content_type=email.content_type
            )
            if email
            else None
        ),
        sms_template=SmsTemplate(sender_number=sms.sender, body=sms.body) if sms else None,
        links=OrderLinks(self=url, status=f"{url}/status"),
    )


_OUTCOMES = {
    Outcome.ADDRESSED: "Addressed",
    Outcome.FOUND: "Found",
    Outcome.RESERVED: "Reserved",
    Outcome.MISSING_CONTACT: "MissingContact",
}
_REASONS = {
    Reason.RESERVED: "Reserved",
    Reason.NOT_FOUND: "NotFound",
    Reason.NO_CONTACT: "NoContact",
    Reason.NOT_AUTHORISED: "NotAuthorised",
    Reason.INVALID_ADDRESS: "InvalidAddress",
    Reason.DUPLICATE: "Duplicate",
}


def _preview_notification(draft: OrderDraft, resolved: ResolvedRecipient, address: Address) -> PreviewNotification:
    if address.medium is Medium.EMAIL and draft.email_template is not None:
        template = draft.email_template
        html_body = template.content_type is EmailContentType.HTML
        return PreviewNotification(
            channel="Email",
            address=address.address,
            user_id=address.user_id,
            subject=render_subject(template.subject, name=resolved.name, number=resolved.number),
            body=render(template.body, name=resolved.name, number=resolved.number, html_body=html_body),
        )
    sms_body = draft.sms_template.body if draft.sms_template is not None else ""
    return PreviewNotification(
        channel="Sms",
        address=address.address,
        user_id=address.user_id,
        body=render(sms_body, name=resolved.name, number=resolved.number),
    )


# Why a keyword renders empty, for the warning's message.
_EMPTY_BECAUSE = {
    NAME: "a name comes only from the registries (a national identity or organisation number); a recipient given by "
    "email address or mobile number has none, and the text reads as if the name were left out",
    NUMBER: "only an organisation recipient has a number (its organisation number)",
}


def _template_warnings(draft: OrderDraft, resolved: Sequence[ResolvedRecipient]) -> list[PreviewWarning]:
    """Each keyword a template uses that renders empty for some recipient who would get that template: the preview
    says so before the order is placed ("Hei , …"), for the sender to change the text or the recipients."""
    fields: list[tuple[str, str, Medium]] = []
    if draft.email_template is not None:
        fields += [
            ("EmailTemplate.Subject", draft.email_template.subject, Medium.EMAIL),
            ("EmailTemplate.Body", draft.email_template.body, Medium.EMAIL),
        ]
    if draft.sms_template is not None:
        fields.append(("SmsTemplate.Body", draft.sms_template.body, Medium.SMS))
    warnings: list[PreviewWarning] = []
    for field, text, medium in fields:
        for keyword in (NAME, NUMBER):
            if keyword not in text:
                continue
            getting = [i for i, r in enumerate(resolved) if any(a.medium is medium for a in r.addresses)]
            empty = [i for i in getting if not (resolved[i].name if keyword == NAME else resolved[i].number)]
            if not empty:
                continue
            named = ", ".join(f"Recipients[{i}]" for i in empty[:5]) + (
                f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            )
            message = (
                f"{keyword} in {field} renders empty for {len(empty)} of the {len(getting)} recipients who would get "
                f"it ({named}): {_EMPTY_BECAUSE[keyword]}."
            )
            warnings.append(PreviewWarning(field=field, keyword=keyword, recipients=empty, message=message))
    return warnings


@router.post(
    "/orders/preview",
    response_model=OrderPreview,
    response_model_exclude_none=True,
    summary="Preview who would receive what, without placing the order",
    description=(
        "Takes the same body as POST /orders and answers, without storing anything, which notifications the order "
        "would create now (channel, address, rendered content) and, for everyone it would not reach, why. "
        "Registries may change before the order's send time; the real look-up happens then."
    ),
    openapi_extra=json_request_body(NotificationOrderRequest, _ORDER_EXAMPLE),
    responses=problem_responses(400, 401, 403, 413, 415, 503),
)
async def preview_order(
    request: Request,
    caller: CallerDep,
    body: Annotated[NotificationOrderRequest, Depends(json_body(NotificationOrderRequest))],
) -> OrderPreview:
    varsel = request.app.state.varsel
    preview_scope = varsel.settings.auth.preview_scope
    if preview_scope not in caller.scopes:
        raise Problem(
            403, "Forbidden", f"The preview shows registry contact details; it needs the scope {preview_scope}."
        )
    draft: OrderDraft = varsel.validator.order(body)
    lookup = await varsel.orders.look_up(draft)
    warnings = _template_warnings(draft, lookup.recipients)
    return OrderPreview(
        notification_channel=draft.channel,
        requested_send_time=draft.requested_send_time,
        recipient_lookup=_lookup_answer(lookup.summary()),
        recipients=[
            PreviewRecipient(
                recipient=_recipient_of(resolved.recipient),
                outcome=_OUTCOMES[resolved.outcome],
                name=resolved.name,
                notifications=[_preview_notification(draft, resolved, a) for a in resolved.addresses],
                unreached=[
                    PreviewUnreached(reason=_REASONS[u.reason], detail=u.detail, address=u.address, user_id=u.user_id)
                    for u in resolved.unreached
                ],
            )
            for resolved in lookup.recipients
        ],
        warnings=warnings or None,
    )


@router.get(
    "/orders",
    response_model=NotificationOrderList,
    response_model_exclude_none=True,
    summary="Find the caller's orders by sender's reference",
    responses=problem_responses(400, 401, 403, 503),
)
async def find_orders(
    request: Request,
    caller: CallerDep,
    senders_reference: Annotated[str | None, Query(alias="sendersReference")] = None,
) -> NotificationOrderList:
    if senders_reference is None:
        raise ValidationProblem({"SendersReference": ["The sendersReference query parameter is required."]})
    if "\x00" in senders_reference:
        # No stored reference holds one (PostgreSQL could not even compare it): say so, not that it is missing.
        raise ValidationProblem({"SendersReference": ["Value error, must not contain NUL characters."]})
    varsel = request.app.state.varsel
    found = await varsel.orders.find(caller.org, senders_reference, varsel.settings.limits.max_orders_listed)
    return NotificationOrderList(count=len(found), orders=[_order_view(request, order) for order in found])


@router.get(
    "/orders/{id}",
    response_model=NotificationOrder,
    response_model_exclude_none=True,
    summary="Get an order as it was registered",
    responses=_READ_RESPONSES,
)
async def get_order(request: Request, caller: CallerDep, id: str) -> NotificationOrder:
    order = await request.app.state.varsel.orders.get(caller.org, _parse_id(id))
    return _order_view(request, order)


def _status_view(request: Request, view: OrderStatusView) -> NotificationOrderWithStatus:
    order = view.order
    url = _order_url(request, order.id)
    shown = v1_order_status(order.status)
    varsel = request.app.state.varsel
    summary = NotificationsStatusSummary(
        email=(
            ChannelSummary(
                links=SummaryLinks(self=f"{url}/notifications/email"),
                generated=view.email.generated,
                succeeded=view.email.succeeded,
            )
            if order.channel.uses_email
            else None
        ),
        sms=(
            ChannelSummary(
                links=SummaryLinks(self=f"{url}/notifications/sms"),
                generated=view.sms.generated,
                succeeded=view.sms.succeeded,
            )
            if order.channel.uses_sms
            else None
        ),
    )
    return NotificationOrderWithStatus(
        id=order.id,
        senders_reference=order.senders_reference,
        requested_send_time=order.requested_send_time,
        creator=order.creator,
        created=order.created,
        notification_channel=order.channel,
        ignore_reservation=order.ignore_reservation,
        resource_id=order.resource_id,
        resource_action=order.resource_action,
        condition_endpoint=order.condition_endpoint,
        processing_status=ProcessingStatus(
            status=shown.value,
            description=order_status_description(
                shown,
                now=varsel.clock.now(),
                process_after=order.process_after,
                processing_attempts=order.processing_attempts,
                condition_endpoint=order.condition_endpoint,
                condition_failure_policy=varsel.settings.dispatch.condition_failure_policy,
            ),
            last_update=order.status_changed,
        ),
        notifications_status_summary=summary,
    )


@router.get(
    "/orders/{id}/status",
    response_model=NotificationOrderWithStatus,
    response_model_exclude_none=True,
    summary="Get an order with its processing status and notification counts",
    responses=_READ_RESPONSES,
)
async def get_order_status(request: Request, caller: CallerDep, id: str) -> NotificationOrderWithStatus:
    view = await request.app.state.varsel.orders.status(caller.org, _parse_id(id))
    return _status_view(request, view)


@router.put(
    "/orders/{id}/cancel",
    response_model=NotificationOrderWithStatus,
    response_model_exclude_none=True,
    summary="Cancel an order that has not been processed yet",
    description=(
        "Only a Registered order whose requested send time is more than 5 minutes away can be cancelled. "
        "Cancelling a cancelled order answers 200 again."
    ),
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def cancel_order(request: Request, caller: CallerDep, id: str) -> NotificationOrderWithStatus:
    view = await request.app.state.varsel.orders.cancel(caller.org, _parse_id(id))
    return _status_view(request, view)


def _recipient(row: NotificationRow) -> Recipient:
    return Recipient(
        email_address=row.email_address,
        mobile_number=row.mobile_number,
        national_identity_number=row.national_identity_number,
        organization_number=row.organization_number,
        is_reserved=row.is_reserved,
    )


@dataclass(frozen=True)
class _Channel:
    """What differs between the email and the SMS notification lists."""

    medium: Medium
    statuses: type[EmailStatus] | type[SmsStatus]
    descriptions: Mapping[Any, str]
    success: frozenset[Any]


_EMAIL = _Channel(Medium.EMAIL, EmailStatus, EMAIL_STATUS_DESCRIPTIONS, EMAIL_SUCCESS)
_SMS = _Channel(Medium.SMS, SmsStatus, SMS_STATUS_DESCRIPTIONS, SMS_SUCCESS)


def _fallback_for(row: NotificationRow, channel: _Channel) -> FallbackFor | None:
    """Receipt-driven fallback: the notification this one was sent for (on the other channel), and why."""
    if row.fallback_of is None:
        return None
    first = "Sms" if channel.medium is Medium.EMAIL else "Email"
    return FallbackFor(notification_id=row.fallback_of, channel=first, reason=row.fallback_reason or "")


async def _notification_summary(
    request: Request, caller: Caller, raw_id: str, channel: _Channel
) -> NotificationSummary:
    varsel = request.app.state.varsel
    order, rows = await varsel.orders.notifications(caller.org, _parse_id(raw_id), channel.medium)
    now = varsel.clock.now()
    # The window the workers hold this order's SMS for (v1 orders are all Daytime).
    window = None if order.sms_sending_time_policy == "Anytime" else varsel.settings.dispatch.sms_daytime
    items = []
    for row in rows:
        status = channel.statuses(row.status)
        description = notification_status_description(
            channel.descriptions, status, now=now, send_after=row.send_after, attempts=row.attempts, sms_window=window
        )
        items.append(
            NotificationWithResult(
                id=row.id,
                succeeded=status in channel.success,
                recipient=_recipient(row),
                send_status=SendStatus(status=status.value, description=description, last_update=row.status_changed),
                fallback_for=_fallback_for(row, channel),
            )
        )
    return NotificationSummary(
        order_id=order.id,
        senders_reference=order.senders_reference,
        generated=len(items),
        succeeded=sum(1 for item in items if item.succeeded),
        notifications=items,
    )


@router.get(
    "/orders/{id}/notifications/email",
    response_model=NotificationSummary,
    response_model_exclude_none=True,
    summary="List the email notifications of an order with their send status",
    responses=_READ_RESPONSES,
)
async def email_notifications(request: Request, caller: CallerDep, id: str) -> NotificationSummary:
    return await _notification_summary(request, caller, id, _EMAIL)


@router.get(
    "/orders/{id}/notifications/sms",
    response_model=NotificationSummary,
    response_model_exclude_none=True,
    summary="List the SMS notifications of an order with their send status",
    responses=_READ_RESPONSES,
)
async def sms_notifications(request: Request, caller: CallerDep, id: str) -> NotificationSummary:
    return await _notification_summary(request, caller, id, _SMS)
