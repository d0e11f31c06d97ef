"""SQL of delivery reports and notification attempts. Functions run inside a transaction their caller owns."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import delivery_reports, notification_attempts

PENDING = "pending"
DEAD = "dead"


async def find_notification(
    conn: AsyncConnection, table: Table, notification_id: UUID | None, provider_reference: str | None
) -> Row[Any] | None:
    """The notification a report names: by our id when the report carries it, else by the provider's id."""
    chosen = select(table.c.id, table.c.order_id, table.c.status, table.c.expiry)
    found: Any = None
    if notification_id is not None:
        found = (await conn.execute(chosen.where(table.c.id == notification_id))).first()
    if found is None and provider_reference:
        found = (await conn.execute(chosen.where(table.c.provider_reference == provider_reference).limit(1))).first()
    return found  # type: ignore[no-any-return]


async def known_references(
    conn: AsyncConnection, table: Table, notification_ids: Collection[UUID], provider_references: Collection[str]
) -> tuple[set[UUID], set[str]]:
    """Which of these notification ids and provider references name a notification of `table`: two queries for a
    batch of reports, so that those naming nothing (a flood of unknown references, say) cost no query each."""
    ids: set[UUID] = set()
    references: set[str] = set()
    if notification_ids:
        found = await conn.execute(select(table.c.id).where(table.c.id.in_(list(notification_ids))))
        ids = set(found.scalars())
    if provider_references:
        found = await conn.execute(
            select(table.c.provider_reference).where(table.c.provider_reference.in_(list(provider_references)))
        )
        references = set(found.scalars())
    return ids, references


async def insert_reports(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(delivery_reports), list(rows))


async def update_report(conn: AsyncConnection, report_id: UUID, values: dict[str, Any]) -> None:
    await conn.execute(update(delivery_reports).where(delivery_reports.c.id == report_id).values(**values))


async def tried_again(conn: AsyncConnection, report_ids: Sequence[UUID], values: dict[str, Any]) -> None:
    """Pending reports tried again alike (still unmatched, or dead): one statement for all, an attempt counted."""
    if report_ids:
        await conn.execute(
            update(delivery_reports)
            .where(delivery_reports.c.id.in_(list(report_ids)))
            .values(attempts=delivery_reports.c.attempts + 1, **values)
        )


async def claim_pending(conn: AsyncConnection, now: datetime, limit: int) -> list[Row[Any]]:
    """Pending reports due for another try, locked so that two workers do not both retry one."""
    result = await conn.execute(
        select(delivery_reports)
        .where(and_(delivery_reports.c.state == PENDING, delivery_reports.c.next_attempt <= now))
        .order_by(delivery_reports.c.next_attempt)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(result)


async def next_pending(conn: AsyncConnection) -> datetime | None:
    result = await conn.execute(
        select(func.min(delivery_reports.c.next_attempt)).where(delivery_reports.c.state == PENDING)
    )
    moment: datetime | None = result.scalar()
    return moment


async def reports_in_state(conn: AsyncConnection, state: str, limit: int) -> list[Row[Any]]:
    result = await conn.execute(
        select(delivery_reports)
        .where(delivery_reports.c.state == state)
        .order_by(delivery_reports.c.received)
        .limit(limit)
    )
    return list(result)


async def reports_page(
    conn: AsyncConnection, state: str, before: tuple[datetime, UUID] | None, limit: int
) -> list[Row[Any]]:
    """Reports in a state, newest first, after a keyset cursor (the last row's received and id) when given: a page
    reads `limit` rows by the (state, received) index however many there are."""
    condition: Any = delivery_reports.c.state == state
    if before is not None:
        received, report_id = before
        condition = and_(
            condition,
            or_(
                delivery_reports.c.received < received,
                and_(delivery_reports.c.received == received, delivery_reports.c.id < report_id),
            ),
        )
    result = await conn.execute(
        select(delivery_reports)
        .where(condition)
        .order_by(delivery_reports.c.received.desc(), delivery_reports.c.id.desc())
        .limit(limit)
    )
    return list(result)


async def revive_dead(conn: AsyncConnection, ids: Sequence[UUID] | None, now: datetime, retry_until: datetime) -> int:
    """Dead reports (all, or these) become pending again, due now."""
    condition: Any = delivery_reports.c.state == DEAD
    if ids is not None:
        condition = and_(condition, delivery_reports.c.id.in_(list(ids)))
    result = await conn.execute(
        update(delivery_reports)
        .where(condition)
        .values(state=PENDING, next_attempt=now, retry_until=retry_until, resolved=None)
    )
    return int(result.rowcount)


async def insert_attempts(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(notification_attempts), list(rows))


async def attempts_of(conn: AsyncConnection, notification_id: UUID) -> list[Row[Any]]:
    result = await conn.execute(
        select(notification_attempts)
        .where(notification_attempts.c.notification_id == notification_id)
        .order_by(notification_attempts.c.started, notification_attempts.c.attempt)
    )
    return list(result)


async def reports_of(conn: AsyncConnection, notification_id: UUID, reference: str) -> list[Row[Any]]:
    result = await conn.execute(
        select(delivery_reports)
        .where(or_(delivery_reports.c.notification_id == notification_id, delivery_reports.c.reference == reference))
        .order_by(delivery_reports.c.received)
    )
    return list(result)
