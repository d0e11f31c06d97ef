"""v2 orders: chains, order types, status feed, external identities

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import varsel.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_chains",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("family", sa.String(length=10), nullable=False),
        sa.Column("idempotency_id", sa.Text(), nullable=False),
        sa.Column("idempotency_hash", sa.String(length=64), nullable=False),
        sa.Column("created", varsel.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("dialogporten_association", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_chains")),
        sa.UniqueConstraint("creator", "family", "idempotency_hash", name="uq_order_chains_idempotency"),
    )
    op.create_table(
        "registry_external_identities",
        sa.Column("identity", sa.String(length=400), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("email_address", sa.String(length=320), nullable=True),
        sa.Column("mobile_number", sa.String(length=20), nullable=True),
        sa.Column("updated", varsel.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("identity", name=op.f("pk_registry_external_identities")),
    )
    op.create_table(
        "status_feed",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("creator", sa.String(length=100), nullable=False),
        sa.Column("created", varsel.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("entry", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_status_feed_order_id_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_status_feed")),
        sa.UniqueConstraint("order_id", name=op.f("uq_status_feed_order_id")),
    )
    with op.batch_alter_table("status_feed", schema=None) as batch_op:
        batch_op.create_index("ix_status_feed_created", ["created"], unique=False)
        batch_op.create_index("ix_status_feed_creator_seq", ["creator", "seq"], unique=False)

    # Plain ALTER TABLE ADD COLUMN, never batch mode: on SQLite batch mode rebuilds a table (copy, DROP, rename), and
    # dropping orders would cascade to every notification and recipient row (ON DELETE CASCADE).
    for table in ("email_notifications", "sms_notifications", "order_recipients"):
        op.add_column(table, sa.Column("external_identity", sa.String(length=400), nullable=True))
    op.add_column(
        "orders", sa.Column("order_type", sa.String(length=12), server_default="Notification", nullable=False)
    )
    op.add_column("orders", sa.Column("chain_id", sa.Uuid(), nullable=True))
    op.add_column("orders", sa.Column("chain_position", sa.Integer(), nullable=True))
    op.add_column(
        "orders", sa.Column("use_stale_contact_information", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.create_index("ix_orders_chain_id", "orders", ["chain_id"], unique=False)
    op.add_column(
        "registry_persons", sa.Column("contact_confirmed", varsel.db.types.UtcDateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+), never batch mode, for the reason given in upgrade.
    op.drop_index("ix_orders_chain_id", table_name="orders")
    for column in ("use_stale_contact_information", "chain_position", "chain_id", "order_type"):
        op.drop_column("orders", column)
    op.drop_column("registry_persons", "contact_confirmed")
    for table in ("email_notifications", "sms_notifications", "order_recipients"):
        op.drop_column(table, "external_identity")
    op.drop_index("ix_status_feed_creator_seq", table_name="status_feed")
    op.drop_index("ix_status_feed_created", table_name="status_feed")
    op.drop_table("status_feed")
    op.drop_table("registry_external_identities")
    op.drop_table("order_chains")
