"""The benchmark's databases: created and dropped per run, filled with the rows varsel itself writes.

Rows are built from varsel's own table definitions (varsel.db.tables) and written through its own Database class
(the same driver, pool and SQLite PRAGMAs). Orders made for the dispatch and scheduling benchmarks carry the SMS
sending-time policy "Anytime", so that the measurement does not depend on the hour it runs at (v1 orders are
"Daytime": 09:00-17:00 Oslo time).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from sqlalchemy import delete, func, insert, select, text, update

from varsel.db.engine import Database
from varsel.db.tables import (
    delivery_reports,
    email_notifications,
    notification_attempts,
    notification_fallbacks,
    order_chains,
    order_recipients,
    orders,
    registry_authorizations,
    registry_organizations,
    registry_persons,
    registry_user_contacts,
    sms_notifications,
    status_feed,
)
from varsel.ids import new_id
from varsel.shipments.repository import write_feed_entries

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SMS_BODY = "Du har en ny melding i innboksen din. Logg inn for å lese den."
EMAIL_SUBJECT = "Ny melding"
EMAIL_BODY = "Hei, du har en ny melding i innboksen din. Logg inn for å lese den.\n\nVennlig hilsen\nEtaten"
MOBILE = "+4799999999"
EMAIL = "ola.nordmann@example.com"
PIPELINE_TABLES = (
    status_feed,
    notification_attempts,
    delivery_reports,
    notification_fallbacks,
    email_notifications,
    sms_notifications,
)
# Emptied between steps, children first (SQLite deletes them one by one).
ORDER_TABLES = (*PIPELINE_TABLES, order_recipients, orders, order_chains)
REGISTRY_TABLES = (registry_persons, registry_organizations, registry_user_contacts, registry_authorizations)


def now() -> datetime:
    return datetime.now(UTC)


async def create_database(kind: str, name: str, folder: Path) -> str:
    """A new, empty database for this run; answers its SQLAlchemy URL."""
    if kind == "sqlite":
        path = folder / f"{name}.db"
        _remove_sqlite(folder, path, make_folder=True)
        return f"sqlite+aiosqlite:///{path}"
    database = f"varsel_bench_{name}"
    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"


async def drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        _remove_sqlite(path.parent, path)
        return
    database = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


def _remove_sqlite(folder: Path, path: Path, *, make_folder: bool = False) -> None:
    if make_folder:
        folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def drop_leftover_databases() -> list[str]:
    """Databases of an earlier run that was killed before it could clean up."""
    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'varsel_bench_%'")
        names = [r["datname"] for r in rows]
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    return names


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def identity_numbers(count: int) -> list[str]:
    """Synthetic 11-digit national identity numbers (varsel checks the length, not the check digits)."""
    return [f"2{i:010d}" for i in range(1, count + 1)]


def write_registry(path: Path, count: int) -> list[str]:
    """A registry import file of `count` persons, each with an email address and a mobile number, none reserved."""
    numbers = identity_numbers(count)
    with path.open("w", encoding="utf-8") as f:
        for i, number in enumerate(numbers):
            record = {
                "kind": "person",
                "nationalIdentityNumber": number,
                "name": f"Person {i}",
                "emailAddress": f"person{i}@example.com",
                "mobileNumber": f"+479{i % 10_000_000:07d}",
                "isReserved": False,
            }
            f.write(json.dumps(record) + "\n")
    return numbers


class BenchDb:
    """One benchmark database, reached through varsel's own Database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "sqlite" if url.startswith("sqlite") else "postgres"
        self.db = Database(url)

    async def close(self) -> None:
        await self.db.dispose()

    async def truncate(self) -> None:
        """Empty every order and notification table (the registry stays)."""
        async with self.db.transaction() as conn:
            if self.kind == "postgres":
                names = ", ".join(t.name for t in ORDER_TABLES)
                await conn.execute(text(f"TRUNCATE {names}"))
            else:
                for table in ORDER_TABLES:
                    await conn.execute(delete(table))
        # No VACUUM ANALYZE on PostgreSQL: TRUNCATE leaves the tables' statistics unknown, as in a new database,
        # and the planner then assumes a table of some pages. Statistics saying "empty" made every connection
        # that wrote first plan its foreign-key checks (a recipient's order, a notification's order) as scans of
        # the whole table, and keep those plans while the table grew to tens of thousands of rows: PostgreSQL
        # then spent most of the run scanning, and the grouped-insert ceiling measured 3,100 rows/s instead of
        # 18,000-19,000.
        if self.kind == "sqlite":
            async with self.db.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def analyze_registry(self) -> None:
        """Statistics for the registry just imported (PostgreSQL), as a registry in service has them; without them
        autovacuum would gather them at a moment of its choosing, in the middle of a measurement. Only the registry:
        statistics of the empty order tables would mislead the planner (see truncate)."""
        if self.kind != "postgres":
            return
        async with self.db.engine.connect() as conn:
            ac = await conn.execution_options(isolation_level="AUTOCOMMIT")
            names = ", ".join(t.name for t in REGISTRY_TABLES)
            await ac.execute(text(f"ANALYZE {names}"))

    async def count_orders(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(orders))).scalar_one())

    async def stored(self) -> dict[str, int]:
        """What intake stored: chains, orders by type, order recipients."""
        async with self.db.read() as conn:
            out = {"chains": int((await conn.execute(select(func.count()).select_from(order_chains))).scalar_one())}
            by_type = await conn.execute(select(orders.c.order_type, func.count()).group_by(orders.c.order_type))
            out.update({f"orders_{row[0]}": int(row[1]) for row in by_type})
            count = select(func.count()).select_from(order_recipients)
            out["order_recipients"] = int((await conn.execute(count)).scalar_one())
            return out

    # ------------------------------------------------------------ the status feed

    async def fill_feed(self, count: int, batch: int = 100) -> float:
        """`count` completed single-email orders (one Delivered notification each) and their feed entries, written as
        the workers write them: a transaction per `batch` orders that ends them and calls the shipments repository's
        writer (`write_feed_entries`) last. Answers the seconds the entries took to write."""
        moment = now()
        order_rows, notification_rows = [], []
        for i in range(count):
            order_id = new_id()
            row = _order_row(order_id, "email", moment, moment, "Completed")
            row["senders_reference"] = f"bench-feed-{i}"
            order_rows.append(row)
            notification_rows.append({
                "id": new_id(), "order_id": order_id, "creator": "ttd", "national_identity_number": None,
                "organization_number": None, "recipient_name": None, "is_reserved": None, "status": "Delivered",
                "status_changed": moment, "created": moment, "expiry": moment + timedelta(hours=48),
                "send_after": moment, "attempts": 1, "email_address": EMAIL, "subject": None, "body": None,
            })  # fmt: skip
        await self._insert_in_chunks(order_rows, notification_rows, email_notifications)
        ids = [row["id"] for row in order_rows]
        began = datetime.now(UTC).timestamp()
        for start in range(0, count, batch):
            async with self.db.transaction() as conn:
                await write_feed_entries(conn, ids[start : start + batch], now())
        took = datetime.now(UTC).timestamp() - began
        if self.kind == "postgres":
            # Statistics of a feed in service (autovacuum gathers them after the inserts); without them, autovacuum
            # would gather them at a moment of its choosing, in the middle of a measurement.
            async with self.db.engine.connect() as conn:
                ac = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await ac.execute(text("ANALYZE status_feed, orders, email_notifications"))
        return took

    async def count_feed(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(status_feed))).scalar_one())

    async def read_feed_through(self, page_size: int, duration_s: float) -> dict[str, Any]:
        """Below the API: the shipments repository's read_feed paging through the feed as the endpoint does (one
        read transaction per page), whole passes until `duration_s` has passed. Entries per second."""
        from varsel.shipments.repository import read_feed

        entries = pages = 0
        began = datetime.now(UTC).timestamp()
        while True:
            seq = 0
            while True:
                async with self.db.read() as conn:
                    page = await read_feed(conn, "ttd", seq, page_size)
                pages += 1
                if not page:
                    break
                entries += len(page)
                seq = page[-1].seq
            elapsed = datetime.now(UTC).timestamp() - began
            if elapsed >= duration_s:
                break
        return {"entries": entries, "pages": pages, "elapsed_s": round(elapsed, 3),
                "entries_per_s": round(entries / elapsed, 1)}  # fmt: skip

    # ------------------------------------------------------------ dispatch: notifications ready to send

    async def preload_notifications(self, channel: str, count: int, send_after: datetime) -> None:
        """`count` single-recipient orders, each Processed with one New notification due at `send_after`."""
        moment = now()
        order_rows, notification_rows = [], []
        table = sms_notifications if channel == "sms" else email_notifications
        for _ in range(count):
            order_id = new_id()
            order_rows.append(_order_row(order_id, channel, moment, moment, "Processed"))
            row: dict[str, Any] = {
                "id": new_id(),
                "order_id": order_id,
                "creator": "ttd",
                "national_identity_number": None,
                "organization_number": None,
                "recipient_name": None,
                "is_reserved": None,
                "status": "New",
                "status_changed": moment,
                "created": moment,
                "expiry": moment + timedelta(hours=48),
                "send_after": send_after,
                "attempts": 0,
            }
            if channel == "sms":
                row.update(mobile_number=MOBILE, body=None, segments=1)
            else:
                row.update(email_address=EMAIL, subject=None, body=None)
            notification_rows.append(row)
        await self._insert_in_chunks(order_rows, notification_rows, table)

    async def release(self, channel: str) -> datetime:
        """Make every preloaded notification due now, and tell listening workers (PostgreSQL)."""
        table = sms_notifications if channel == "sms" else email_notifications
        moment = now()
        async with self.db.transaction() as conn:
            await conn.execute(update(table).where(table.c.status == "New").values(send_after=moment))
            if self.kind == "postgres":
                await conn.execute(select(func.pg_notify(f"varsel_{channel}", "")))
        return moment

    async def pending(self, channel: str) -> int:
        table = sms_notifications if channel == "sms" else email_notifications
        async with self.db.read() as conn:
            result = await conn.execute(
                select(func.count()).select_from(table).where(table.c.status.in_(["New", "Sending"]))
            )
            return int(result.scalar_one())

    async def statuses(self, channel: str) -> dict[str, int]:
        table = sms_notifications if channel == "sms" else email_notifications
        async with self.db.read() as conn:
            result = await conn.execute(select(table.c.status, func.count()).group_by(table.c.status))
            return {row[0]: int(row[1]) for row in result}

    # ------------------------------------------------------------ scheduling lag: orders due in the future

    async def preload_orders(self, channel: str, send_times: Sequence[datetime]) -> None:
        """Registered single-recipient orders by address, one per send time (policy Anytime)."""
        moment = now()
        order_rows, recipient_rows = [], []
        for send_time in send_times:
            order_id = new_id()
            order_rows.append(_order_row(order_id, channel, moment, send_time, "Registered"))
            recipient_rows.append(
                {
                    "order_id": order_id,
                    "position": 0,
                    "email_address": EMAIL if channel == "email" else None,
                    "mobile_number": MOBILE if channel == "sms" else None,
                    "national_identity_number": None,
                    "organization_number": None,
                }
            )
        await self._insert_in_chunks(order_rows, recipient_rows, order_recipients)

    async def order_counts(self) -> dict[str, int]:
        async with self.db.read() as conn:
            result = await conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status))
            return {row[0]: int(row[1]) for row in result}

    async def requested_send_times(self, channel: str) -> dict[str, datetime]:
        """Notification id → its order's requested send time."""
        table = sms_notifications if channel == "sms" else email_notifications
        async with self.db.read() as conn:
            result = await conn.execute(
                select(table.c.id, orders.c.requested_send_time).join(orders, orders.c.id == table.c.order_id)
            )
            return {str(row[0]): row[1] for row in result}

    async def _insert_in_chunks(
        self, order_rows: list[dict[str, Any]], child_rows: list[dict[str, Any]], child_table: Any
    ) -> None:
        # One transaction: workers see all of it at once or none of it.
        async with self.db.transaction() as conn:
            for start in range(0, len(order_rows), 5_000):
                await conn.execute(insert(orders), order_rows[start : start + 5_000])
                await conn.execute(insert(child_table), child_rows[start : start + 5_000])


def _order_row(order_id: UUID, channel: str, created: datetime, send_time: datetime, status: str) -> dict[str, Any]:
    return {
        "id": order_id,
        "creator": "ttd",
        "senders_reference": None,
        "notification_channel": "Sms" if channel == "sms" else "Email",
        "requested_send_time": send_time,
        "created": created,
        "ignore_reservation": None,
        "resource_id": None,
        "resource_action": None,
        "condition_endpoint": None,
        "status": status,
        "status_changed": created,
        "email_from_address": "noreply@varsel.local" if channel == "email" else None,
        "email_subject": EMAIL_SUBJECT if channel == "email" else None,
        "email_body": EMAIL_BODY if channel == "email" else None,
        "email_content_type": "Plain" if channel == "email" else None,
        "sms_sender": "Varsel" if channel == "sms" else None,
        "sms_body": SMS_BODY if channel == "sms" else None,
        "sms_sending_time_policy": "Anytime",
        "process_after": send_time,
        "claimed_by": None,
        "claimed_until": None,
        "processing_attempts": 0 if status == "Registered" else 1,
    }
