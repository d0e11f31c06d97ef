"""What a contact registry answers, and the registry kept in varsel's own database.

The look-up rules (varsel.recipients.lookup) talk to the ContactRegistry protocol only, so a registry reached over
the network can replace the local copy. Every method takes a whole batch of keys and answers in one round trip.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from sqlalchemy import and_, bindparam, select

from varsel.db.engine import Database
from varsel.db.group_commit import GroupCommit
from varsel.db.tables import (
    registry_authorizations,
    registry_external_identities,
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
    # When the person last confirmed the details (KRR); None when the registry does not say, which counts as current.
    contact_confirmed: datetime | None = None


@dataclass(frozen=True)
class ExternalIdentityContact:
    """A self-identified user's contact details, by the identity's canonical URN (urn:altinn:party:username:…)."""

    identity: str
    name: str | None
    email_address: str | None
    mobile_number: str | None


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

    async def external_identities(self, identities: Collection[str]) -> dict[str, ExternalIdentityContact]:
        """Self-identified users by their canonical URNs (varsel.recipients.identities)."""
        ...

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
    costs one transaction and one round trip instead of one each. The grouping is varsel.db.group_commit's: a quiet
    service waits for nothing, and only look-ups arriving meanwhile are grouped, up to `max_keys` keys a query.
    """

    def __init__(self, fetch: Callable[[list[str]], Awaitable[dict[str, V]]], max_keys: int = BATCH_SIZE) -> None:
        self._fetch = fetch
        self._group: GroupCommit[frozenset[str], dict[str, V]] = GroupCommit(
            self._fetch_group, max_items=max_keys, weight=len, max_weight=max_keys
        )

    async def get(self, keys: Collection[str]) -> dict[str, V]:
        wanted = frozenset(keys)
        return await self._group.write(wanted) if wanted else {}

    async def _fetch_group(self, group: list[frozenset[str]]) -> list[dict[str, V] | Exception]:
        found = await self._fetch(sorted(frozenset().union(*group)))
        return [{key: found[key] for key in wanted if key in found} for wanted in group]


# Built once, with an expanding parameter for the keys: compiled once, then only bound.
_PERSONS = select(registry_persons).where(
    registry_persons.c.national_identity_number.in_(bindparam("keys", expanding=True))
)
_ORGANIZATIONS = select(registry_organizations).where(
    registry_organizations.c.organization_number.in_(bindparam("keys", expanding=True))
)
_EXTERNAL_IDENTITIES = select(registry_external_identities).where(
    registry_external_identities.c.identity.in_(bindparam("keys", expanding=True))
)


class LocalRegistry:
    """The registries as copied into varsel's database."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._persons = _Coalesced(self._fetch_persons)
        self._organizations = _Coalesced(self._fetch_organizations)
        self._external_identities = _Coalesced(self._fetch_external_identities)

    async def persons(self, numbers: Collection[str]) -> dict[str, PersonContact]:
        return await self._persons.get(numbers)

    async def organizations(self, numbers: Collection[str]) -> dict[str, OrganizationContact]:
        return await self._organizations.get(numbers)

    async def external_identities(self, identities: Collection[str]) -> dict[str, ExternalIdentityContact]:
        return await self._external_identities.get(identities)

    async def _fetch_persons(self, keys: list[str]) -> dict[str, PersonContact]:
        found: dict[str, PersonContact] = {}
        async with self._db.read() as conn:
            for batch in chunks(keys):
                for r in await conn.execute(_PERSONS, {"keys": list(batch)}):
                    found[r.national_identity_number] = PersonContact(
                        r.national_identity_number,
                        r.name,
                        r.email_address,
                        r.mobile_number,
                        bool(r.is_reserved),
                        r.contact_confirmed,
                    )
        return found

    async def _fetch_external_identities(self, keys: list[str]) -> dict[str, ExternalIdentityContact]:
        found: dict[str, ExternalIdentityContact] = {}
        async with self._db.read() as conn:
            for batch in chunks(keys):
                for r in await conn.execute(_EXTERNAL_IDENTITIES, {"keys": list(batch)}):
                    found[r.identity] = ExternalIdentityContact(r.identity, r.name, r.email_address, r.mobile_number)
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
