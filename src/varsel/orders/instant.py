"""v2 instant orders: one message to one address, handed to the provider while the caller waits.

(Being built: see issue #16. The interface below is what the instant endpoints call.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from varsel.orders.chain_repository import Shipment
from varsel.orders.drafts import InstantDraft


class InstantAnswer(StrEnum):
    CREATED = "created"  # 201: stored and handed to the provider now (accepted, or refused for good: see the shipment)
    REPLAYED = "replayed"  # 200: the key was used before; the stored order's receipt
    UNAVAILABLE = "unavailable"  # 503 NOT-00004: the provider could not take it now; the key may be tried again


@dataclass(frozen=True)
class InstantResult:
    answer: InstantAnswer
    chain_id: UUID
    shipment: Shipment
    # With UNAVAILABLE: when the provider is expected to take calls again (seconds), if known.
    retry_after: float | None = None


class InstantService:
    async def order(self, creator: str, draft: InstantDraft) -> InstantResult:
        raise NotImplementedError
