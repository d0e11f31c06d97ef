"""The migrations build exactly the schema the code declares, on both databases, and timestamps stay UTC."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import StatementError

from varsel.db.engine import Database
from varsel.db.migrate import alembic_config, migrate
from varsel.db.tables import metadata, orders, sms_notifications


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrations_build_the_declared_schema(database: Database) -> None:
    async with database.read() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_migrating_again_changes_nothing(database: Database) -> None:
    await migrate(database)
    async with database.read() as conn:
        assert await conn.run_sync(_diff) == []
        revision = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    assert revision is not None


async def test_downgrade_to_nothing_and_up_again(database: Database) -> None:
    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    async with database.transaction() as conn:
        await conn.run_sync(downgrade)
    async with database.read() as conn:
        leftover = await conn.run_sync(lambda c: [t for t in c.dialect.get_table_names(c) if t != "alembic_version"])
    assert leftover == []
    await migrate(database)
    async with database.read() as conn:
        assert await conn.run_sync(_diff) == []


def _order_row(**overrides: Any) -> dict[str, Any]:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "creator": "ttd",
        "notification_channel": "Email",
        "requested_send_time": now,
        "created": now,
        "status": "Registered",
        "status_changed": now,
        "process_after": now,
    }
    row.update(overrides)
    return row


async def test_naive_timestamps_are_refused(database: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime refused"):
        async with database.transaction() as conn:
            await conn.execute(insert(orders).values(**_order_row(created=datetime(2026, 3, 2, 10, 0))))


async def test_timestamps_come_back_as_the_same_instant_in_utc(database: Database) -> None:
    oslo_winter = timezone(timedelta(hours=1))
    sent = datetime(2026, 3, 2, 11, 30, 15, 123456, tzinfo=oslo_winter)
    row = _order_row(requested_send_time=sent)
    async with database.transaction() as conn:
        await conn.execute(insert(orders).values(**row))
    async with database.read() as conn:
        stored = (await conn.execute(select(orders.c.requested_send_time).where(orders.c.id == row["id"]))).scalar_one()
    assert stored == sent
    assert stored.utcoffset() == timedelta(0)
    assert stored.hour == 10


async def test_timestamps_sort_chronologically(database: Database) -> None:
    base = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    # Written in other offsets, so text order of what was sent would differ from time order.
    moments = [
        (base + timedelta(minutes=50)).astimezone(timezone(timedelta(hours=-5))),
        (base + timedelta(minutes=10)).astimezone(timezone(timedelta(hours=9))),
        (base + timedelta(minutes=30)).astimezone(UTC),
    ]
    async with database.transaction() as conn:
        for moment in moments:
            await conn.execute(insert(orders).values(**_order_row(process_after=moment)))
    async with database.read() as conn:
        stored = (await conn.execute(select(orders.c.process_after).order_by(orders.c.process_after))).scalars().all()
    assert stored == sorted(moments)


async def test_notifications_made_before_fair_claims_take_their_orders_creator(database: Database) -> None:
    def back_to_0003(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")

    async with database.transaction() as conn:
        await conn.run_sync(back_to_0003)
    order = _order_row(creator="skd")
    now = order["created"]
    async with database.transaction() as conn:
        await conn.execute(insert(orders).values(**order))
        # The columns of revision 0003: no creator yet.
        await conn.execute(
            insert(sms_notifications).values(
                id=uuid.uuid4(), order_id=order["id"], status="New", status_changed=now, created=now, expiry=now,
                send_after=now,
            )
        )  # fmt: skip
    await migrate(database)
    async with database.read() as conn:
        assert (await conn.execute(select(sms_notifications.c.creator))).scalars().all() == ["skd"]
        assert await conn.run_sync(_diff) == []
