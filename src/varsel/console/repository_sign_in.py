"""SQL of console sign-in: the one-time links. Functions run inside a transaction their caller owns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import console_sign_in_links as links


async def insert_link(
    conn: AsyncConnection, token_hash: str, org: str | None, admin: bool, created: datetime, expires: datetime
) -> None:
    await conn.execute(
        insert(links).values(token_hash=token_hash, org=org, admin=admin, created=created, expires=expires)
    )


async def use_link(conn: AsyncConnection, token_hash: str, now: datetime) -> Row[Any] | None:
    """Marks the link used and answers whom it signs in, in one statement: of two requests using one link at once,
    only one finds it unused. None when the link is unknown, used already or expired."""
    result = await conn.execute(
        update(links)
        .where(and_(links.c.token_hash == token_hash, links.c.used.is_(None), links.c.expires > now))
        .values(used=now)
        .returning(links.c.org, links.c.admin)
    )
    return result.first()


async def delete_expired(conn: AsyncConnection, before: datetime) -> int:
    """Links expired before this moment (used or not) are of no more use: each new link clears them."""
    result = await conn.execute(delete(links).where(links.c.expires < before))
    return int(result.rowcount)
