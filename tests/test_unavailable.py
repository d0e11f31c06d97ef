"""When the database cannot be reached the API says 503 with Retry-After, never 500 and never a false 202."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database, database_unavailable
from varsel.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


async def test_unreachable_postgresql_answers_503(
    clock: FrozenClock, auth: Callable[..., dict[str, str]], settings: Settings
) -> None:
    database = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/varsel")
    app = create_app(build(settings, clock=clock, database=database))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
        body = {"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}]}
        created = await client.post("/notifications/api/v1/orders/email", json=body, headers=auth())
        read = await client.get("/notifications/api/v1/orders/01a20722-6c4e-7b0b-a3e6-1b3e0dd1b0f2", headers=auth())
    await database.dispose()
    for response in (created, read):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        assert response.json()["detail"] == "The database is unavailable; try again shortly."


async def test_a_locked_sqlite_database_answers_503_and_a_broken_statement_500(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(DBAPIError) as broken:
            async with database.transaction() as conn:
                await conn.execute(text("SELECT * FROM no_such_table"))
        assert not database_unavailable(broken.value)
        # Hold the write lock from a second engine with no busy timeout to wait on.
        locker = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
        async with locker.transaction() as held:
            await held.execute(text("CREATE TABLE t (x INTEGER)"))
            async with database.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA busy_timeout=0")
                with pytest.raises(DBAPIError) as locked:
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
        assert database_unavailable(locked.value)
        await locker.dispose()
    finally:
        await database.dispose()
