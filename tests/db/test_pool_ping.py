"""PostgreSQL connections are pinged before use only after sitting idle (varsel.db.engine._ping_when_idle): an idle
connection the server dropped is replaced unseen; one used a moment ago is used as it is, and if the server dropped
it, the failure is an outage (503 / retry), after which the pool's connections are fresh."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from varsel.db.engine import Database, database_unavailable


async def _backend_pid(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(url: str, pid: int) -> None:
    killer = Database(url)
    try:
        async with killer.transaction() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()
    finally:
        await killer.dispose()


async def test_an_idle_connection_the_server_dropped_is_replaced_unseen(postgres_url: str) -> None:
    db = Database(postgres_url, ping_after_idle_seconds=0.0)  # every connection counts as idle: always pinged
    try:
        dropped = await _backend_pid(db)
        await _terminate(postgres_url, dropped)
        assert await _backend_pid(db) != dropped  # no error: the ping found it gone and a new one was made
    finally:
        await db.dispose()


async def test_a_connection_used_a_moment_ago_is_not_pinged(postgres_url: str) -> None:
    db = Database(postgres_url, ping_after_idle_seconds=3600.0)
    try:
        dropped = await _backend_pid(db)
        await _terminate(postgres_url, dropped)
        with pytest.raises(DBAPIError) as raised:
            await _backend_pid(db)
        assert database_unavailable(raised.value)  # an outage: 503 at the API, a retry in a worker
        assert await _backend_pid(db) != dropped  # the next use gets a fresh connection
    finally:
        await db.dispose()


async def test_the_connection_used_last_is_used_next(postgres_url: str) -> None:
    """LIFO: under a light load one connection does the work and the others go idle (and get pinged when next used),
    instead of each being cycled through and kept just busy enough never to be pinged nor closed."""
    db = Database(postgres_url)
    try:
        async with db.read() as first, db.read() as second:
            pids = {
                int((await first.execute(text("SELECT pg_backend_pid()"))).scalar_one()),
                int((await second.execute(text("SELECT pg_backend_pid()"))).scalar_one()),
            }
        assert len(pids) == 2
        assert len({await _backend_pid(db) for _ in range(5)}) == 1
    finally:
        await db.dispose()
