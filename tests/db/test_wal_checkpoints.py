"""SQLite's WAL is copied into the database file by a background checkpointer of each long-running process, not by
whichever commit takes it past SQLite's default limit: every connection carries the high backstop limit, the
checkpointer copies what was written, its loop runs until the database is disposed, and the API app starts it."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite

from tests.conftest import NOW
from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import SQLITE_PRAGMAS, SQLITE_WAL_AUTOCHECKPOINT_PAGES, Database
from varsel.db.sqlite_direct import DirectWrite, SqliteWriter, WalCheckpointer
from varsel.settings import Settings


@pytest.fixture
async def sqlite_database(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Database]:
    target = tmp_path / "wal.db"
    shutil.copy(sqlite_template, target)
    database = Database(f"sqlite+aiosqlite:///{target}")
    yield database
    await database.dispose()


def _size(path: str) -> int:
    return Path(path).stat().st_size


def _fill(write: DirectWrite) -> None:
    write.fetch("CREATE TABLE IF NOT EXISTS filler (id TEXT PRIMARY KEY, body TEXT)", ())
    for _ in range(200):
        write.fetch("INSERT INTO filler VALUES (?, ?)", (uuid.uuid4().hex, "x" * 2000))


async def test_every_connection_has_the_backstop_limit(sqlite_database: Database) -> None:
    async with sqlite_database.read() as conn:
        assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == SQLITE_WAL_AUTOCHECKPOINT_PAGES
    limit = await sqlite_database.sqlite_write(lambda write: write.fetch("PRAGMA wal_autocheckpoint", ()))
    assert limit == [(SQLITE_WAL_AUTOCHECKPOINT_PAGES,)]


async def test_the_checkpointer_copies_what_was_written(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    writer = SqliteWriter(path, sqlite.dialect(), SQLITE_PRAGMAS)
    checkpointer = WalCheckpointer(path, SQLITE_PRAGMAS, every=3600)
    try:
        await writer.run(_fill)
        busy, frames, copied = await checkpointer.checkpoint()
        assert (busy, copied) == (0, frames)
        assert frames > 100
        # Now in the database file itself.
        assert _size(path) > 200 * 2000
    finally:
        await checkpointer.close()
        await writer.close()


async def test_the_loop_runs_until_the_database_is_disposed(sqlite_database: Database, tmp_path: Path) -> None:
    path = str(sqlite_database.engine.url.database)
    before = _size(path)
    sqlite_database.start_wal_checkpoints()
    sqlite_database.start_wal_checkpoints()  # a second start changes nothing
    await sqlite_database.sqlite_write(_fill)
    for _ in range(100):
        if _size(path) > before + 200 * 2000:
            break
        await asyncio.sleep(0.05)
    assert _size(path) > before + 200 * 2000, "the background checkpoint copied the WAL into the file"
    checkpointer = sqlite_database._checkpointer
    assert checkpointer is not None
    await sqlite_database.dispose()
    assert sqlite_database._checkpointer is None
    with pytest.raises(RuntimeError):
        await checkpointer.checkpoint()  # its thread is gone


async def test_the_api_app_starts_the_checkpointer(sqlite_database: Database, tmp_path: Path) -> None:
    varsel = build(Settings(data_dir=tmp_path / "var"), clock=FrozenClock(NOW), database=sqlite_database)
    app = create_app(varsel)
    async with app.router.lifespan_context(app):
        assert sqlite_database._checkpointer is not None
    assert sqlite_database._checkpointer is None  # closed with the database at shutdown


def test_a_checkpoint_leaves_the_data_readable_without_the_wal(tmp_path: Path) -> None:
    async def write_and_checkpoint() -> None:
        path = str(tmp_path / "r.db")
        writer = SqliteWriter(path, sqlite.dialect(), SQLITE_PRAGMAS)
        checkpointer = WalCheckpointer(path, SQLITE_PRAGMAS, every=3600)
        await writer.run(_fill)
        await checkpointer.checkpoint()
        await checkpointer.close()
        await writer.close()

    asyncio.run(write_and_checkpoint())
    # The file alone, copied without its -wal: every row is in it.
    shutil.copy(tmp_path / "r.db", tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("SELECT count(*) FROM filler").fetchone() == (200,)
