"""What a webhook event says: the payloads of order and notification events, in the manifest's JSON vocabulary.

Pure functions, no I/O: the writers (varsel.webhooks.outbox, called in the transaction that makes each change) give
them what they know of the change and write what they build. Every payload is the body as delivered, Standard
Webhooks style: `{"type": kind, "timestamp": when the change happened (ISO 8601 UTC), "data": …}`.

- order.completed, order.send_condition_not_met, order.cancelled: `data` is the order's shipment manifest as
  GET /future/shipment/{id} answers it at that moment, built from the status feed's entry, which the same
  transaction writes with a snapshot of the order and its notifications (varsel.shipments.repository).
- notification.status_changed: one event per change of an email or SMS notification, from its first status (New,
  or a failure found at generation, or Sending for an instant order, which is never New) to its final one.

Times are written as the API writes them (UTC, `Z`), statuses with the lifecycle names of reference section 9.1
(Email_Delivered, SMS_Failed_InvalidRecipient, Order_Completed, …): a receiver reads the same vocabulary in a
webhook as in the manifest and the feed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

# The kinds a subscription may take (issue #18).
ORDER_COMPLETED = "order.completed"
ORDER_SEND_CONDITION_NOT_MET = "order.send_condition_not_met"
ORDER_CANCELLED = "order.cancelled"
NOTIFICATION_STATUS_CHANGED = "notification.status_changed"
EVENT_KINDS = (ORDER_COMPLETED, ORDER_SEND_CONDITION_NOT_MET, ORDER_CANCELLED, NOTIFICATION_STATUS_CHANGED)
ORDER_KINDS = (ORDER_COMPLETED, ORDER_SEND_CONDITION_NOT_MET, ORDER_CANCELLED)

# The order status each order kind tells of (the stored values of varsel.notifications.statuses.OrderStatus).
ORDER_KIND_OF_STATUS = {
    "Completed": ORDER_COMPLETED,
    "SendConditionNotMet": ORDER_SEND_CONDITION_NOT_MET,
    "Cancelled": ORDER_CANCELLED,
}

# The pipeline's channel names (the notification tables' keys), as the manifest's recipient type and the event's
# channel field write them.
EMAIL = "email"
SMS = "sms"
RECIPIENT_TYPE = {EMAIL: "Email", SMS: "SMS"}
CHANNEL_NAME = {EMAIL: "Email", SMS: "Sms"}


@dataclass(frozen=True, slots=True)
class Event:
    """One change, for every subscriber of its creator and kind. `payload` is the body as delivered:
    {"type": kind, "timestamp": ISO time of the change, "data": ...}, JSON values only."""

    creator: str
    kind: str
    occurred: datetime
    payload: dict[str, Any]


# ---------------------------------------------------------------- the lifecycle vocabulary (reference 9.1)

# A recipient status's lifecycle name is its channel's prefix and the stored value,
LIFECYCLE_PREFIX = {EMAIL: "Email_", SMS: "SMS_"}
# but for these stored values.
LIFECYCLE_RENAMED = {
    "Email_Failed_InvalidEmailFormat": "Email_Failed_InvalidFormat",
    "Email_Failed_SupressedRecipient": "Email_Failed_SuppressedRecipient",
    "SMS_Failed_InvalidReceiver": "SMS_Failed_InvalidRecipient",
}


def order_lifecycle(status: str) -> str:
    """Registered -> Order_Registered, …; Processed is shown as it is (Order_Processed), unlike v1."""
    return f"Order_{status}"


def recipient_lifecycle(channel: str, status: str) -> str:
    """Delivered -> Email_Delivered or SMS_Delivered, with the reference's few renamings."""
    name = LIFECYCLE_PREFIX[channel] + status
    return LIFECYCLE_RENAMED.get(name, name)


def utc_iso(moment: datetime) -> str:
    """A time as the API writes it (varsel.api_types.UtcTimestamp): ISO 8601 in UTC, ending in Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _envelope(kind: str, occurred: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "timestamp": utc_iso(occurred), "data": data}


# ---------------------------------------------------------------- notification.status_changed


@dataclass(frozen=True, slots=True)
class NotificationFacts:
    """What an event tells of the notification besides its statuses: its order, who it is to, where it goes."""

    order_id: UUID
    creator: str
    senders_reference: str | None
    destination: str | None
    national_identity_number: str | None = None
    organization_number: str | None = None
    # A notification sent by receipt-driven fallback: the first one it follows, and why (as stored).
    fallback_of: UUID | None = None
    fallback_reason: str | None = None


@dataclass(frozen=True, slots=True)
class NotificationChange:
    """One status change of an email or SMS notification (`channel` "email" or "sms"): from `previous` (None when
    the notification was created with `status`) at `occurred`. `facts` are given where the writer has them at hand;
    without them the outbox reads them in the same transaction (varsel.webhooks.outbox)."""

    channel: str
    notification_id: UUID
    previous: str | None
    status: str
    occurred: datetime
    facts: NotificationFacts | None = None


def facts_of(row: Any, senders_reference: str | None, channel: str) -> NotificationFacts:
    """The facts of a notification row (a mapping or an object with the notification table's columns)."""

    def get(name: str) -> Any:
        return row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)

    return NotificationFacts(
        order_id=get("order_id"),
        creator=get("creator"),
        senders_reference=senders_reference,
        destination=get("email_address" if channel == EMAIL else "mobile_number"),
        national_identity_number=get("national_identity_number"),
        organization_number=get("organization_number"),
        fallback_of=get("fallback_of"),
        fallback_reason=get("fallback_reason"),
    )


