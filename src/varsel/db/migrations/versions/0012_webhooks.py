"""Status webhooks: service owners' subscriptions, the events outbox and the delivery log (issue #18)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from varsel.db.types import UtcDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain CREATE TABLE, never batch mode (a SQLite table rebuild would cascade-delete rows).
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("creator", sa.String(100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("previous_secret", sa.String(100)),
        sa.Column("previous_secret_until", UtcDateTime()),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_at", UtcDateTime()),
        sa.Column("disabled_reason", sa.Text()),
        sa.Column("failing_since", UtcDateTime()),
        sa.Column("claimed_by", sa.String(100)),
        sa.Column("claimed_until", UtcDateTime()),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("updated", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_subscriptions"),
    )
    op.create_index("ix_webhook_subscriptions_creator", "webhook_subscriptions", ["creator"])
    op.create_table(
        "webhook_subscription_events",
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("creator", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name="fk_webhook_subscription_events_subscription",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subscription_id", "kind", name="pk_webhook_subscription_events"),
    )
    op.create_index("ix_webhook_subscription_events_creator_kind", "webhook_subscription_events", ["creator", "kind"])
    op.create_table(
        "webhook_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("creator", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("occurred", UtcDateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime()),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name="fk_webhook_events_subscription",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_webhook_events"),
        sa.UniqueConstraint("id", name="uq_webhook_events_id"),
    )
    op.create_index("ix_webhook_events_subscription_id_seq", "webhook_events", ["subscription_id", "seq"])
    op.create_index("ix_webhook_events_occurred", "webhook_events", ["occurred"])
    op.create_index(
        "ix_webhook_events_pending",
        "webhook_events",
        ["subscription_id", "seq"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("latency_ms", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.ForeignKeyConstraint(
            ["event_seq"],
            ["webhook_events.seq"],
            name="fk_webhook_attempts_event",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name="fk_webhook_attempts_subscription",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
    )
    op.create_index("ix_webhook_attempts_subscription_id_id", "webhook_attempts", ["subscription_id", "id"])
    op.create_index("ix_webhook_attempts_event_seq", "webhook_attempts", ["event_seq"])
    _upgrade_fallback()


def _upgrade_fallback() -> None:
    """Receipt-driven fallback (varsel.dispatch.fallback): the order's window, why a notification exists, and the
    rows that watch first notifications. Plain ALTER TABLE ADD COLUMN, never batch mode (see 0005)."""
    op.add_column("orders", sa.Column("fallback_after_minutes", sa.Integer(), nullable=True))
    for table in ("email_notifications", "sms_notifications"):
        op.add_column(table, sa.Column("fallback_of", sa.Uuid(), nullable=True))
        op.add_column(table, sa.Column("fallback_reason", sa.String(40), nullable=True))
    op.create_table(
        "notification_fallbacks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("creator", sa.String(100), nullable=False),
        sa.Column("recipient_position", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(5), nullable=False),
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("window_minutes", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("due_at", UtcDateTime(), nullable=False),
        sa.Column("reason", sa.String(40)),
        sa.Column("claimed_by", sa.String(100)),
        sa.Column("claimed_until", UtcDateTime()),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("resolved", UtcDateTime()),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_notification_fallbacks_order_id_orders", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notification_fallbacks"),
        sa.UniqueConstraint(
            "order_id", "recipient_position", name="uq_notification_fallbacks_order_id_recipient_position"
        ),
    )
    op.create_index(
        "ix_notification_fallbacks_due",
        "notification_fallbacks",
        ["due_at"],
        sqlite_where=sa.text("state IN ('watching', 'due')"),
        postgresql_where=sa.text("state IN ('watching', 'due')"),
    )


def _downgrade_fallback() -> None:
    op.drop_index("ix_notification_fallbacks_due", table_name="notification_fallbacks")
    op.drop_table("notification_fallbacks")
    # Plain DROP COLUMN (SQLite 3.35+), never batch mode, as in upgrade.
    for table in ("email_notifications", "sms_notifications"):
        op.drop_column(table, "fallback_reason")
        op.drop_column(table, "fallback_of")
    op.drop_column("orders", "fallback_after_minutes")


def downgrade() -> None:
    _downgrade_fallback()
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_events")
    op.drop_table("webhook_subscription_events")
    op.drop_table("webhook_subscriptions")
