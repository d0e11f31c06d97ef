"""The support dashboard and usage metrics: indexes for recipient look-ups and monthly usage

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHANNEL_TABLES = ("email_notifications", "sms_notifications")
_IDENTIFIERS = ("national_identity_number", "organization_number")


def upgrade() -> None:
    # Plain CREATE INDEX, never batch mode (a SQLite table rebuild would cascade-delete every notification).
    for table in _CHANNEL_TABLES:
        for identifier in _IDENTIFIERS:
            # A support look-up: a person's or organisation's notifications, with their orders, from the index alone.
            # Partial: direct email/SMS recipients (no identifier) are never looked up, so they are left out.
            op.create_index(
                f"ix_{table}_{identifier}_order_id",
                table,
                [identifier, "order_id"],
                sqlite_where=sa.text(f"{identifier} IS NOT NULL"),
                postgresql_where=sa.text(f"{identifier} IS NOT NULL"),
            )
        # The daily usage export: the notifications whose result was recorded on one day.
        op.create_index(f"ix_{table}_status_changed", table, ["status_changed"])
    # Monthly usage and the look-up's time range: orders by requested send time.
    op.create_index("ix_orders_requested_send_time", "orders", ["requested_send_time"])


def downgrade() -> None:
    op.drop_index("ix_orders_requested_send_time", table_name="orders")
    for table in _CHANNEL_TABLES:
        op.drop_index(f"ix_{table}_status_changed", table_name=table)
        for identifier in _IDENTIFIERS:
            op.drop_index(f"ix_{table}_{identifier}_order_id", table_name=table)
