"""Registry imports: bad lines reported and skipped, upserts by key, deletes in file order, 100,000 records."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.recipients.registry_data import load
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import registry_authorizations, registry_organizations, registry_persons, registry_user_contacts
from varsel.recipients.registry import LocalRegistry

PERSON = {"kind": "person", "nationalIdentityNumber": "11876995923", "name": "A", "emailAddress": "a@example.com"}


async def _count(database: Database, table: Any) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_bad_lines_are_reported_with_their_numbers_and_never_stop_the_rest(
    database: Database, clock: FrozenClock
) -> None:
    summary = await load(
        database,
        clock,
        [
            PERSON,
            "not json at all",
            {"kind": "robot", "id": 1},
            {"kind": "person", "nationalIdentityNumber": "1187699592"},
            {"kind": "organization", "organizationNumber": "31100017X", "name": "Bad"},
            "[1, 2]",
            {"kind": "person", "nationalIdentityNumber": "16069412345", "isReserved": "maybe"},
            {"kind": "delete"},
            {"kind": "organization", "organizationNumber": "311000179", "name": "Good", "emailAddresses": ["p@o.no"]},
            {"kind": "person", "nationalIdentityNumber": "16069412345", "name": "Nul\u0000"},
        ],
    )
    assert [number for number, _ in summary.rejected] == [2, 3, 4, 5, 6, 7, 8, 10]
    reasons = dict(summary.rejected)
    assert "not valid JSON" in reasons[2]
    assert "unknown kind 'robot'" in reasons[3]
    assert reasons[4].startswith("nationalIdentityNumber")
    assert "11 digits" in reasons[4]
    assert reasons[5].startswith("organizationNumber")
    assert "9 digits" in reasons[5]
    assert "JSON object" in reasons[6]
    assert "isReserved" in reasons[7]
    assert "a delete names" in reasons[8]
    assert "NUL" in reasons[10]
    assert (summary.inserted, summary.updated) == (2, 0)
    assert await _count(database, registry_persons) == 1
    assert await _count(database, registry_organizations) == 1


async def test_upserts_by_key_and_deletes_in_file_order(database: Database, clock: FrozenClock) -> None:
    first = await load(database, clock, [PERSON, {**PERSON, "name": "B"}])
    assert (first.inserted, first.updated) == (1, 1)
    second = await load(
        database,
        clock,
        [
            {**PERSON, "name": "C", "isReserved": True},
            {"kind": "userContact", "userId": "u1", "organizationNumber": "311000179", "emailAddress": "u@o.no"},
            {"kind": "authorization", "userId": "u1", "organizationNumber": "311000179", "resourceId": "r",
             "actions": ["read", "read", "sign"]},
            {"kind": "delete", "nationalIdentityNumber": "11876995923"},
            {"kind": "person", "nationalIdentityNumber": "16069412345", "name": "D"},
            {"kind": "delete", "userId": "u1", "organizationNumber": "311000179", "resourceId": "r"},
        ],
        batch_size=2,
    )  # fmt: skip
    assert second.rejected == []
    assert (second.inserted, second.updated, second.deleted) == (3, 1, 2)
    persons = await LocalRegistry(database).persons(["11876995923", "16069412345"])
    assert list(persons) == ["16069412345"]
    assert await _count(database, registry_user_contacts) == 1
    assert await _count(database, registry_authorizations) == 0


async def test_a_hundred_thousand_persons(database: Database, clock: FrozenClock) -> None:
    records = [
        json.dumps({"kind": "person", "nationalIdentityNumber": f"{10_000_000_000 + i:011d}", "name": f"P {i}",
                    "emailAddress": f"p{i}@example.com", "mobileNumber": f"9{i:07d}", "isReserved": i % 10 == 0})
        for i in range(100_000)
    ]  # fmt: skip
    summary = await load(database, clock, [*records, '{"kind": "person"}'])
    assert (summary.inserted, summary.updated, len(summary.rejected)) == (100_000, 0, 1)
    assert await _count(database, registry_persons) == 100_000
    found = await LocalRegistry(database).persons([f"{10_000_000_000 + i:011d}" for i in (0, 99_999)])
    assert found["10000000000"].is_reserved is True
    assert found["10000099999"].email_address == "p99999@example.com"


def test_the_import_command_reads_files_and_standard_input(tmp_path: Path) -> None:
    varsel = str(Path(sys.executable).parent / "varsel")
    env = {**os.environ, "VARSEL_DATA_DIR": str(tmp_path / "data")}
    env.pop("VARSEL_DATABASE_URL", None)
    source = tmp_path / "registry.jsonl"
    source.write_text(json.dumps(PERSON) + "\n" + '{"kind": "robot"}\n')
    result = subprocess.run([varsel, "registry", "import", str(source)], env=env, capture_output=True, text=True)
    assert result.returncode == 1  # a rejected line is reported in the exit status
    assert "1 inserted, 0 updated, 0 deleted, 1 rejected" in result.stderr
    assert "line 2: unknown kind 'robot'" in result.stderr
    piped = subprocess.run(
        [varsel, "registry", "import", "-"], env=env, input=json.dumps(PERSON) + "\n", capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    assert "0 inserted, 1 updated" in piped.stderr


async def test_thousands_of_deletes_and_interleaved_kinds(database: Database, clock: FrozenClock) -> None:
    persons = [{"kind": "person", "nationalIdentityNumber": f"{20_000_000_000 + i:011d}"} for i in range(2_000)]
    users = []
    for i in range(1_000):
        users.append({"kind": "userContact", "userId": f"u{i}", "organizationNumber": "311000179"})
        users.append({"kind": "authorization", "userId": f"u{i}", "organizationNumber": "311000179",
                      "resourceId": "r", "actions": ["read"]})  # fmt: skip
    loaded = await load(database, clock, [*persons, *users])
    assert (loaded.inserted, loaded.rejected) == (4_000, [])
    deletes = [{"kind": "delete", "nationalIdentityNumber": p["nationalIdentityNumber"]} for p in persons]
    deletes += [{"kind": "delete", "userId": f"u{i}", "organizationNumber": "311000179"} for i in range(1_000)]
    removed = await load(database, clock, [*deletes, PERSON])
    assert (removed.deleted, removed.inserted, removed.rejected) == (3_000, 1, [])
    assert await _count(database, registry_persons) == 1
    assert await _count(database, registry_user_contacts) == 0


async def test_fields_wider_than_their_columns_and_control_characters_are_rejected_per_record(
    database: Database, clock: FrozenClock
) -> None:
    summary = await load(
        database,
        clock,
        [
            {**PERSON, "mobileNumber": "+47 900 12 345 (arbeid, kveld)"},
            {**PERSON, "name": "Ola\r\nBcc: evil@example.com"},
            {"kind": "userContact", "userId": "u\n1", "organizationNumber": "311000179"},
            {**PERSON, "emailAddress": "x" * 321},
            {**PERSON, "mobileNumber": "+4790000000", "name": "N" * 500},
        ],
    )
    assert [number for number, _ in summary.rejected] == [1, 2, 3, 4]
    assert "mobileNumber" in summary.rejected[0][1]
    assert "control characters" in summary.rejected[1][1]
    assert summary.inserted == 1


async def test_concurrent_imports_of_overlapping_keys(database: Database, clock: FrozenClock) -> None:
    records = [{"kind": "person", "nationalIdentityNumber": f"{30_000_000_000 + i:011d}"} for i in range(3_000)]
    first, second = await asyncio.gather(
        load(database, clock, records, batch_size=500), load(database, clock, records[::-1], batch_size=500)
    )
    assert first.rejected == second.rejected == []
    assert first.inserted + second.inserted == 3_000
    assert first.updated + second.updated == 3_000
    assert await _count(database, registry_persons) == 3_000
