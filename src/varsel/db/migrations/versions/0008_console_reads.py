"""The console's read side: indexes for order search, timelines and the overview

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An admin's search by requested send time uses 0007's ix_orders_requested_send_time.
# name, table, columns: plain CREATE INDEX on both databases (no batch mode: a SQLite table rebuild would cascade).
INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_orders_created", "orders", ["created", "id", "creator", "requested_send_time"]),
    ("ix_orders_status_created", "orders", ["status", "created", "notification_channel", "creator"]),
    ("ix_orders_creator_created", "orders", ["creator", "created", "id"]),
    ("ix_orders_creator_requested_send_time", "orders", ["creator", "requested_send_time", "id"]),
    ("ix_orders_senders_reference", "orders", ["senders_reference"]),
    ("ix_email_notifications_status_created", "email_notifications", ["status", "created", "creator"]),
    ("ix_sms_notifications_status_created", "sms_notifications", ["status", "created", "creator"]),
    ("ix_notification_attempts_started", "notification_attempts", ["started", "channel", "provider", "outcome"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
