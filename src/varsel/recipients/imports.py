"""Feeding the local registries: JSON Lines records upserted by key in batches.

Kinds: person (with contactConfirmed, when the person last confirmed the details), organization, userContact,
authorization, externalIdentity (a self-identified user, by any of its three URN spellings, stored under the
canonical urn:altinn:party:username:{name}), and delete.

One record a line. A bad line is reported with its number and reason and never stops the rest; a record is
written whole or not at all. Records are applied in file order (a delete after an upsert of the same key wins),
batched while consecutive lines are of the same kind.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError
from sqlalchemy import Table, delete, literal_column, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from varsel import jsonsafe
from varsel.api_types import ApiModel, RequestDateTime, Text
from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.db.tables import (
    registry_authorizations,
    registry_external_identities,
    registry_organizations,
    registry_persons,
    registry_user_contacts,
)
from varsel.recipients.identities import ExternalIdentityKind, bare_resource_id, parse_external_identity
from varsel.recipients.registry import chunks

BATCH_SIZE = 2_000


def _digits(length: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) != length or not value.isascii() or not value.isdigit():
            raise ValueError(f"must be {length} digits")
        return value

    return check


def _no_control_characters(value: str) -> str:
    # A name goes into email subjects: a line break in it would start a new header.
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _plain_characters(value: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise ValueError("must not contain control or formatting characters")
    return value


def _with_offset(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be a date and time in ISO 8601 format with a UTC offset")
    return value.astimezone(UTC)


def _self_identified_user(value: str) -> str:
    identity = parse_external_identity(value)
    if identity is None:
        raise ValueError(
            "must be a self-identified user's URN: urn:altinn:party:username:{name}, urn:altinn:username:{name} or "
            "urn:altinn:person:legacy-selfidentified:{name}, with a name that is not blank (percent-encoded as in a "
            "URN, at most 400 characters in the party:username form)"
        )
    if identity.kind is ExternalIdentityKind.IDPORTEN_EMAIL:
        raise ValueError(
            "an ID-porten email identity (urn:altinn:person:idporten-email:) is its own email address and has no "
            "registry record; only self-identified users' URNs are registered"
        )
    return identity.urn


NationalIdentityNumber = Annotated[Text, AfterValidator(_digits(11))]
OrganizationNumber = Annotated[Text, AfterValidator(_digits(9))]
UserId = Annotated[Text, Field(min_length=1, max_length=64), AfterValidator(_no_control_characters)]
Name = Annotated[Text, Field(max_length=500), AfterValidator(_no_control_characters)]
# As wide as the columns that hold them. Stored as the registry gives them (the lookup normalises them and skips
# invalid ones, as the README says), but never with a character that the order intake refuses inside an address:
# control and format characters (a right-to-left override makes an address display as another), and the Unicode
# line and paragraph separators. Refused anywhere, not only inside: the normalisers (the intake's and the lookup's)
# strip or drop whitespace, so "a@example.com\r\n" would pass them and be stored as given, and a line break stored
# in an address is one step from a header injection.
EmailAddress = Annotated[Text, Field(max_length=320), AfterValidator(_plain_characters)]
MobileNumber = Annotated[Text, Field(max_length=20), AfterValidator(_plain_characters)]
# ISO 8601 text with a UTC offset ("2025-03-01T12:00:00+01:00"); a number or a time without an offset is refused.
Timestamp = Annotated[RequestDateTime, AfterValidator(_with_offset)]
# Any of the three spellings; held as the canonical urn:altinn:party:username:{name}.
SelfIdentifiedUser = Annotated[Text, AfterValidator(_self_identified_user)]


class PersonRecord(ApiModel):
    kind: Literal["person"]
    national_identity_number: NationalIdentityNumber
    name: Name | None = None
    email_address: EmailAddress | None = None
    mobile_number: MobileNumber | None = None
    is_reserved: bool = False
    # When the person last confirmed these details; unknown (absent) counts as current. Details confirmed over 18
    # months before an order is processed count as absent unless the order allows stale contact information.
    contact_confirmed: Timestamp | None = None


class OrganizationRecord(ApiModel):
    kind: Literal["organization"]
    organization_number: OrganizationNumber
    name: Name | None = None
    email_addresses: list[EmailAddress] = Field(default_factory=list, max_length=1000)
    mobile_numbers: list[MobileNumber] = Field(default_factory=list, max_length=1000)


class UserContactRecord(ApiModel):
    kind: Literal["userContact"]
    user_id: UserId
    national_identity_number: NationalIdentityNumber | None = None
    organization_number: OrganizationNumber
    email_address: EmailAddress | None = None
    mobile_number: MobileNumber | None = None


class ExternalIdentityRecord(ApiModel):
    """A self-identified user (urn:altinn:party:username:, urn:altinn:username: or
    urn:altinn:person:legacy-selfidentified:, one user whichever is given) and the user's contact details."""

    kind: Literal["externalIdentity"]
    external_identity: SelfIdentifiedUser
    name: Name | None = None
    email_address: EmailAddress | None = None
    mobile_number: MobileNumber | None = None


