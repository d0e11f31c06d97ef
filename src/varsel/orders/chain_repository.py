"""SQL for v2 order chains: the chain row under its idempotency key, and the orders that make it up. Functions run
inside a transaction their caller owns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel.db.tables import order_chains, orders
from varsel.orders import repository
from varsel.orders.drafts import ChainDraft, OrderDraft
from varsel.orders.vocabulary import IdempotencyFamily


@dataclass(frozen=True)
class Shipment:
    order_id: UUID
    senders_reference: str | None


@dataclass(frozen=True)
class ChainReceipt:
    """What a chain's creator is told of it: its id, the main order, its reminders in request order."""

    chain_id: UUID
    main: Shipment
    reminders: tuple[Shipment, ...]


def idempotency_hash(idempotency_id: str) -> str:
    """The key as the unique index holds it: SHA-256 of its UTF-8, in hex (a key may be of any length)."""
    return hashlib.sha256(idempotency_id.encode("utf-8", "surrogatepass")).hexdigest()


def chain_row(
    chain_id: UUID, creator: str, family: IdempotencyFamily, draft: ChainDraft, now: datetime
) -> dict[str, Any]:
    return {
        "id": chain_id,
        "creator": creator,
        "family": family.value,
        "idempotency_id": draft.idempotency_id,
        "idempotency_hash": idempotency_hash(draft.idempotency_id),
        "created": now,
        "dialogporten_association": draft.dialogporten_association,
    }


def chain_order_row(
    order_id: UUID, creator: str, draft: OrderDraft, now: datetime, chain_id: UUID, position: int
) -> dict[str, Any]:
    """An orders row of a chain: an ordinary order, with its type, place in the chain and v2 settings."""
    row = repository.order_row(order_id, creator, draft, now)
    row.update(
        order_type=draft.order_type.value,
        sms_sending_time_policy=draft.sms_sending_time_policy.value,
        use_stale_contact_information=draft.use_stale_contact_information,
        chain_id=chain_id,
        chain_position=position,
    )
    return row


def chain_recipient_rows(order_id: UUID, draft: OrderDraft) -> list[dict[str, Any]]:
    rows = repository.recipient_rows(order_id, draft)
    for row, spec in zip(rows, draft.recipients, strict=True):
        row["external_identity"] = spec.external_identity
    return rows


_INSERT_CHAINS = {
    name: dialect.insert(order_chains)
    .on_conflict_do_nothing(index_elements=["creator", "family", "idempotency_hash"])
    .returning(order_chains.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


async def insert_chains(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[UUID]:
    """Insert the chains whose keys are free; answer the ids of those inserted. A chain whose key another holds (one
    committed, one of these rows before it, or on PostgreSQL a concurrent insert that then commits: it is waited
    for) is left out, never a unique violation."""
    result = await conn.execute(_INSERT_CHAINS[conn.dialect.name], rows)
    return {row.id for row in result}


async def insert_chain_orders(
    conn: AsyncConnection, order_rows: list[dict[str, Any]], recipients: list[dict[str, Any]]
) -> None:
    await repository.insert_orders(conn, order_rows, recipients)


async def _receipt(conn: AsyncConnection, chain_id: UUID, creator: str) -> ChainReceipt | None:
    rows = (
        await conn.execute(
            select(orders.c.id, orders.c.senders_reference, orders.c.chain_position)
            .where(and_(orders.c.chain_id == chain_id, orders.c.creator == creator))
            .order_by(orders.c.chain_position)
        )
    ).all()
    if not rows or rows[0].chain_position != 0:
        return None
    shipments = [Shipment(row.id, row.senders_reference) for row in rows]
    return ChainReceipt(chain_id, shipments[0], tuple(shipments[1:]))


async def find_chain(
    conn: AsyncConnection, creator: str, family: IdempotencyFamily, idempotency_id: str
) -> ChainReceipt | None:
    """The creator's chain under this key in this family, or None."""
    chain_id = (
        await conn.execute(
            select(order_chains.c.id).where(
                and_(
                    order_chains.c.creator == creator,
                    order_chains.c.family == family.value,
                    order_chains.c.idempotency_hash == idempotency_hash(idempotency_id),
                )
            )
        )
    ).scalar_one_or_none()
    return None if chain_id is None else await _receipt(conn, chain_id, creator)


async def get_chain(conn: AsyncConnection, chain_id: UUID, creator: str) -> ChainReceipt | None:
    """The creator's chain, or None: another creator's chain is as good as absent."""
    found = (
        await conn.execute(
            select(order_chains.c.id).where(and_(order_chains.c.id == chain_id, order_chains.c.creator == creator))
        )
    ).scalar_one_or_none()
    return None if found is None else await _receipt(conn, chain_id, creator)
