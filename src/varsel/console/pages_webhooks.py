"""The Webhooks page: a service owner's webhook subscriptions with their state and recent delivery log, and the
owner's button to enable a disabled one again. An admin sees every owner's (read only: enabling is the owner's
action). Data from varsel.webhooks.service, the same rules as the API's."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from varsel.console.principal import Principal
from varsel.console.sessions import checked_form, signed_in
from varsel.console.web import PREFIX, ConsoleForbidden, ConsoleNotFound, console_of, render
from varsel.webhooks.service import SubscriptionNotFound, WebhookSubscriptions

router = APIRouter(prefix=f"{PREFIX}/webhooks", include_in_schema=False)

# Attempts shown under each subscription, newest first (the API's /attempts pages through all of them).
RECENT_ATTEMPTS = 10


def _service(request: Request) -> WebhookSubscriptions:
    service: WebhookSubscriptions = console_of(request).varsel.webhooks
    return service


@router.get("")
async def webhooks_page(request: Request, principal: Principal = Depends(signed_in)) -> Response:
    service = _service(request)
    creator = None if principal.admin else principal.org
    shown: list[dict[str, Any]] = []
    for subscription in await service.listed(creator):
        recent = await service.attempts(creator, [subscription.id], None, RECENT_ATTEMPTS)
        shown.append({"subscription": subscription, "attempts": recent})
    notice = {"enabled": "The subscription is enabled again: its pending events are being delivered."}.get(
        request.query_params.get("done", "")
    )
    return render(request, "webhooks.html", {"subscriptions": shown, "notice": notice})


@router.post("/{subscription_id}/enable")
async def enable(
    request: Request,
    subscription_id: str,
    principal: Principal = Depends(signed_in),
    form: FormData = Depends(checked_form),
) -> Response:
    try:
        parsed = UUID(subscription_id)
    except ValueError:
        raise ConsoleNotFound() from None
    if principal.org is None:
        raise ConsoleForbidden("Only the service owner of a subscription can enable it again.")
    try:
        await _service(request).enable(principal.org, parsed)
    except SubscriptionNotFound:
        raise ConsoleNotFound() from None
    return RedirectResponse(f"{PREFIX}/webhooks?done=enabled", status_code=303)
