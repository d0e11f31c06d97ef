"""Simulated recipients counted apart in the usage rollup: per service owner and day, the email and SMS notifications
to simulated recipients (issue #18), which the other usage figures leave out

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ADD COLUMN with a constant default, never batch mode (a SQLite table rebuild). Days counted before this had no
    # simulated recipients (validation refused them), so 0 is their true count.
    for column in ("simulated_emails", "simulated_sms"):
        op.add_column("usage_days", sa.Column(column, sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), not batch mode, for the same reason.
    op.drop_column("usage_days", "simulated_sms")
    op.drop_column("usage_days", "simulated_emails")
