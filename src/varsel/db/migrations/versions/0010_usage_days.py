"""The usage rollup: each service owner's counts per UTC day, and which days are counted

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from varsel.db.types import UtcDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = sa.text("status IN ('Registered', 'Processing', 'Processed')")


def upgrade() -> None:
    # Plain CREATE TABLE / CREATE INDEX, never batch mode (a SQLite table rebuild would cascade-delete rows).
    op.create_table(
        "usage_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("creator", sa.String(100), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("email_notifications", sa.BigInteger(), nullable=False),
        sa.Column("successful_emails", sa.BigInteger(), nullable=False),
        sa.Column("sms_segments", sa.BigInteger(), nullable=False),
        sa.Column("successful_sms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "creator", name="pk_usage_days"),
    )
    # A day with no orders has no usage_days rows: this says it was counted all the same, when, and whether for good.
    op.create_table(
        "usage_days_counted",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("counted_at", UtcDateTime(), nullable=False),
        sa.Column("settled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_usage_days_counted"),
    )
    # Whether a day still has orders under way (it cannot be settled then): only those orders are in it, so it
    # stays small however many are done.
    op.create_index(
        "ix_orders_unfinished_requested_send_time",
        "orders",
        ["requested_send_time"],
        sqlite_where=_UNFINISHED,
        postgresql_where=_UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_orders_unfinished_requested_send_time", table_name="orders")
    op.drop_table("usage_days_counted")
    op.drop_table("usage_days")
