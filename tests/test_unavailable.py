"""When the database cannot be reached the API says 503 with Retry-After, never 500 and never a false 202."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
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


async def test_a_postgresql_that_refuses_new_connections_answers_503_on_every_kind_of_order(
    clock: FrozenClock, auth: Callable[..., dict[str, str]], settings: Settings, postgres_url: str
) -> None:
    """The server answers, but refuses a new connection with an error of its own (here 53300, too many connections
    for the role; at a restart 57P03): an outage, so 503 with Retry-After, on a v1 order (written in a transaction)
    and on an instant order (written by one statement on a connection taken straight from the pool) alike."""
    role = f"varsel_refused_{uuid.uuid4().hex[:8]}"
    admin = Database(postgres_url)
    async with admin.transaction() as conn:
        await conn.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))
    database = Database(make_url(postgres_url).set(username=role).render_as_string(hide_password=False))
    varsel = build(settings, clock=clock, database=database)
    try:
        transport = httpx.ASGITransport(app=create_app(varsel))
        async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
            v1 = {"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}]}
            instant = {
                "idempotencyId": "refused-1",
                "recipientSms": {
                    "phoneNumber": "+4799999999",
                    "timeToLiveInSeconds": 300,
                    "smsSettings": {"body": "b"},
                },
            }
            answers = [
                await client.post("/notifications/api/v1/orders/email", json=v1, headers=auth()),
                await client.post("/notifications/api/v1/future/orders/instant/sms", json=instant, headers=auth()),
            ]
    finally:
        await varsel.http.aclose()
        await database.dispose()
        async with admin.transaction() as conn:
            await conn.execute(text(f'DROP ROLE "{role}"'))
        await admin.dispose()
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
