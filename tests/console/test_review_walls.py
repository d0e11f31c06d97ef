"""Review (#17) of the console's walls: the session key kept in the data folder must hold a key (an empty one would
sign sessions anyone can forge), and two POSTs racing with one sign-in link sign in once (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.console.conftest import ConsoleServer, http_client
from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.console.principal import Principal
from varsel.console.sessions import SESSION_COOKIE, ensure_secret_key
from varsel.console.sign_in import SignInLinks
from varsel.db.engine import Database
from varsel.settings import Settings

# ---------------------------------------------------------------- the kept session key


async def test_an_empty_kept_key_file_is_refused_not_used(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    # Left empty (a process stopped between creating the file and writing the key, or another process reading it in
    # that moment): signing with "" would let anyone make an admin session.
    key_file = settings.data_dir / "console-secret-key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text("")
    services = build(settings, clock=clock, database=database)
    try:
        with pytest.raises(ValueError, match="no usable key"):
            create_app(services)
    finally:
        await services.http.aclose()


async def test_a_new_kept_key_is_whole_and_the_owners_alone(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    services = build(settings, clock=clock, database=database)
    create_app(services)
    key_file = settings.data_dir / "console-secret-key"
    assert len(key_file.read_text()) >= 32
    assert key_file.stat().st_mode & 0o777 == 0o600
    # Only the key file is left in the folder (the draft it was linked from is gone).
    assert [p.name for p in key_file.parent.iterdir() if p.name.startswith("console-secret-key")] == [key_file.name]
    await services.http.aclose()


# ---------------------------------------------------------------- one link, two racing POSTs


async def test_racing_posts_of_one_link_sign_in_once(console: ConsoleServer) -> None:
    token = console.link("ttd").rsplit("/", 1)[1]
    clients = [http_client(console) for _ in range(6)]
    try:
        answers = await asyncio.gather(*(c.post(f"/console/sign-in/link/{token}") for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [303, 403, 403, 403, 403, 403], statuses
    assert sum(SESSION_COOKIE in a.cookies for a in answers) == 1


def test_a_key_is_kept_where_the_file_system_has_no_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: object, target: object) -> None:
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    key_file = tmp_path / "data" / "console-secret-key"
    key = ensure_secret_key(key_file)
    assert len(key) >= 32
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert ensure_secret_key(key_file) == key
    assert [p.name for p in key_file.parent.iterdir()] == [key_file.name]


async def test_one_link_used_at_once_from_two_processes_signs_in_once(
    database: Database, database_url: str, clock: FrozenClock
) -> None:
    # Two engines, as two API processes have: on SQLite the process's own turn-taking does not order them, only
    # the database does.
    other = Database(database_url)
    try:
        mine, theirs = (SignInLinks(db, clock, timedelta(minutes=15)) for db in (database, other))
        for _ in range(10):
            token = await mine.create(Principal(org="ttd", admin=False))
            used = await asyncio.gather(mine.use(token), theirs.use(token), mine.use(token), theirs.use(token))
            assert sum(principal is not None for principal in used) == 1, used
    finally:
        await other.dispose()


async def test_a_short_configured_key_is_warned_about(
    settings: Settings, database: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    for key, warned in (("hemmelig", True), ("k" * 32, False)):
        caplog.clear()
        console = settings.console.model_copy(update={"secret_key": SecretStr(key)})
        services = build(settings.model_copy(update={"console": console}), clock=clock, database=database)
        with caplog.at_level(logging.WARNING, logger="varsel.console"):
            create_app(services)
        await services.http.aclose()
        assert ("VARSEL_CONSOLE__SECRET_KEY is 8 characters long" in caplog.text) is warned, caplog.text
        assert key not in caplog.text
