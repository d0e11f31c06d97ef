"""Shared fixtures: real databases (SQLite and PostgreSQL), the app over ASGI, a frozen clock, tokens."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from varsel.app import Varsel, build, create_app
from varsel.auth.keys import ensure_dev_key
from varsel.auth.tokens import sign_dev_token
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.migrate import migrate
from varsel.db.tables import metadata
from varsel.settings import Settings

# Tests call their apps by many names (varsel.test, t, schemathesis's testserver); the Host check has tests of its
# own (tests/test_trusted_hosts.py), which set trusted_hosts or clear this. Real servers started by tests inherit it.
os.environ.setdefault("VARSEL_TRUSTED_HOSTS", "*")

POSTGRES_URL = os.environ.get("VARSEL_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
# In CI a PostgreSQL run that cannot happen is a failure, not a skip.
REQUIRE_POSTGRES = os.environ.get("VARSEL_REQUIRE_POSTGRES", "") not in ("", "0", "false")

CREATE_SCOPE = "altinn:serviceowner/notifications.create"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def _postgres_reachable() -> str | None:
    try:
        conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}"
    await conn.close()
    return None


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (and xdist worker), dropped afterwards."""
    problem = asyncio.run(_postgres_reachable())
    if problem:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{problem} (VARSEL_REQUIRE_POSTGRES is set, so this is a failure)")
        pytest.skip(problem)
    name = f"varsel_test_{worker_id}_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        database = Database(make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False))
        await migrate(database)
        await database.dispose()

    async def drop() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(create())
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(drop())


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    workerinput = getattr(request.config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test: migrating once is much faster than once per test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"

    async def create() -> None:
        database = Database(f"sqlite+aiosqlite:///{path}")
        await migrate(database)
        # Closing the last connection checkpoints the WAL into the main file, so the file alone is a copy.
        await database.dispose()

    asyncio.run(create())
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "varsel.db"
        shutil.copy(template, target)
        assert not Path(f"{template}-wal").exists() or Path(f"{template}-wal").stat().st_size == 0
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """An empty, migrated database: a fresh SQLite file, or the session's PostgreSQL database emptied."""
    db = Database(database_url)
    if db.dialect == "postgresql":
        names = ", ".join(table.name for table in metadata.sorted_tables)
        async with db.transaction() as conn:
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))
    yield db
    await db.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": []})


@pytest.fixture
async def varsel(settings: Settings, database: Database, clock: FrozenClock) -> AsyncIterator[Varsel]:
    services = build(settings, clock=clock, database=database)
    yield services
    await services.http.aclose()


@pytest.fixture
async def client(varsel: Varsel) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(varsel)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test") as http:
        yield http


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    """token(org="ttd", scopes=[…], minutes=60, platform=False): a token signed with the development key."""
    key = ensure_dev_key(settings.dev_key_path)

    def make(org: str = "ttd", scopes: list[str] | None = None, minutes: int = 60, platform: bool = False) -> str:
        return sign_dev_token(
            key, org=org, scopes=[CREATE_SCOPE] if scopes is None else scopes, minutes=minutes, platform=platform
        )

    return make


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """auth(org="ttd"): request headers carrying a valid bearer token for that org."""

    def headers(org: str = "ttd", **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(org, **kwargs)}"}

    return headers
