"""Alembic environment: always run through varsel.db.migrate with a connection handed in."""

from __future__ import annotations

from alembic import context

from varsel.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `varsel migrate`, which hands Alembic a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
