"""The support dashboard's response (reference 6.3): one element per shipment, null properties omitted."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from varsel.api_types import ApiModel, UtcTimestamp


class DashboardDeliveryAttemptExt(ApiModel):
    # The identifier the route looks up by: the NIN on /nin, the organisation number on /orgnumber.
    national_identity_number: str | None = None
    organization_number: str | None = None
    channel: str = Field(examples=["email"], description="email or sms (lower case).")
    email_address: str | None = Field(default=None, description="Only when channel is email and an address was found.")
    mobile_number: str | None = Field(default=None, description="Only when channel is sms and a number was found.")
    result: str = Field(
        examples=["Delivered"], description="The stored result, as v1 names it (Delivered, Failed_RecipientReserved)."
    )
    result_time: UtcTimestamp


class DashboardShipmentExt(ApiModel):
    shipment_id: UUID
    creator_name: str
    resource_id: str | None = None
    senders_reference: str | None = None
    requested_send_time: UtcTimestamp
    notification_channel: str | None = Field(default=None, examples=["EmailPreferred"])
    notification_type: str = Field(examples=["Notification"], description="Notification, Reminder, Instant, Composed.")
    delivery_attempts: list[DashboardDeliveryAttemptExt]
