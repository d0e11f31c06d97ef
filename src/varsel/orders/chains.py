"""v2 order chains: a main order and its reminders, each an ordinary order, created once per idempotency key.

The look-ups happen before the transaction opens (a registry may be remote); the chain and its orders are written
in one transaction (with the other chains that arrive meanwhile: group commit, as v1 intake), which a concurrent
first request with the same key cannot break: the chain's insert yields to the key's unique index, its orders are
then not written, and the request answers the winner's receipt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.group_commit import GroupCommit
from varsel.dispatch import repository as dispatch_repository
from varsel.ids import new_id
from varsel.notifications.statuses import OrderStatus
from varsel.observability import Telemetry
from varsel.orders import chain_repository
from varsel.orders.chain_repository import ChainReceipt
from varsel.orders.drafts import ChainDraft, OrderDraft
from varsel.orders.intake import MAX_BATCH_RECIPIENTS
from varsel.orders.vocabulary import IdempotencyFamily
from varsel.recipients.lookup import LookupResult, Outcome
from varsel.shipments import repository as shipment_repository
from varsel.shipments.repository import Shipment

# A batch holds at most this many chains (each with its reminders), and at most intake's recipients.
MAX_BATCH_CHAINS = 128


class MissingContactInformation(Exception):
    """A looked-up recipient of the chain has no contact details for its channel (reserved persons do not count)."""


# Service owners whose person recipients are always looked up with stale contact details allowed, as in the
# reference (its `skd` special case).
STALE_CONTACT_OWNERS = frozenset({"skd"})


@dataclass(frozen=True)
class _NewChain:
    chain: dict[str, Any]
    orders: list[dict[str, Any]]
    recipients: list[dict[str, Any]]
    due_soon: bool


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
        # Chains arriving together are committed together, as v1 orders are (see varsel.orders.intake).
        self._writer: GroupCommit[_NewChain, bool] = GroupCommit(
            self._insert,
            max_items=MAX_BATCH_CHAINS,
            weight=lambda new: len(new.recipients),
            max_weight=MAX_BATCH_RECIPIENTS,
        )

    async def _insert(self, batch: list[_NewChain]) -> list[bool]:
        """One transaction for the batch: the chains whose keys are free, and their orders; answers which were."""
        async with self._db.transaction() as conn:
            inserted = await chain_repository.insert_chains(conn, [new.chain for new in batch])
            stored = [new for new in batch if new.chain["id"] in inserted]
            if stored:
                await chain_repository.insert_chain_orders(
                    conn,
                    [row for new in stored for row in new.orders],
                    [row for new in stored for row in new.recipients],
                )
            if any(new.due_soon for new in stored):
                await dispatch_repository.announce_work(conn, orders=True)
        return [new.chain["id"] in inserted for new in batch]

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
        if creator.lower() in STALE_CONTACT_OWNERS:
            # The reference forces useStaleContactInformation for these owners' person recipients (reference 1.3,
            # step 6): a client written for it relies on that.
            drafts = tuple(
                replace(order, use_stale_contact_information=True)
                if any(r.national_identity_number for r in order.recipients)
                else order
                for order in drafts
            )
        # A reminder often goes to the main recipient again, on the same terms: each look-up once.
        asked: set[tuple[object, ...]] = set()
        for order in drafts:
            if all(recipient.email_address or recipient.mobile_number for recipient in order.recipients):
                continue  # addresses given: nothing to look up
            terms = (order.recipients, order.channel, order.ignore_reservation, order.resource_id,
                     order.resource_action, order.use_stale_contact_information)  # fmt: skip
            if terms in asked:
                continue
            asked.add(terms)
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
        new_chain = _NewChain(
            chain_repository.chain_row(chain_id, creator, family, draft, now), order_rows, recipient_rows, due_soon
        )
        if not await self._writer.write(new_chain):
            winner = await self.find(creator, family, draft.idempotency_id)
            if winner is None:  # the winner's chain is gone again (purged): not expected within one request
                raise RuntimeError("the idempotency key is taken by a chain that cannot be read")
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
