"""The domain vocabulary both API dialects (v1, v2) and everything below them share: channels, content types,
sending-time policies, order types. The wire dialects name and word these their own way; the pipeline knows only
these."""

from __future__ import annotations

from enum import StrEnum


class NotificationChannel(StrEnum):
    EMAIL = "Email"
    SMS = "Sms"
    EMAIL_PREFERRED = "EmailPreferred"
    SMS_PREFERRED = "SmsPreferred"
    EMAIL_AND_SMS = "EmailAndSms"

    @property
    def uses_email(self) -> bool:
        return self is not NotificationChannel.SMS

    @property
    def uses_sms(self) -> bool:
        return self is not NotificationChannel.EMAIL


class EmailContentType(StrEnum):
    PLAIN = "Plain"
    HTML = "Html"


class SendingTimePolicy(StrEnum):
    """When an SMS may go out: Daytime within the configured window (09-17 Oslo time), Anytime at once. Email is
    always Anytime."""

    ANYTIME = "Anytime"
    DAYTIME = "Daytime"


class OrderType(StrEnum):
    """What made an order: every v1 order and the main order of a v2 chain are Notification; a chain's reminders are
    Reminder; Instant and Composed orders come from their own v2 endpoints."""

    NOTIFICATION = "Notification"
    REMINDER = "Reminder"
    INSTANT = "Instant"
    COMPOSED = "Composed"


class IdempotencyFamily(StrEnum):
    """The namespaces of v2 idempotency keys: one key may be used once in each (reference 1.5)."""

    ORDERS = "orders"
    INSTANT = "instant"
    COMPOSED = "composed"


class RecipientLookupStatus(StrEnum):
    SUCCESS = "Success"
    PARTIAL_SUCCESS = "PartialSuccess"
    FAILED = "Failed"
