"""fair claims: each notification names its service owner; owner indexes for claims that take turns

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFICATION_TABLES = ("email_notifications", "sms_notifications")


def upgrade() -> None:
    for table in NOTIFICATION_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("creator", sa.String(length=100), nullable=True))
        # Notifications made before this revision take their order's creator.
        op.execute(
            f"UPDATE {table} SET creator = (SELECT orders.creator FROM orders WHERE orders.id = {table}.order_id)"
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("creator", existing_type=sa.String(length=100), nullable=False)
            batch_op.create_index(
                f"ix_{table}_creator_sendable",
                ["creator", "send_after"],
                unique=False,
                sqlite_where=sa.text("status IN ('New', 'Sending')"),
                postgresql_where=sa.text("status IN ('New', 'Sending')"),
            )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orders_creator_due",
            ["creator", "process_after"],
            unique=False,
            sqlite_where=sa.text("status IN ('Registered', 'Processing')"),
            postgresql_where=sa.text("status IN ('Registered', 'Processing')"),
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_orders_creator_due",
            sqlite_where=sa.text("status IN ('Registered', 'Processing')"),
            postgresql_where=sa.text("status IN ('Registered', 'Processing')"),
        )
    for table in NOTIFICATION_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(
                f"ix_{table}_creator_sendable",
                sqlite_where=sa.text("status IN ('New', 'Sending')"),
                postgresql_where=sa.text("status IN ('New', 'Sending')"),
            )
            batch_op.drop_column("creator")
