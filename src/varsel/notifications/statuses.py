"""Order and notification statuses, what counts as success, and the human descriptions the API shows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from varsel.dispatch.window import DaytimeWindow


class OrderStatus(StrEnum):
    REGISTERED = "Registered"
    PROCESSING = "Processing"
    # Notifications generated, some still under way. The v1 API shows it as Completed (as the reference does).
    PROCESSED = "Processed"
    COMPLETED = "Completed"
    SEND_CONDITION_NOT_MET = "SendConditionNotMet"
    CANCELLED = "Cancelled"


ORDER_STATUS_DESCRIPTIONS: dict[OrderStatus, str] = {
    OrderStatus.REGISTERED: "Order has been registered and is awaiting requested send time before processing.",
    OrderStatus.PROCESSING: "Order processing is ongoing. Notifications are being generated.",
    OrderStatus.PROCESSED: "Order processing is done. Notifications have been generated and are being sent.",
    OrderStatus.COMPLETED: "Order processing is completed. All notifications have been generated.",
    OrderStatus.SEND_CONDITION_NOT_MET: "Order processing was stopped because the send condition was not met.",
    OrderStatus.CANCELLED: "Order processing was stopped because the order was cancelled.",
}


def v1_order_status(status: OrderStatus) -> OrderStatus:
    """The status the v1 API shows: Processed is reported as Completed, as the reference does."""
    return OrderStatus.COMPLETED if status is OrderStatus.PROCESSED else status


class EmailStatus(StrEnum):
    NEW = "New"
    SENDING = "Sending"
    SUCCEEDED = "Succeeded"
    DELIVERED = "Delivered"
    FAILED = "Failed"
    FAILED_RECIPIENT_RESERVED = "Failed_RecipientReserved"
    FAILED_RECIPIENT_NOT_IDENTIFIED = "Failed_RecipientNotIdentified"
    FAILED_INVALID_EMAIL_FORMAT = "Failed_InvalidEmailFormat"
    FAILED_SUPPRESSED_RECIPIENT = "Failed_SupressedRecipient"  # sic: the reference's spelling is the wire format
    FAILED_BOUNCED = "Failed_Bounced"
    FAILED_FILTERED_SPAM = "Failed_FilteredSpam"
    FAILED_QUARANTINED = "Failed_Quarantined"
    FAILED_TTL = "Failed_TTL"
    # A composed email's attachment could not be fetched (the store refused it: expired, revoked, absent) ...
    FAILED_INVALID_SAS_URL = "Failed_InvalidSasUrl"
    # ... or its attachments together are larger than an email may carry.
    FAILED_PAYLOAD_TOO_LARGE = "Failed_PayloadTooLarge"


EMAIL_STATUS_DESCRIPTIONS: dict[EmailStatus, str] = {
    EmailStatus.NEW: "The email has been created, but has not been picked up for processing yet.",
    EmailStatus.SENDING: "The email is being processed and will be attempted sent shortly.",
    EmailStatus.SUCCEEDED: "The email has been accepted by the third party email service and will be sent shortly.",
    EmailStatus.DELIVERED: (
        "The email was delivered to the recipient. No errors reported, making it likely it was received by the "
        "recipient."
    ),
    EmailStatus.FAILED: "The email was not sent due to an unspecified failure.",
    EmailStatus.FAILED_RECIPIENT_RESERVED: (
        "The email was not sent because the recipient has reserved themselves from electronic communication."
    ),
    EmailStatus.FAILED_RECIPIENT_NOT_IDENTIFIED: (
        "The email was not sent because the recipient's email address was not found."
    ),
    EmailStatus.FAILED_INVALID_EMAIL_FORMAT: (
        "The email was not sent because the recipient's email address is in an invalid format."
    ),
    EmailStatus.FAILED_SUPPRESSED_RECIPIENT: (
        "The email was not sent because the recipient's email address is on a suppression list of the email "
        "service, after earlier hard bounces or complaints."
    ),
    EmailStatus.FAILED_BOUNCED: "The email hard bounced: the recipient's mail server refused it.",
    EmailStatus.FAILED_FILTERED_SPAM: "The email was identified as spam and rejected or blocked.",
    EmailStatus.FAILED_QUARANTINED: "The email was quarantined (as spam, bulk mail or phishing).",
    EmailStatus.FAILED_TTL: (
        "The email was not confirmed delivered before it expired: no delivery report arrived in time."
    ),
    EmailStatus.FAILED_INVALID_SAS_URL: (
        "The email was not sent because one or more attachment SAS URLs are invalid, expired, or inaccessible."
    ),
    EmailStatus.FAILED_PAYLOAD_TOO_LARGE: (
        "The email was not sent because the total size of the attachments exceeds the allowed limit."
    ),
}

EMAIL_SUCCESS = frozenset({EmailStatus.SUCCEEDED, EmailStatus.DELIVERED})
EMAIL_PENDING = frozenset({EmailStatus.NEW, EmailStatus.SENDING, EmailStatus.SUCCEEDED})


class SmsStatus(StrEnum):
    NEW = "New"
    SENDING = "Sending"
    ACCEPTED = "Accepted"
    DELIVERED = "Delivered"
    FAILED = "Failed"
    FAILED_INVALID_RECIPIENT = "Failed_InvalidRecipient"
    FAILED_RECIPIENT_RESERVED = "Failed_RecipientReserved"
    FAILED_BARRED_RECEIVER = "Failed_BarredReceiver"
    FAILED_DELETED = "Failed_Deleted"
    FAILED_EXPIRED = "Failed_Expired"
    FAILED_UNDELIVERED = "Failed_Undelivered"
    FAILED_RECIPIENT_NOT_IDENTIFIED = "Failed_RecipientNotIdentified"
    FAILED_REJECTED = "Failed_Rejected"
    FAILED_TTL = "Failed_TTL"


SMS_STATUS_DESCRIPTIONS: dict[SmsStatus, str] = {
    SmsStatus.NEW: "The SMS has been created, but has not been picked up for processing yet.",
    SmsStatus.SENDING: "The SMS is being processed and will be attempted sent shortly.",
    SmsStatus.ACCEPTED: "The SMS has been accepted by the gateway service and will be sent shortly.",
    SmsStatus.DELIVERED: "The SMS was successfully delivered to its destination.",
    SmsStatus.FAILED: "The SMS was not delivered due to an unspecified failure.",
    SmsStatus.FAILED_INVALID_RECIPIENT: "The SMS was not delivered because the recipient's mobile number was invalid.",
    SmsStatus.FAILED_RECIPIENT_RESERVED: (
        "The SMS was not sent because the recipient has reserved themselves from electronic communication."
    ),
    SmsStatus.FAILED_BARRED_RECEIVER: (
        "The SMS was not delivered because the recipient's number is barred, blocked or not in use."
    ),
    SmsStatus.FAILED_DELETED: "The SMS was not delivered because the message has been deleted.",
    SmsStatus.FAILED_EXPIRED: "The SMS was not delivered because it has expired.",
    SmsStatus.FAILED_UNDELIVERED: (
        "The SMS was not delivered due to invalid number or no available route to destination."
    ),
    SmsStatus.FAILED_RECIPIENT_NOT_IDENTIFIED: (
        "The SMS was not delivered because the recipient's mobile number was not found."
    ),
    SmsStatus.FAILED_REJECTED: "The SMS was not delivered because it was rejected.",
    SmsStatus.FAILED_TTL: "The SMS was not confirmed delivered before it expired: no delivery report arrived in time.",
}

# varsel counts Accepted and Delivered as success everywhere (the reference's order summary forgot Delivered).
SMS_SUCCESS = frozenset({SmsStatus.ACCEPTED, SmsStatus.DELIVERED})
SMS_PENDING = frozenset({SmsStatus.NEW, SmsStatus.SENDING, SmsStatus.ACCEPTED})


# ---------------------------------------------------------------- what a waiting order or notification waits for
#
# The descriptions above are the reference's words, which clients may compare. Where an order or a notification
# waits for something the reference's words do not name (a retry, the SMS daytime window), a sentence saying what
# and until when is added after them: the status value, what clients parse, is unchanged, and the description still
# begins with the reference's words.


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def order_status_description(
    status: OrderStatus,
    *,
    now: datetime,
    process_after: datetime | None,
    processing_attempts: int,
    condition_endpoint: str | None,
    condition_failure_policy: str,
) -> str:
    """The order's status description, with what a Registered order that is to be tried again waits for."""
    described = ORDER_STATUS_DESCRIPTIONS[status]
    retrying = status is OrderStatus.REGISTERED and processing_attempts > 0
    if not retrying or process_after is None or process_after <= now:
        return described
    if condition_endpoint:
        # Every attempt checks the condition first, so the next check is at the retry whatever failed last time.
        then = "sent anyway" if condition_failure_policy == "send" else "not sent (SendConditionNotMet)"
        return (
            f"{described} The last attempt to process it failed (its send condition could not be checked, or "
            f"another error): the condition is checked again at {_at(process_after)}; should that check fail "
            f"too, the order is {then}."
        )
    return f"{described} The last attempt to process it failed: it is tried again at {_at(process_after)}."


def notification_status_description(
    descriptions: Mapping[Any, str],
    status: EmailStatus | SmsStatus,
    *,
    now: datetime,
    send_after: datetime | None,
    attempts: int,
    sms_window: DaytimeWindow | None = None,
) -> str:
    """A notification's status description, with what a New one waits for: a retry after a failed attempt, or, an
    SMS never tried, the daytime window (`sms_window`, the one the workers keep)."""
    described = descriptions[status]
    if status.value != "New" or send_after is None or send_after <= now:
        return described
    if attempts > 0:
        return f"{described} The last attempt to send it failed: it is tried again at {_at(send_after)}."
    if isinstance(status, SmsStatus) and sms_window is not None and not sms_window.always_open:
        hours = f"{sms_window.opens:%H:%M}-{sms_window.closes:%H:%M} {sms_window.timezone}"
        return f"{described} It is held for the SMS daytime window ({hours}) and goes out at {_at(send_after)}."
    return f"{described} It goes out at {_at(send_after)}."
