"""The feed has no blind spot (PostgreSQL): writers that end orders concurrently and commit out of order, while a
reader pages by seq through the API without pause. Every entry is served, none is skipped, each within a second of
its commit. Without the feed's lock (varsel.shipments.repository) a writer that took a lower seq can commit after a
reader moved past it, and this test fails."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import NOW
from tests.shipments.helpers import FUTURE, Auth, ended_orders
from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import metadata
from varsel.settings import Settings
from varsel.shipments.repository import write_feed_entries

pytestmark = pytest.mark.postgres_only

WRITERS = 8
ORDERS = 120
DEADLINE_SECONDS = 60.0


@pytest.fixture
async def postgres(postgres_url: str, tmp_path: Path) -> AsyncIterator[Varsel]:
    database = Database(postgres_url)
    async with database.transaction() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} CASCADE"))
    varsel = build(Settings(data_dir=tmp_path / "var"), clock=FrozenClock(NOW), database=database)
    yield varsel
    await varsel.close()


async def test_a_reader_paging_by_seq_never_skips_an_entry_that_commits_late(postgres: Varsel, auth: Auth) -> None:
    database = postgres.database
    # Orders already Completed, their entries not yet written: the writers end them as the pipeline would.
    order_ids = await ended_orders(database, "ttd", ORDERS, NOW, with_entries=False)
    queue: asyncio.Queue[UUID] = asyncio.Queue()
    for order_id in order_ids:
        queue.put_nowait(order_id)
    committed: dict[UUID, float] = {}
    served: dict[UUID, float] = {}
    rng = random.Random(15)

    async def writer() -> None:
        while not queue.empty():
            order_id = queue.get_nowait()
            async with database.transaction() as conn:
                await asyncio.sleep(rng.uniform(0, 0.01))  # the transaction's other work
                await write_feed_entries(conn, [order_id], NOW)
                await asyncio.sleep(rng.uniform(0, 0.02))  # a commit that takes its time
            committed[order_id] = time.monotonic()

    async def reader(client: httpx.AsyncClient) -> None:
        seq = 0
        while len(served) < ORDERS:
            # Whether every writer had committed before this page was asked for: a page asked for earlier may be read
            # from a snapshot older than the last commit, so its being empty ends nothing.
            all_committed = writers_done.is_set()
            response = await client.get(f"{FUTURE}/shipment/feed?seq={seq}&pageSize=7", headers=auth())
            assert response.status_code == 200
            for entry in response.json():
                assert entry["sequenceNumber"] > seq
                seq = entry["sequenceNumber"]
                served[UUID(entry["shipmentId"])] = time.monotonic()
            if all_committed and not response.json():
                break  # every writer committed and a page came back empty: what is missed now stays missed
            await asyncio.sleep(0.002)

    writers_done = asyncio.Event()

    async def write_all() -> None:
        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        writers_done.set()

    transport = httpx.ASGITransport(app=create_app(postgres))
    async with httpx.AsyncClient(transport=transport, base_url="http://varsel.test") as client:
        await asyncio.wait_for(asyncio.gather(write_all(), reader(client)), DEADLINE_SECONDS)

    skipped = set(order_ids) - set(served)
    assert not skipped, f"{len(skipped)} of {ORDERS} entries were skipped by a reader paging by seq"
    late = {order_id: served[order_id] - committed[order_id] for order_id in order_ids}
    assert max(late.values()) < 1.0, f"an entry was served {max(late.values()):.2f} s after its commit"
