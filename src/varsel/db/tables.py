"""The schema: one definition for SQLite and PostgreSQL. Migrations must build exactly this (a test checks)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)

from varsel.db.types import UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A v2 order chain: the main order and its reminders (orders rows naming it), created once per idempotency key.
order_chains = Table(
    "order_chains",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("creator", String(100), nullable=False),
    # orders, instant or composed: one key may be used once in each (reference 1.5).
    Column("family", String(10), nullable=False),
    # The key as given (any length), and its SHA-256 in hex, which the unique index holds.
    Column("idempotency_id", Text, nullable=False),
    Column("idempotency_hash", String(64), nullable=False),
    Column("created", UtcDateTime, nullable=False),
    # Stored as given; the reference returns it nowhere.
    Column("dialogporten_association", JSON),
    UniqueConstraint("creator", "family", "idempotency_hash", name="uq_order_chains_idempotency"),
)

# An order as the service owner registered it. Templates live on the order row: one order has at most one
# email and one SMS template, and reading an order should not need a join.
orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("creator", String(100), nullable=False),
    Column("senders_reference", String(200)),
    Column("notification_channel", String(20), nullable=False),
    Column("requested_send_time", UtcDateTime, nullable=False),
    Column("created", UtcDateTime, nullable=False),
    Column("ignore_reservation", Boolean),
    Column("resource_id", String(255)),
    Column("resource_action", String(100)),
    Column("condition_endpoint", Text),
    # Registered, Processing, Processed, Completed, SendConditionNotMet, Cancelled
    Column("status", String(30), nullable=False),
    Column("status_changed", UtcDateTime, nullable=False),
    Column("email_from_address", String(320)),
    Column("email_subject", Text),
    Column("email_body", Text),
    Column("email_content_type", String(10)),
    Column("sms_sender", String(20)),
    Column("sms_body", Text),
    # Daytime (09-17 Europe/Oslo) or Anytime; v1 orders are Daytime.
    Column("sms_sending_time_policy", String(10), nullable=False, server_default="Daytime"),
    # When the order is next due for processing: the requested send time, later after a condition retry.
    Column("process_after", UtcDateTime, nullable=False),
    # The lease of the worker processing the order; a dead worker's lease runs out and the order is claimed again.
    Column("claimed_by", String(100)),
    Column("claimed_until", UtcDateTime),
    Column("processing_attempts", Integer, nullable=False, server_default="0"),
    # Notification (every v1 order, a chain's main order), Reminder, Instant or Composed.
    Column("order_type", String(12), nullable=False, server_default="Notification"),
    # The v2 chain the order belongs to, and its place there: 0 the main order, 1… its reminders in request order.
    # No foreign key: adding one to orders makes SQLite rebuild the table; chains and their orders are written
    # together, in one transaction, and never apart.
    Column("chain_id", Uuid),
    Column("chain_position", Integer),
    # A person's contact details last confirmed over 18 months ago count as absent unless this is set (v2).
    Column("use_stale_contact_information", Boolean, nullable=False, server_default=false()),
    # A composed email's attachments, as ordered: a list of {"filename", "mimeType", "url"}. Only the references
    # are stored; the content is fetched when the email is sent (a SAS URL is valid for a while, the file may be
    # large, and a store's refusal then is the email's outcome).
    Column("attachments", JSON),
    # Receipt-driven fallback (migration 0012, issue #18): the window in minutes after which an EmailPreferred or
    # SmsPreferred order's notification without a delivery report is followed by the other channel; set by the
    # order's fallbackAfterMinutes, null when it gave none (VARSEL_FALLBACK__ENABLED then decides; see
    # varsel.dispatch.fallback).
    Column("fallback_after_minutes", Integer),
)
Index("ix_orders_chain_id", orders.c.chain_id)
# Monthly usage and the support look-up's time range (migration 0007).
Index("ix_orders_requested_send_time", orders.c.requested_send_time)
Index("ix_orders_creator_senders_reference", orders.c.creator, orders.c.senders_reference)
# The claim query's index: only orders that still need work are in it, so it stays small however many are done.
Index(
    "ix_orders_due",
    orders.c.process_after,
    sqlite_where=text("status IN ('Registered', 'Processing')"),
    postgresql_where=text("status IN ('Registered', 'Processing')"),
)
# The same by service owner: the claim takes turns between owners, reading each one's earliest due orders here, so
# one owner's backlog never stands in front of another's order.
Index(
    "ix_orders_creator_due",
    orders.c.creator,
    orders.c.process_after,
    sqlite_where=text("status IN ('Registered', 'Processing')"),
    postgresql_where=text("status IN ('Registered', 'Processing')"),
)
# The console's order search, newest first and keyset-paged by (time, id), by creation or requested send time, for
# one service owner or (admin) for all (an admin's by send time uses ix_orders_requested_send_time, of 0007, where
# the planner sorts only the ties of one instant by id). The admin index by creation also carries the creator and the
# requested send time, so that the overview's sample of a period's orders reads the index alone.
Index("ix_orders_created", orders.c.created, orders.c.id, orders.c.creator, orders.c.requested_send_time)
# The overview's counts of a period's orders by status and channel: each status is one range of this index, its
# channels counted as it is read, without sorting or reading a row (a GROUP BY over a time range sorted every order
# of the period). It also serves a search by status, newest first.
Index(
    "ix_orders_status_created",
    orders.c.status,
    orders.c.created,
    orders.c.notification_channel,
    orders.c.creator,
)
Index("ix_orders_creator_created", orders.c.creator, orders.c.created, orders.c.id)
Index("ix_orders_creator_requested_send_time", orders.c.creator, orders.c.requested_send_time, orders.c.id)
# An admin's search by sender's reference across service owners (an owner's uses ix_orders_creator_senders_reference).
Index("ix_orders_senders_reference", orders.c.senders_reference)
# Whether a day's orders are all finished, before its usage is settled (varsel.support): only unfinished orders.
Index(
    "ix_orders_unfinished_requested_send_time",
    orders.c.requested_send_time,
    sqlite_where=text("status IN ('Registered', 'Processing', 'Processed')"),
    postgresql_where=text("status IN ('Registered', 'Processing', 'Processed')"),
)

order_recipients = Table(
    "order_recipients",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("email_address", String(320)),
    Column("mobile_number", String(20)),
    Column("national_identity_number", String(11)),
    Column("organization_number", String(9)),
    # A self-identified user or an ID-porten email identity, as its URN (v2 recipientExternalIdentity).
    Column("external_identity", String(400)),
)
Index("ix_order_recipients_order_id", order_recipients.c.order_id)


def _notification_columns() -> list[Column[object]]:
    """Columns every notification (email or SMS) has: who, what status, its lease and its expiry."""
    return [
        Column("id", Uuid, primary_key=True),
        Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
        # The order's creator (service owner), copied here so that the claim can take turns between owners from an
        # index of this table alone.
        Column("creator", String(100), nullable=False),
        Column("national_identity_number", String(11)),
        Column("organization_number", String(9)),
        Column("external_identity", String(400)),
        Column("recipient_name", Text),
        Column("is_reserved", Boolean),
        Column("status", String(40), nullable=False),
        Column("status_changed", UtcDateTime, nullable=False),
        Column("created", UtcDateTime, nullable=False),
        Column("expiry", UtcDateTime, nullable=False),
        # When a New notification may next be handed to the provider (send window, retry backoff).
        Column("send_after", UtcDateTime, nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("claimed_by", String(100)),
        Column("claimed_until", UtcDateTime),
        Column("provider", String(40)),
        Column("provider_reference", String(200)),
        Column("status_detail", Text),
        # A notification made by receipt-driven fallback (migration 0012): the first notification, on the other
        # channel, that did not reach the recipient, and why (its failed status, or NoDeliveryReport).
        Column("fallback_of", Uuid),
        Column("fallback_reason", String(40)),
    ]


email_notifications = Table(
    "email_notifications",
    metadata,
    *_notification_columns(),
    Column("email_address", String(320)),
    # Rendered per recipient when the template has keywords; null means the order's template as it is.
    Column("subject", Text),
    Column("body", Text),
)

sms_notifications = Table(
    "sms_notifications",
    metadata,
    *_notification_columns(),
    Column("mobile_number", String(20)),
    Column("body", Text),
    Column("segments", Integer),
)

# Each channel's notification table, by the channel's name as the pipeline, metrics and reports write it.
NOTIFICATION_TABLES: dict[str, Table] = {"email": email_notifications, "sms": sms_notifications}

for _table in NOTIFICATION_TABLES.values():
    Index(f"ix_{_table.name}_order_id", _table.c.order_id)
    Index(
        f"ix_{_table.name}_sendable",
        _table.c.send_after,
        sqlite_where=text("status IN ('New', 'Sending')"),
        postgresql_where=text("status IN ('New', 'Sending')"),
    )
    Index(
        f"ix_{_table.name}_creator_sendable",
        _table.c.creator,
        _table.c.send_after,
        sqlite_where=text("status IN ('New', 'Sending')"),
        postgresql_where=text("status IN ('New', 'Sending')"),
    )
    Index(f"ix_{_table.name}_provider_reference", _table.c.provider_reference)
    Index(f"ix_{_table.name}_status_expiry", _table.c.status, _table.c.expiry)
    # The console's overview: a period's notifications of each status, one range of this index each, counted from
    # the index alone.
    Index(f"ix_{_table.name}_status_created", _table.c.status, _table.c.created, _table.c.creator)
    # Support look-ups (migration 0007): a person's or organisation's notifications with their orders, from the index
    # alone; direct email/SMS recipients carry no identifier and are left out.
    for _identifier in ("national_identity_number", "organization_number"):
        Index(
            f"ix_{_table.name}_{_identifier}_order_id",
            _table.c[_identifier],
            _table.c.order_id,
            sqlite_where=text(f"{_identifier} IS NOT NULL"),
            postgresql_where=text(f"{_identifier} IS NOT NULL"),
        )
    # The daily usage export: the notifications whose result was recorded on one day (migration 0007).
    Index(f"ix_{_table.name}_status_changed", _table.c.status_changed)

# The v2 status feed: one entry per order when it reaches a final state (Completed, SendConditionNotMet, and, unlike
# the reference, Cancelled), with a snapshot of its notifications then. `seq` is the feed's order; entries are
# written in the transaction that ends the order, numbered in commit order (see varsel.shipments.repository), so a
# reader paging by seq never skips one that commits late.
status_feed = Table(
    "status_feed",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("creator", String(100), nullable=False),
    Column("created", UtcDateTime, nullable=False),
    Column("entry", JSON, nullable=False),
)
Index("ix_status_feed_creator_seq", status_feed.c.creator, status_feed.c.seq)
Index("ix_status_feed_created", status_feed.c.created)

# Every time a notification was handed to a provider: when, to which, what came of it. For operators
# (`varsel notifications history`); the API shows a notification's current status, as the reference does.
notification_attempts = Table(
    "notification_attempts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("channel", String(5), nullable=False),
    Column("notification_id", Uuid, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started", UtcDateTime, nullable=False),
    Column("finished", UtcDateTime, nullable=False),
    Column("provider", String(40), nullable=False),
    # accepted, retry (transient failure), failed (permanent failure), error (an exception nobody expected:
    # the message's own, retried only so often) or refused (an instant order's call the provider's guard refused)
    Column("outcome", String(10), nullable=False),
    Column("status", String(40), nullable=False),
    Column("provider_reference", String(200)),
    Column("detail", Text),
)
Index("ix_notification_attempts_notification_id", notification_attempts.c.notification_id)
# The console's provider health: recent provider calls by provider and outcome, from the index alone.
Index(
    "ix_notification_attempts_started",
    notification_attempts.c.started,
    notification_attempts.c.channel,
    notification_attempts.c.provider,
    notification_attempts.c.outcome,
)

# Delivery reports as they arrived, and what became of each: applied, duplicate, late (after expiry, kept without
# changing the status), superseded (the notification was final already), pending (no notification to apply it to
# yet: retried for a while) or dead (never matched: for an operator to inspect and retry).
delivery_reports = Table(
    "delivery_reports",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("channel", String(5), nullable=False),
    Column("provider", String(40), nullable=False),
    # The id the report names, as it came: it may match nothing, or not even be a UUID.
    Column("reference", String(200), nullable=False),
    Column("provider_reference", String(200)),
    Column("notification_id", Uuid),
    Column("status", String(40), nullable=False),
    Column("detail", Text),
    Column("occurred", UtcDateTime),
    Column("received", UtcDateTime, nullable=False),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("next_attempt", UtcDateTime),
    Column("retry_until", UtcDateTime),
    Column("resolved", UtcDateTime),
)
Index(
    "ix_delivery_reports_pending",
    delivery_reports.c.next_attempt,
    sqlite_where=text("state = 'pending'"),
    postgresql_where=text("state = 'pending'"),
)
Index("ix_delivery_reports_state_received", delivery_reports.c.state, delivery_reports.c.received)
Index("ix_delivery_reports_notification_id", delivery_reports.c.notification_id)

# ---------------------------------------------------------------- contact registries (local copies)
# Fed by `varsel registry import` and the registry HTTP endpoints; read by recipient look-ups in batches.

registry_persons = Table(
    "registry_persons",
    metadata,
    Column("national_identity_number", String(11), primary_key=True),
    Column("name", Text),
    Column("email_address", String(320)),
    Column("mobile_number", String(20)),
    # Reserved against digital contact (KRR): nothing is sent unless the order may ignore reservations.
    Column("is_reserved", Boolean, nullable=False, server_default=false()),
    Column("updated", UtcDateTime, nullable=False),
    # When the person last confirmed their contact details (KRR); older than 18 months, they count as absent for a
    # v2 order unless it says useStaleContactInformation. Unknown (null) counts as current.
    Column("contact_confirmed", UtcDateTime),
)

# Users outside the national identity register: self-identified users (urn:altinn:person:legacy-selfidentified:,
# urn:altinn:username:, urn:altinn:party:username:, all kept as the canonical party:username form) with their
# contact details. An ID-porten email identity is its own address and needs no row.
registry_external_identities = Table(
    "registry_external_identities",
    metadata,
    Column("identity", String(400), primary_key=True),
    Column("name", Text),
    Column("email_address", String(320)),
    Column("mobile_number", String(20)),
    Column("updated", UtcDateTime, nullable=False),
)

registry_organizations = Table(
    "registry_organizations",
    metadata,
    Column("organization_number", String(9), primary_key=True),
    Column("name", Text),
    # The official notification addresses, as lists: they are always read and replaced whole.
    Column("email_addresses", JSON, nullable=False),
    Column("mobile_numbers", JSON, nullable=False),
    Column("updated", UtcDateTime, nullable=False),
)

# Contact points users registered for acting on behalf of an organisation.
registry_user_contacts = Table(
    "registry_user_contacts",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("organization_number", String(9), primary_key=True),
    Column("national_identity_number", String(11)),
    Column("email_address", String(320)),
    Column("mobile_number", String(20)),
    Column("updated", UtcDateTime, nullable=False),
)
Index("ix_registry_user_contacts_organization_number", registry_user_contacts.c.organization_number)

# Which users may do what on a resource for an organisation: user contact points count only for authorised users.
registry_authorizations = Table(
    "registry_authorizations",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("organization_number", String(9), primary_key=True),
    Column("resource_id", String(255), primary_key=True),
    Column("actions", JSON, nullable=False),
    Column("updated", UtcDateTime, nullable=False),
)
Index(
    "ix_registry_authorizations_organization_number_resource_id",
    registry_authorizations.c.organization_number,
    registry_authorizations.c.resource_id,
)

# ---------------------------------------------------------------- console sign-in
# One-time sign-in links printed by `varsel console login`, kept by their SHA-256 (the link itself is never stored):
# a link signs in once (used is set by the statement that accepts it) and only until it expires.
console_sign_in_links = Table(
    "console_sign_in_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    # The service owner the session will act for; none for an admin's link.
    Column("org", String(100)),
    Column("admin", Boolean, nullable=False),
    Column("created", UtcDateTime, nullable=False),
    Column("expires", UtcDateTime, nullable=False),
    Column("used", UtcDateTime),
)
Index("ix_console_sign_in_links_expires", console_sign_in_links.c.expires)

# ---------------------------------------------------------------- the usage rollup (migration 0010)
# Each service owner's usage per UTC day of the orders' requested send time, as the monthly summary counts it; the
# summary adds up a month's days instead of counting its orders and notifications on every view.
usage_days = Table(
    "usage_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("creator", String(100), primary_key=True),
    Column("orders", BigInteger, nullable=False),
    Column("email_notifications", BigInteger, nullable=False),
    Column("successful_emails", BigInteger, nullable=False),
    Column("sms_segments", BigInteger, nullable=False),
    Column("successful_sms", BigInteger, nullable=False),
    # Notifications to simulated recipients (migration 0013, issue #18): left out of the columns above, counted here.
    Column("simulated_emails", BigInteger, nullable=False, server_default="0"),
    Column("simulated_sms", BigInteger, nullable=False, server_default="0"),
)
# The days counted (a day without orders too): when, and whether for good (settled: never counted again).
usage_days_counted = Table(
    "usage_days_counted",
    metadata,
    Column("day", Date, primary_key=True),
    Column("counted_at", UtcDateTime, nullable=False),
    Column("settled", Boolean, nullable=False),
)

# ---------------------------------------------------------------- the status rollup (migration 0011)
# How many orders and notifications were created on each UTC day, per service owner, by status (orders also by
# channel): the console's Overview adds a period's whole days up from here instead of counting a month of rows on
# every view; the period's partial first and last day are counted live.
status_days = Table(
    "status_days",
    metadata,
    Column("day", Date, primary_key=True),
    # "order", "email" or "sms".
    Column("kind", String(8), primary_key=True),
    Column("creator", String(100), primary_key=True),
    # An order's notification channel (Email, Sms, EmailPreferred, …); "" for a notification (its kind says it).
    Column("channel", String(20), primary_key=True),
    Column("status", String(40), primary_key=True),
    Column("count", BigInteger, nullable=False),
)
# The days counted (a day without orders too): when, and whether for good (settled: never counted again).
status_days_counted = Table(
    "status_days_counted",
    metadata,
    Column("day", Date, primary_key=True),
    Column("counted_at", UtcDateTime, nullable=False),
    Column("settled", Boolean, nullable=False),
)

# ---------------------------------------------------------------- status webhooks (migration 0012, issue #18)
# A service owner's webhook endpoint: where its events go, signed with its secret (Standard Webhooks). The secret is
# shown once, when created or rotated; after a rotation the previous one still signs (beside the new one) until
# previous_secret_until, so a receiver can switch over without dropping deliveries.
webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("creator", String(100), nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100)),
    Column("previous_secret_until", UtcDateTime),
    Column("enabled", Boolean, nullable=False),
    # Set when varsel disabled it (failures for the whole failure period) or the owner did; cleared on re-enabling.
    Column("disabled_at", UtcDateTime),
    Column("disabled_reason", Text),
    # The first failed attempt since the last success: the failure period counts from here.
    Column("failing_since", UtcDateTime),
    # The delivery worker holding the endpoint (one at a time per endpoint, so its events go out in order).
    Column("claimed_by", String(100)),
    Column("claimed_until", UtcDateTime),
    Column("created", UtcDateTime, nullable=False),
    Column("updated", UtcDateTime, nullable=False),
)
Index("ix_webhook_subscriptions_creator", webhook_subscriptions.c.creator)
# The event kinds a subscription takes, with its creator, so that a status change finds its subscribers with one
# index range (creator, kind) in the transaction that makes the change.
webhook_subscription_events = Table(
    "webhook_subscription_events",
    metadata,
    Column(
        "subscription_id",
        Uuid,
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE", name="fk_webhook_subscription_events_subscription"),
        primary_key=True,
    ),
    Column("kind", String(40), primary_key=True),
    Column("creator", String(100), nullable=False),
)
Index("ix_webhook_subscription_events_creator_kind", webhook_subscription_events.c.creator,
      webhook_subscription_events.c.kind)  # fmt: skip
# The outbox: one row per event and subscription, written in the transaction that makes the change it tells of.
# `seq` orders one endpoint's events (numbered in commit order, as the status feed's are); `id` is the webhook-id,
# the same on every attempt and replay.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("id", Uuid, nullable=False, unique=True),
    Column(
        "subscription_id",
        Uuid,
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE", name="fk_webhook_events_subscription"),
        nullable=False,
    ),
    Column("creator", String(100), nullable=False),
    # order.completed, order.send_condition_not_met, order.cancelled, notification.status_changed
    Column("kind", String(40), nullable=False),
    # When the change happened (the payload's timestamp).
    Column("occurred", UtcDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    # pending or delivered
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # When the next attempt is due (later after a failure).
    Column("next_attempt", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime),
)
Index("ix_webhook_events_subscription_id_seq", webhook_events.c.subscription_id, webhook_events.c.seq)
Index("ix_webhook_events_occurred", webhook_events.c.occurred)
# Each endpoint's pending events in order: the delivery worker's head-of-line look-up reads the first, however many
# delivered events the endpoint keeps (queries spell the condition out, literal, for SQLite to use it).
Index(
    "ix_webhook_events_pending",
    webhook_events.c.subscription_id,
    webhook_events.c.seq,
    sqlite_where=text("state = 'pending'"),
    postgresql_where=text("state = 'pending'"),
)
# The delivery log: every attempt, what the receiver answered and how long it took.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column(
        "event_seq",
        BigInteger,
        ForeignKey("webhook_events.seq", ondelete="CASCADE", name="fk_webhook_attempts_event"),
        nullable=False,
    ),
    Column(
        "subscription_id",
        Uuid,
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE", name="fk_webhook_attempts_subscription"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer),
    Column("error", Text),
)
Index("ix_webhook_attempts_subscription_id_id", webhook_attempts.c.subscription_id, webhook_attempts.c.id)
Index("ix_webhook_attempts_event_seq", webhook_attempts.c.event_seq)

# ---------------------------------------------------------------- receipt-driven fallback (migration 0012, issue #18)
# One row per recipient of an EmailPreferred / SmsPreferred order that falls back (the setting, or the order's
# fallbackAfterMinutes), written with the first notification: it watches that notification until it is reached
# (closed), fails without reaching the person or has no delivery report within the window (due), and then the order
# worker sends the other channel (sent) or finds no other address (no_address). The unique (order, recipient) makes
# it once: however many reports or workers race, there is one row to move from due to sent.
notification_fallbacks = Table(
    "notification_fallbacks",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("order_id", Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("creator", String(100), nullable=False),
    # The recipient's place in the order (order_recipients.position): who to look up for the other channel.
    Column("recipient_position", Integer, nullable=False),
    # The first notification: its channel ("email" or "sms") and id.
    Column("channel", String(5), nullable=False),
    Column("notification_id", Uuid, nullable=False),
    Column("window_minutes", Integer, nullable=False),
    # watching, due, sent, closed or no_address (see varsel.dispatch.fallback).
    Column("state", String(12), nullable=False),
    # When the worker next looks at it: watching, the earliest the window can end; due, now.
    Column("due_at", UtcDateTime, nullable=False),
    # Why it fell back: the first notification's failed status, or NoDeliveryReport.
    Column("reason", String(40)),
    Column("claimed_by", String(100)),
    Column("claimed_until", UtcDateTime),
    Column("created", UtcDateTime, nullable=False),
    Column("resolved", UtcDateTime),
    UniqueConstraint("order_id", "recipient_position"),
)
# The worker's look-up of rows to look at: only unfinished ones are in it.
Index(
    "ix_notification_fallbacks_due",
    notification_fallbacks.c.due_at,
    sqlite_where=text("state IN ('watching', 'due')"),
    postgresql_where=text("state IN ('watching', 'due')"),
)