class AuthorizationRecord(ApiModel):
    kind: Literal["authorization"]
    user_id: UserId
    organization_number: OrganizationNumber
    resource_id: Annotated[Text, Field(min_length=1, max_length=255)]
    actions: list[Annotated[Text, Field(min_length=1, max_length=100)]] = Field(max_length=100)


class DeleteRecord(ApiModel):
    """Removes one record, named by its key: a person's number; an organisation's number; a user contact's
    userId and organisation number; an authorisation's userId, organisation number and resourceId; a self-identified
    user's externalIdentity (any of its spellings)."""

    kind: Literal["delete"]
    national_identity_number: NationalIdentityNumber | None = None
    organization_number: OrganizationNumber | None = None
    user_id: UserId | None = None
    resource_id: Text | None = None
    external_identity: SelfIdentifiedUser | None = None

    def target(self) -> tuple[Table, dict[str, str]]:
        if self.external_identity:
            if self.national_identity_number or self.organization_number or self.user_id or self.resource_id:
                raise ValueError("a delete of an externalIdentity names nothing else")
            return registry_external_identities, {"identity": self.external_identity}
        if self.national_identity_number and not (self.organization_number or self.user_id or self.resource_id):
            return registry_persons, {"national_identity_number": self.national_identity_number}
        if self.organization_number and not self.user_id and not self.resource_id:
            return registry_organizations, {"organization_number": self.organization_number}
        if self.organization_number and self.user_id and not self.resource_id:
            return registry_user_contacts, {"user_id": self.user_id, "organization_number": self.organization_number}
        if self.organization_number and self.user_id and self.resource_id:
            return registry_authorizations, {
                "user_id": self.user_id,
                "organization_number": self.organization_number,
                "resource_id": self.resource_id,
            }
        raise ValueError(
            "a delete names nationalIdentityNumber; or organizationNumber; or userId and organizationNumber; "
            "or userId, organizationNumber and resourceId; or externalIdentity"
        )


Record = Annotated[
    PersonRecord | OrganizationRecord | UserContactRecord | AuthorizationRecord | ExternalIdentityRecord | DeleteRecord,
    Field(discriminator="kind"),
]
_RECORD = TypeAdapter(Record)

_TABLES: dict[str, Table] = {
    "person": registry_persons,
    "organization": registry_organizations,
    "userContact": registry_user_contacts,
    "authorization": registry_authorizations,
    "externalIdentity": registry_external_identities,
}


@dataclass
class ImportSummary:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.deleted


def parse_record(line: str | bytes | dict[str, Any]) -> Record:
    """One line (or an already parsed object) as a record; ValueError with a readable reason when it is not one."""
    if isinstance(line, dict):
        raw: Any = line
    else:
        try:
            raw = jsonsafe.loads(line)
        except jsonsafe.UnreadableJson as error:
            raise ValueError(f"not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError("a record must be a JSON object")
    kind = raw.get("kind")
    if kind not in (*_TABLES, "delete"):
        raise ValueError(
            f"unknown kind {kind!r}; expected person, organization, userContact, authorization, externalIdentity or "
            "delete"
        )
    try:
        record: Record = _RECORD.validate_python(raw)
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'record'}: {e['msg']}" for e in error.errors())
        raise ValueError(reasons) from None
    if isinstance(record, DeleteRecord):
        record.target()  # refuses a delete that names no key
    return record


def _row(record: Record, now: datetime) -> dict[str, Any]:
    if isinstance(record, PersonRecord):
        return {
            "national_identity_number": record.national_identity_number,
            "name": record.name,
            "email_address": record.email_address,
            "mobile_number": record.mobile_number,
            "is_reserved": record.is_reserved,
            "contact_confirmed": record.contact_confirmed,
            "updated": now,
        }
    if isinstance(record, OrganizationRecord):
        return {
            "organization_number": record.organization_number,
            "name": record.name,
            "email_addresses": record.email_addresses,
            "mobile_numbers": record.mobile_numbers,
            "updated": now,
        }
    if isinstance(record, UserContactRecord):
        return {
            "user_id": record.user_id,
            "organization_number": record.organization_number,
            "national_identity_number": record.national_identity_number,
            "email_address": record.email_address,
            "mobile_number": record.mobile_number,
            "updated": now,
        }
    if isinstance(record, ExternalIdentityRecord):
        return {
            "identity": record.external_identity,
            "name": record.name,
            "email_address": record.email_address,
            "mobile_number": record.mobile_number,
            "updated": now,
        }
    if isinstance(record, AuthorizationRecord):
        return {
            "user_id": record.user_id,
            "organization_number": record.organization_number,
            "resource_id": bare_resource_id(record.resource_id),
            "actions": sorted(set(record.actions)),
            "updated": now,
        }
    raise TypeError(f"not an upsert record: {record!r}")


