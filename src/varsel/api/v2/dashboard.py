"""The support dashboard API (reference 6): every shipment with a notification to a person (national identity
number) or an organisation (organisation number), across all service owners, newest first.

GET /notifications/api/v1/future/dashboard/recipients/notifications/nin       (header NationalIdentityNumber)
GET /notifications/api/v1/future/dashboard/recipients/notifications/orgnumber (header OrganizationNumber)

The scope altinn:notifications.support.admin (settings auth.support_scope) is checked before anything else, as the
reference's policy is. The identifier travels in a header, so personal data stays out of URLs and access logs.
`from`/`to` filter on the orders' requested send time in [from, to), by default the last 7 days.

Left out of the OpenAPI document, as Altinn leaves them out of its own: the answers are personal data, and the
operators and support tools that use them are not the service owners the document is for.

One look-up answers at most varsel.support.service.MAX_SHIPMENTS shipments (the newest); when more matched, the
answer carries `X-Result-Truncated: true` and a narrower range shows the older ones."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from varsel.api.v2.dashboard_models import DashboardDeliveryAttemptExt, DashboardShipmentExt
from varsel.api.v2.dashboard_validation import (
    NATIONAL_IDENTITY_NUMBER,
    ORGANIZATION_NUMBER,
    IdentifierRule,
    recipient_query,
)
from varsel.orders.vocabulary import NotificationChannel
from varsel.support.service import MAX_SHIPMENTS, RecipientIdentifier, RecipientShipment, SupportService

PREFIX = "/notifications/api/v1/future/dashboard/recipients/notifications"
TRUNCATED_HEADER = "X-Result-Truncated"

router = APIRouter(prefix=PREFIX, tags=["Support dashboard"], include_in_schema=False)

_CHANNELS = {channel.value: channel.value for channel in NotificationChannel}


def _answer(shipment: RecipientShipment, identifier: RecipientIdentifier) -> DashboardShipmentExt:
    by_nin = identifier is RecipientIdentifier.NATIONAL_IDENTITY_NUMBER
    return DashboardShipmentExt(
        shipment_id=shipment.shipment_id,
        creator_name=shipment.creator,
        resource_id=shipment.resource_id,
        senders_reference=shipment.senders_reference,
        requested_send_time=shipment.requested_send_time,
        notification_channel=_CHANNELS.get(shipment.notification_channel),
        notification_type=shipment.order_type,
        delivery_attempts=[
            DashboardDeliveryAttemptExt(
                national_identity_number=attempt.national_identity_number if by_nin else None,
                organization_number=None if by_nin else attempt.organization_number,
                channel=attempt.channel,
                email_address=attempt.address if attempt.channel == "email" else None,
                mobile_number=attempt.address if attempt.channel == "sms" else None,
                result=attempt.result,
                result_time=attempt.result_time,
            )
            for attempt in shipment.attempts
        ],
    )


async def _look_up(request: Request, rule: IdentifierRule) -> Response:
    varsel = request.app.state.varsel
    # The policy first (401/403), before the request's values are read: a caller without the scope learns nothing.
    await varsel.authenticator.scoped_caller(request, varsel.settings.auth.support_scope)
    query = recipient_query(request, rule, varsel.clock.now(), MAX_SHIPMENTS)
    found = await SupportService(varsel.database).recipient_lookup(query)
    body = (
        "["
        + ",".join(
            _answer(shipment, rule.kind).model_dump_json(by_alias=True, exclude_none=True)
            for shipment in found.shipments
        )
        + "]"
    )
    headers = {TRUNCATED_HEADER: "true"} if found.truncated else None
    # Personal data: no cache along the way may keep it.
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store", **(headers or {})})


@router.get("/nin")
async def by_national_identity_number(request: Request) -> Response:
    return await _look_up(request, NATIONAL_IDENTITY_NUMBER)


@router.get("/orgnumber")
async def by_organization_number(request: Request) -> Response:
    return await _look_up(request, ORGANIZATION_NUMBER)
