"""Applying the Alembic migrations that ship inside the package, on either database."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from varsel.db.engine import Database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    before = MigrationContext.configure(connection).get_current_revision()
    command.upgrade(config, revision)
    after = MigrationContext.configure(connection).get_current_revision()
    # Alembic's own lines are below the default log level (varsel.cli.configure_logging): this one says what changed.
    if after != before:
        log.info("database schema migrated from %s to %s", before or "empty", after)


async def migrate(database: Database, revision: str = "head") -> None:
    """Bring the schema up to `revision`. Safe to run at every start: it does nothing when already there."""
    async with database.engine.connect() as conn:
        conn = await conn.execution_options(varsel_write=True)
        if database.dialect == "postgresql":
            # Several processes may start at once; one migrates, the others wait and then find nothing to do.
            await conn.exec_driver_sql("SELECT pg_advisory_lock(7215001)")
        try:
            await conn.run_sync(_upgrade, revision)
            await conn.commit()
        except BaseException:
            # Roll the failed migration back first: unlocking inside the aborted transaction would fail and hide
            # the migration's own error.
            await conn.rollback()
            raise
        finally:
            if database.dialect == "postgresql":
                await conn.exec_driver_sql("SELECT pg_advisory_unlock(7215001)")
                await conn.commit()
