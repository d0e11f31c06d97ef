"""Shared by the shipment tests: orders placed through v1, and orders ended directly in the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import insert, select

from varsel.db.engine import Database
from varsel.db.tables import orders, status_feed
from varsel.ids import new_id
from varsel.shipments.repository import write_feed_entries

V1 = "/notifications/api/v1"
FUTURE = "/notifications/api/v1/future"
Auth = Callable[..., dict[str, str]]


async def place(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, Any], path: str = "/orders/email", org: str = "ttd"
) -> str:
    response = await client.post(f"{V1}{path}", json=body, headers=auth(org))
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


def email_body(*addresses: str, **extra: Any) -> dict[str, Any]:
    return {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": a} for a in addresses], **extra}


async def ended_orders(
    database: Database,
    creator: str,
    count: int,
    now: datetime,
    status: str = "Completed",
    *,
    with_entries: bool = True,
    **values: Any,
) -> list[UUID]:
    """`count` orders of `creator` already in `status` (no notifications), in id order, each with its feed entry
    unless `with_entries` is false."""
    ids = sorted(new_id() for _ in range(count))
    rows = [
        {
            "id": order_id,
            "creator": creator,
            "senders_reference": f"ref-{n}",
            "notification_channel": "Email",
            "requested_send_time": now,
            "created": now,
            "status": status,
            "status_changed": now,
            "process_after": now,
            **values,
        }
        for n, order_id in enumerate(ids)
    ]
    async with database.transaction() as conn:
        await conn.execute(insert(orders), rows)
        if with_entries:
            await write_feed_entries(conn, ids, now)
    return ids


async def feed_rows(database: Database) -> list[tuple[int, UUID]]:
    async with database.read() as conn:
        result = await conn.execute(select(status_feed.c.seq, status_feed.c.order_id).order_by(status_feed.c.seq))
        return [(int(row.seq), row.order_id) for row in result]
