"""What a contact registry answers, and the registry kept in varsel's own database.

The look-up rules (varsel.recipients.lookup) talk to the ContactRegistry protocol only, so a registry reached over
the network can replace the local copy. Every method takes a whole batch of keys and answers in one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sqlalchemy import and_, bindparam, select

from varsel.db.engine import Database
from varsel.db.group_commit import WriterStopped
from varsel.db.tables import (
    registry_authorizations,
    registry_organizations,
    registry_persons,
    registry_user_contacts,
)

T = TypeVar("T")
V = TypeVar("V")

# Keys per query: far below SQLite's and PostgreSQL's bind-parameter limits, large enough to keep round trips few.
BATCH_SIZE = 5_000


@dataclass(frozen=True)
class PersonContact:
    national_identity_number: str
    name: str | None
    email_address: str | None
    mobile_number: str | None
    is_reserved: bool


@dataclass(frozen=True)
class OrganizationContact:
    organization_number: str
    name: str | None
    email_addresses: tuple[str, ...]
    mobile_numbers: tuple[str, ...]


@dataclass(frozen=True)
class UserContactPoint:
    user_id: str
    organization_number: str
    national_identity_number: str | None
    email_address: str | None
    mobile_number: str | None
    # Actions the user may take on the asked-for resource for this organisation; empty when not authorised.
    actions: frozenset[str]


class ContactRegistry(Protocol):
    async def persons(self, numbers: Collection[str]) -> dict[str, PersonContact]: ...

    async def organizations(self, numbers: Collection[str]) -> dict[str, OrganizationContact]: ...

    async def user_contacts(
        self, organization_numbers: Collection[str], resource_id: str
    ) -> dict[str, list[UserContactPoint]]:
        """Every user contact point of these organisations, with the user's actions on `resource_id`."""
        ...


def chunks(items: Sequence[T], size: int = BATCH_SIZE) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Coalesced(Generic[V]):
    """Look-ups by key that arrive while one is under way are answered together by the next query.

    At intake every order by identity number looks its recipients up; one query for all the orders arriving together
    costs one transaction and one round trip instead of one each. A quiet service waits for nothing: the first
    look-up is sent at once, and only those arriving meanwhile are grouped.
    """

    def __init__(self, fetch: Callable[[list[str]], Awaitable[dict[str, V]]], max_keys: int = BATCH_SIZE) -> None:
        self._fetch = fetch
        self._max_keys = max_keys
        self._queue: list[tuple[set[str], asyncio.Future[dict[str, V]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def get(self, keys: Collection[str]) -> dict[str, V]:
        wanted = set(keys)
        if not wanted:
            return {}
        answer: asyncio.Future[dict[str, V]] = asyncio.get_running_loop().create_future()
        self._queue.append((wanted, answer))
        # Not `is None` alone: a flusher cancelled before its first step never ran its `finally`.
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await answer

    async def _flush(self) -> None:
        batch: list[tuple[set[str], asyncio.Future[dict[str, V]]]] = []
        try:
            while self._queue:
                batch = [self._queue.pop(0)]
                keys = set(batch[0][0])
                while self._queue and len(keys) + len(self._queue[0][0]) <= self._max_keys:
                    wanted, answer = self._queue.pop(0)
                    batch.append((wanted, answer))
                    keys |= wanted
                try:
                    found = await self._fetch(sorted(keys))
                except Exception as error:
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for wanted, answer in batch:
                    if not answer.done():
                        answer.set_result({key: found[key] for key in wanted if key in found})
        except BaseException:  # cancelled at shutdown: nobody may be left waiting for ever
            for _, answer in [*batch, *self._queue]:
                if not answer.done():
                    answer.set_exception(WriterStopped("the process is stopping; the look-up was not made"))
            self._queue.clear()
            raise
        finally:
            # At once, not in a done callback: a look-up arriving meanwhile must find no flusher and start one.
            if self._flusher is asyncio.current_task():
                self._flusher = None


# Built once, with an expanding parameter for the keys: compiled once, then only bound.
_PERSONS = select(registry_persons).where(
    registry_persons.c.national_identity_number.in_(bindparam("keys", expanding=True))
)
_ORGANIZATIONS = select(registry_organizations).where(
    registry_organizations.c.organization_number.in_(bindparam("keys", expanding=True))
)


class LocalRegistry:
    """The registries as copied into varsel's database."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._persons = _Coalesced(self._fetch_persons)
        self._organizations = _Coalesced(self._fetch_organizations)

    async def persons(self, numbers: Collection[str]) -> dict[str, PersonContact]:
        return await self._persons.get(numbers)

    async def organizations(self, numbers: Collection[str]) -> dict[str, OrganizationContact]:
        return await self._organizations.get(numbers)

    async def _fetch_persons(self, keys: list[str]) -> dict[str, PersonContact]:
        found: dict[str, PersonContact] = {}
        async with self._db.read() as conn:
            for batch in chunks(keys):
                for r in await conn.execute(_PERSONS, {"keys": list(batch)}):
                    found[r.national_identity_number] = PersonContact(
                        r.national_identity_number, r.name, r.email_address, r.mobile_number, bool(r.is_reserved)
                    )
        return found

    async def _fetch_organizations(self, keys: list[str]) -> dict[str, OrganizationContact]:
        found: dict[str, OrganizationContact] = {}
        async with self._db.read() as conn:
            for batch in chunks(keys):
                for r in await conn.execute(_ORGANIZATIONS, {"keys": list(batch)}):
                    found[r.organization_number] = OrganizationContact(
                        r.organization_number, r.name, tuple(r.email_addresses or ()), tuple(r.mobile_numbers or ())
                    )
        return found

    async def user_contacts(
        self, organization_numbers: Collection[str], resource_id: str
    ) -> dict[str, list[UserContactPoint]]:
        found: dict[str, list[UserContactPoint]] = {}
        keys = sorted(set(organization_numbers))
        uc, auth = registry_user_contacts, registry_authorizations
        async with self._db.read() as conn:
            for batch in chunks(keys):
                # One query for all users of all organisations in the batch, however many users they have.
                query = (
                    select(uc, auth.c.actions)
                    .select_from(
                        uc.outerjoin(
                            auth,
                            and_(
                                auth.c.user_id == uc.c.user_id,
                                auth.c.organization_number == uc.c.organization_number,
                                auth.c.resource_id == resource_id,
                            ),
                        )
                    )
                    .where(uc.c.organization_number.in_(batch))
                    .order_by(uc.c.organization_number, uc.c.user_id)
                )
                for r in await conn.execute(query):
                    found.setdefault(r.organization_number, []).append(
                        UserContactPoint(
                            r.user_id,
                            r.organization_number,
                            r.national_identity_number,
                            r.email_address,
                            r.mobile_number,
                            frozenset(a for a in (r.actions or ()) if isinstance(a, str)),
                        )
                    )
        return found