def _key_columns(table: Table) -> list[str]:
    return [column.name for column in table.primary_key.columns]


async def _upsert(conn: AsyncConnection, dialect: str, table: Table, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Write the rows (unique by key); answer how many were new and how many replaced a stored record."""
    keys = _key_columns(table)
    # Rows in key order: two imports writing overlapping keys then lock them in the same order and cannot deadlock.
    rows = sorted(rows, key=lambda row: tuple(row[k] for k in keys))
    if dialect == "postgresql":
        pg_insert = postgresql.insert(table)
        statement: Any = pg_insert.on_conflict_do_update(
            index_elements=keys, set_={c: pg_insert.excluded[c] for c in rows[0] if c not in keys}
        ).returning(literal_column("xmax = 0"))  # true for a row this statement inserted, false for an update
        inserted = sum(1 for (was_inserted,) in await conn.execute(statement, rows) if was_inserted)
        return inserted, len(rows) - inserted
    # SQLite admits one writer at a time, so counting the stored keys first is exact.
    key_expr = tuple_(*(table.c[k] for k in keys)) if len(keys) > 1 else table.c[keys[0]]
    existing = 0
    for batch in chunks(rows, 500):
        wanted = [tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]] for row in batch]
        found = await conn.execute(select(*(table.c[k] for k in keys)).where(key_expr.in_(wanted)))
        existing += len(found.all())
    sqlite_insert = sqlite.insert(table)
    await conn.execute(
        sqlite_insert.on_conflict_do_update(
            index_elements=keys, set_={c: sqlite_insert.excluded[c] for c in rows[0] if c not in keys}
        ),
        rows,
    )
    return len(rows) - existing, existing


async def _delete(conn: AsyncConnection, records: list[DeleteRecord]) -> int:
    by_table: dict[str, tuple[Table, list[dict[str, str]]]] = {}
    for record in records:
        table, key = record.target()
        by_table.setdefault(table.name, (table, []))[1].append(key)
    deleted = 0
    for table, keys in by_table.values():
        names = _key_columns(table)
        key_expr = tuple_(*(table.c[n] for n in names)) if len(names) > 1 else table.c[names[0]]
        values = sorted({tuple(key[n] for n in names) for key in keys})
        # IN lists in chunks: an OR chain per key would exceed SQLite's expression depth at about 1,000 keys.
        for batch in chunks(values, 500):
            wanted = list(batch) if len(names) > 1 else [value[0] for value in batch]
            result = await conn.execute(delete(table).where(key_expr.in_(wanted)))
            deleted += int(result.rowcount or 0)
    return deleted


class RegistryImporter:
    def __init__(self, database: Database, clock: Clock, batch_size: int = BATCH_SIZE) -> None:
        self._db = database
        self._clock = clock
        self._batch_size = batch_size

    async def apply(self, records: Iterable[Record], summary: ImportSummary) -> None:
        """Apply valid records in batches of one kind. Upserts of different kinds touch different tables, so
        they may be grouped by kind; a delete keeps its place in the file, so that it wins over an upsert of
        the same key before it and loses to one after it."""
        ordered = list(records)
        if not any(record.kind == "delete" for record in ordered):
            ordered.sort(key=lambda record: record.kind)  # stable: file order is kept within a kind
        batch: list[Record] = []
        for record in ordered:
            if batch and (record.kind != batch[0].kind or len(batch) >= self._batch_size):
                await self._flush(batch, summary)
                batch = []
            batch.append(record)
        if batch:
            await self._flush(batch, summary)

    async def _flush(self, batch: list[Record], summary: ImportSummary) -> None:
        now = self._clock.now()
        async with self._db.transaction() as conn:
            if batch[0].kind == "delete":
                summary.deleted += await _delete(conn, [r for r in batch if isinstance(r, DeleteRecord)])
                return
            table = _TABLES[batch[0].kind]
            keys = _key_columns(table)
            # The last line for a key wins; earlier lines for it count as updates it overwrote.
            unique: dict[tuple[Any, ...], dict[str, Any]] = {}
            for record in batch:
                row = _row(record, now)
                unique[tuple(row[k] for k in keys)] = row
            inserted, updated = await _upsert(conn, self._db.dialect, table, list(unique.values()))
        summary.inserted += inserted
        summary.updated += updated + (len(batch) - len(unique))

    async def import_lines(
        self,
        lines: AsyncIterator[tuple[int, str]],
        summary: ImportSummary,
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        """Read numbered lines, reject the bad ones into the summary, apply the rest in batches."""
        pending: list[Record] = []
        async for number, line in lines:
            if progress is not None:
                progress(len(line.encode()) + 1)
            if not line.strip():
                continue
            try:
                pending.append(parse_record(line))
            except ValueError as error:
                summary.rejected.append((number, str(error)))
                continue
            if len(pending) >= self._batch_size:
                await self.apply(pending, summary)
                pending = []
        if pending:
            await self.apply(pending, summary)
        return summary
