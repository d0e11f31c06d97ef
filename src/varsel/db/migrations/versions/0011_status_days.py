"""The status rollup: orders and notifications created per UTC day, per service owner and status, for the Overview

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from varsel.db.types import UtcDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain CREATE TABLE, never batch mode (a SQLite table rebuild would cascade-delete rows).
    op.create_table(
        "status_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("creator", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", "creator", "channel", "status", name="pk_status_days"),
    )
    op.create_table(
        "status_days_counted",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("counted_at", UtcDateTime(), nullable=False),
        sa.Column("settled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_status_days_counted"),
    )


def downgrade() -> None:
    op.drop_table("status_days_counted")
    op.drop_table("status_days")
