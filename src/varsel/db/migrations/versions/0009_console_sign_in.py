"""Console sign-in: one-time login links and sessions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from varsel.db.types import UtcDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Sessions themselves are signed cookies (nothing stored); only the one-time links are, by their hash.
    op.create_table(
        "console_sign_in_links",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("org", sa.String(100), nullable=True),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("expires", UtcDateTime(), nullable=False),
        sa.Column("used", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_sign_in_links"),
    )
    op.create_index("ix_console_sign_in_links_expires", "console_sign_in_links", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_console_sign_in_links_expires", table_name="console_sign_in_links")
    op.drop_table("console_sign_in_links")
