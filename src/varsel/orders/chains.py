"""v2 order chains: a main order and its reminders, each an ordinary order, created once per idempotency key.

The look-ups happen before the transaction opens (a registry may be remote); the chain and its orders are written
in one transaction, which a concurrent first request with the same key cannot break: the chain's insert yields to
the key's unique index, the loser rolls back and answers the winner's receipt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.dispatch import repository as dispatch_repository
from varsel.ids import new_id
from varsel.notifications.statuses import OrderStatus
from varsel.observability import Telemetry
from varsel.orders import chain_repository
from varsel.orders.chain_repository import ChainReceipt
from varsel.orders.drafts import ChainDraft, OrderDraft
from varsel.orders.vocabulary import IdempotencyFamily
from varsel.recipients.lookup import LookupResult, Outcome
from varsel.shipments import repository as shipment_repository
from varsel.shipments.repository import Shipment


class MissingContactInformation(Exception):
    """A looked-up recipient of the chain has no contact details for its channel (reserved persons do not count)."""


class _KeyTaken(Exception):
    """Rolls the transaction back: a concurrent request stored a chain under the same key first."""


@dataclass(frozen=True)
class Registered:
    receipt: ChainReceipt
    created: bool  # False: the key was taken, and this is the chain that took it


class ChainService:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        look_up: Callable[[OrderDraft], Awaitable[LookupResult]],
        telemetry: Telemetry,
        on_registered: Callable[[], None] = lambda: None,
        wake_within: float = 2.0,
    ) -> None:
        self._db = database
        self._clock = clock
        self._look_up = look_up
        self._telemetry = telemetry
        self._on_registered = on_registered
        self._wake_within = timedelta(seconds=wake_within)

    async def find(self, creator: str, family: IdempotencyFamily, idempotency_id: str) -> ChainReceipt | None:
        """The receipt of the chain already stored under this key, or None."""
        async with self._db.read() as conn:
            return await chain_repository.find_chain(conn, creator, family, idempotency_id)

    async def get(self, creator: str, chain_id: UUID) -> ChainReceipt | None:
        async with self._db.read() as conn:
            return await chain_repository.get_chain(conn, chain_id, creator)

    async def get_with_manifests(
        self, creator: str, chain_id: UUID
    ) -> tuple[ChainReceipt, dict[UUID, Shipment]] | None:
        """The creator's chain and each of its orders' delivery manifests, read together."""
        async with self._db.read() as conn:
            receipt = await chain_repository.get_chain(conn, chain_id, creator)
            if receipt is None:
                return None
            manifests: dict[UUID, Shipment] = {}
            for shipment in (receipt.main, *receipt.reminders):
                found = await shipment_repository.manifest(conn, shipment.order_id, creator)
                if found is not None:
                    manifests[shipment.order_id] = found
        return receipt, manifests

    async def register(
        self, creator: str, draft: ChainDraft, family: IdempotencyFamily = IdempotencyFamily.ORDERS
    ) -> Registered:
        """Store the chain, or answer the one a concurrent request stored under the same key.

        Raises MissingContactInformation, storing nothing, when a looked-up recipient (the main one first, then each
        reminder's) has no contact details for its channel.
        """
        drafts = (draft.main, *draft.reminders)
        for order in drafts:
            if not all(recipient.email_address or recipient.mobile_number for recipient in order.recipients):
                result = await self._look_up(order)
                if any(resolved.outcome is Outcome.MISSING_CONTACT for resolved in result.recipients):
                    raise MissingContactInformation()
        chain_id = new_id()
        now = self._clock.now()
        order_ids = [new_id() for _ in drafts]
        order_rows, recipient_rows = [], []
        for position, (order_id, order) in enumerate(zip(order_ids, drafts, strict=True)):
            order_rows.append(chain_repository.chain_order_row(order_id, creator, order, now, chain_id, position))
            recipient_rows.extend(chain_repository.chain_recipient_rows(order_id, order))
        due_soon = any(order.requested_send_time <= now + self._wake_within for order in drafts)
        try:
            async with self._db.transaction() as conn:
                if not await chain_repository.insert_chain(
                    conn, chain_repository.chain_row(chain_id, creator, family, draft, now)
                ):
                    raise _KeyTaken()
                await chain_repository.insert_chain_orders(conn, order_rows, recipient_rows)
                if due_soon:
                    await dispatch_repository.announce_work(conn, orders=True)
        except _KeyTaken:
            winner = await self.find(creator, family, draft.idempotency_id)
            if winner is None:  # the winner's chain is gone again (purged): not expected within one request
                raise RuntimeError("the idempotency key is taken by a chain that cannot be read") from None
            return Registered(winner, created=False)
        for order_id, order in zip(order_ids, drafts, strict=True):
            self._telemetry.orders_accepted.labels(order.channel.value).inc()
            self._telemetry.transition("order", order_id, None, OrderStatus.REGISTERED.value, creator=creator)
        if due_soon:
            self._on_registered()
        shipments = [
            chain_repository.Shipment(order_id, order.senders_reference)
            for order_id, order in zip(order_ids, drafts, strict=True)
        ]
        return Registered(ChainReceipt(chain_id, shipments[0], tuple(shipments[1:])), created=True)