def notification_event(change: NotificationChange, facts: NotificationFacts) -> Event:
    """The notification.status_changed event of a change."""
    data: dict[str, Any] = {"shipmentId": str(facts.order_id)}
    if facts.senders_reference:
        data["sendersReference"] = facts.senders_reference
    data.update(
        notificationId=str(change.notification_id),
        channel=CHANNEL_NAME[change.channel],
        # The manifest's recipient entry: its type discriminator, destination, status and last update.
        type=RECIPIENT_TYPE[change.channel],
        destination=facts.destination or "",
        status=recipient_lifecycle(change.channel, change.status),
        previousStatus=None if change.previous is None else recipient_lifecycle(change.channel, change.previous),
        lastUpdate=utc_iso(change.occurred),
    )
    if facts.national_identity_number:
        data["nationalIdentityNumber"] = facts.national_identity_number
    if facts.organization_number:
        data["organizationNumber"] = facts.organization_number
    if facts.fallback_of is not None:
        data["fallbackFor"] = fallback_for(change.channel, facts.fallback_of, facts.fallback_reason)
    return Event(
        facts.creator,
        NOTIFICATION_STATUS_CHANGED,
        change.occurred,
        _envelope(NOTIFICATION_STATUS_CHANGED, change.occurred, data),
    )


# ---------------------------------------------------------------- order.*


def _stored_time(value: str) -> datetime:
    """A time as the database wrote it into the feed entry's JSON: PostgreSQL with its session's offset, SQLite as
    stored (UTC without offset)."""
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def manifest_of_snapshot(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A status feed entry's snapshot (its stored JSON: shipmentId, sendersReference, type, status, lastUpdate,
    recipients of channel, destination, status, lastUpdate) as GET /future/shipment/{id} answers the order: the
    lifecycle names, the recipients' type discriminator, times with a Z, no sendersReference when it has none."""
    # As a UUID in its usual form (SQLite keeps 32 hex digits).
    manifest: dict[str, Any] = {"shipmentId": str(UUID(str(entry["shipmentId"])))}
    if entry.get("sendersReference"):
        manifest["sendersReference"] = entry["sendersReference"]
    manifest.update(
        type=entry["type"],
        status=order_lifecycle(entry["status"]),
        lastUpdate=utc_iso(_stored_time(entry["lastUpdate"])),
        recipients=[_manifest_recipient(recipient) for recipient in entry["recipients"]],
    )
    return manifest


def _manifest_recipient(recipient: Mapping[str, Any]) -> dict[str, Any]:
    told: dict[str, Any] = {
        "type": RECIPIENT_TYPE[recipient["channel"]],
        "destination": recipient["destination"],
        "status": recipient_lifecycle(recipient["channel"], recipient["status"]),
        "lastUpdate": utc_iso(_stored_time(recipient["lastUpdate"])),
    }
    first = recipient.get("fallbackFor")
    if first:
        told["fallbackFor"] = fallback_for(recipient["channel"], first["notificationId"], first["reason"])
    return told


def fallback_for(channel: str, first_id: Any, reason: str | None) -> dict[str, Any]:
    """A notification sent by receipt-driven fallback on `channel`: the first one (on the other channel) it follows,
    and why (its failed status as the manifest names it, or NoDeliveryReport), as the manifest's fallbackFor."""
    first = SMS if channel == EMAIL else EMAIL
    why = reason or ""
    return {
        "notificationId": str(UUID(str(first_id))),
        "type": RECIPIENT_TYPE[first],
        "reason": recipient_lifecycle(first, why) if why.startswith("Failed") else why,
    }


def order_event(creator: str, entry: Mapping[str, Any] | str, occurred: datetime) -> Event:
    """The order.* event of an order that ended (its kind by the status it ended in), from its feed entry's
    snapshot (as stored: JSON text or already read)."""
    snapshot: Mapping[str, Any] = json.loads(entry) if isinstance(entry, str) else entry
    kind = ORDER_KIND_OF_STATUS[snapshot["status"]]
    return Event(creator, kind, occurred, _envelope(kind, occurred, manifest_of_snapshot(snapshot)))
