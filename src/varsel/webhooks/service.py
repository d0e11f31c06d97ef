"""Service owners' webhook subscriptions: made, changed, rotated, replayed and read, each in one transaction.

A service owner sees and changes only its own subscriptions: another owner's is "not found" everywhere. The secret is
answered only when made and when rotated. Changes that give the delivery worker something to do (enabling an endpoint
again, a replay) wake it in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.ids import new_id
from varsel.problems import Problem, ValidationProblem
from varsel.webhooks import repository
from varsel.webhooks.addresses import WebhookHosts
from varsel.webhooks.outbox import EVENT_KINDS
from varsel.webhooks.repository import AttemptRow, EventRow, Subscription
from varsel.webhooks.signing import new_secret


class SubscriptionNotFound(Problem):
    def __init__(self) -> None:
        super().__init__(404, "Webhook subscription not found", "No webhook subscription with that id exists for "
                         "this service owner.")  # fmt: skip


class TooManySubscriptions(Problem):
    def __init__(self, limit: int) -> None:
        super().__init__(
            409,
            "Too many webhook subscriptions",
            f"A service owner may have at most {limit} webhook subscriptions (VARSEL_WEBHOOKS__MAX_SUBSCRIPTIONS_PER_"
            "OWNER); one subscription can take several event kinds. Delete one, or change one's URL or events.",
        )


@dataclass(frozen=True)
class SubscriptionChange:
    """What a PATCH or PUT changes: None leaves a field as it is."""

    url: str | None = None
    kinds: Sequence[str] | None = None
    enabled: bool | None = None


class WebhookSubscriptions:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        hosts: WebhookHosts,
        secret_grace: timedelta,
        wake: Callable[[], None] = lambda: None,
        max_per_owner: int = 10,
    ) -> None:
        self._db = database
        self._clock = clock
        self._hosts = hosts
        self._grace = secret_grace
        self._wake = wake
        self._max_per_owner = max_per_owner

    # ---------------------------------------------------------------- validation

    def kinds_problems(self, kinds: Sequence[str], field: str = "Events") -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if not kinds:
            errors[field] = [f"At least one event kind is required: {', '.join(EVENT_KINDS)}."]
        if len(kinds) > len(EVENT_KINDS):
            # Each kind at most once: more entries than kinds is refused whole (one message, not one per entry).
            return {field: [f"At most {len(EVENT_KINDS)} event kinds, each once: {', '.join(EVENT_KINDS)}."]}
        seen: set[str] = set()
        for index, kind in enumerate(kinds):
            if kind not in EVENT_KINDS:
                errors.setdefault(f"{field}[{index}]", []).append(
                    f"Unknown event kind {kind[:100]!r}; known kinds: {', '.join(EVENT_KINDS)}."
                )
            elif kind in seen:
                errors.setdefault(f"{field}[{index}]", []).append(f"The event kind {kind!r} is listed twice.")
            seen.add(kind)
        return errors

    async def _check(self, url: str | None, kinds: Sequence[str] | None) -> None:
        errors: dict[str, list[str]] = {}
        if url is not None:
            problem = self._hosts.url_problem(url)
            if problem is None:
                problem = await self._hosts.address_problem(url)
            if problem is not None:
                errors["Url"] = [problem]
        if kinds is not None:
            errors.update(self.kinds_problems(kinds))
        if errors:
            raise ValidationProblem(errors)

    # ---------------------------------------------------------------- use cases

    async def create(self, creator: str, url: str, kinds: Sequence[str]) -> Subscription:
        """A new, enabled subscription; its answer is the only one that carries the secret, besides rotations'."""
        await self._check(url, kinds)
        subscription_id = new_id()
        async with self._db.transaction() as conn:
            # Counted in the write transaction (SQLite's one writer; on PostgreSQL two creations at once may both
            # pass: the limit is a bound on the fan-out's cost, not a contract).
            if await repository.count_subscriptions(conn, creator) >= self._max_per_owner:
                raise TooManySubscriptions(self._max_per_owner)
            await repository.insert_subscription(
                conn, subscription_id, creator, url, list(kinds), new_secret(), self._clock.now()
            )
            (made,) = await repository.subscriptions(conn, creator, subscription_id)
        return made

    async def listed(self, creator: str | None) -> list[Subscription]:
        """The owner's subscriptions (every owner's for None: the console's admin)."""
        async with self._db.read() as conn:
            return await repository.subscriptions(conn, creator)

    async def get(self, creator: str | None, subscription_id: UUID) -> Subscription:
        async with self._db.read() as conn:
            found = await repository.subscriptions(conn, creator, subscription_id)
        if not found:
            raise SubscriptionNotFound()
        return found[0]

    async def change(self, creator: str, subscription_id: UUID, change: SubscriptionChange) -> Subscription:
        await self.get(creator, subscription_id)  # another owner's is not found before its input is judged
        await self._check(change.url, change.kinds)
        async with self._db.transaction() as conn:
            if not await repository.lock_subscription(conn, creator, subscription_id):
                raise SubscriptionNotFound()
            await repository.update_subscription(
                conn,
                subscription_id,
                self._clock.now(),
                url=change.url,
                kinds=list(change.kinds) if change.kinds is not None else None,
                enabled=change.enabled,
            )
            (changed,) = await repository.subscriptions(conn, creator, subscription_id)
        if change.enabled:
            self._wake()
        return changed

    async def enable(self, creator: str, subscription_id: UUID) -> Subscription:
        """The owner's re-enabling (the console's button): as PATCH {"enabled": true}."""
        return await self.change(creator, subscription_id, SubscriptionChange(enabled=True))

    async def delete(self, creator: str, subscription_id: UUID) -> None:
        async with self._db.transaction() as conn:
            if not await repository.delete_subscription(conn, creator, subscription_id):
                raise SubscriptionNotFound()

    async def rotate_secret(self, creator: str, subscription_id: UUID) -> Subscription:
        """A new secret; the previous one keeps signing beside it for the grace period."""
        now = self._clock.now()
        async with self._db.transaction() as conn:
            if not await repository.lock_subscription(conn, creator, subscription_id):
                raise SubscriptionNotFound()
            await repository.rotate_secret(conn, subscription_id, new_secret(), now + self._grace, now)
            (rotated,) = await repository.subscriptions(conn, creator, subscription_id)
        return rotated

    async def replay(
        self, creator: str, subscription_id: UUID, *, since: datetime | None = None, from_seq: int | None = None
    ) -> int:
        """Make the retained events from `since` or from seq `from_seq` pending again (same ids); how many."""
        async with self._db.transaction() as conn:
            if not await repository.lock_subscription(conn, creator, subscription_id):
                raise SubscriptionNotFound()
            count = await repository.replay(conn, subscription_id, self._clock.now(), since=since, from_seq=from_seq)
        if count:
            self._wake()
        return count

    async def events(self, creator: str, subscription_id: UUID, after_seq: int, limit: int) -> list[EventRow]:
        async with self._db.read() as conn:
            if not await repository.subscriptions(conn, creator, subscription_id):
                raise SubscriptionNotFound()
            return await repository.events_page(conn, subscription_id, after_seq, limit)

    async def attempts(
        self, creator: str | None, subscription_ids: Sequence[UUID], before_id: int | None, limit: int
    ) -> list[AttemptRow]:
        """The delivery log of these subscriptions of the owner (any owner's for None), newest first."""
        async with self._db.read() as conn:
            owned = await repository.owned_ids(conn, creator, subscription_ids)
            if not owned:
                raise SubscriptionNotFound()
            return await repository.attempts_page(conn, owned, before_id, limit)
