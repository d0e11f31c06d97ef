"""Concurrent registry look-ups are answered together: one query for the look-ups that arrive while one is under
way, each caller getting exactly its own keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from tests.recipients.registry_data import load
from tests.recipients.test_lookup import ORG_BOTH, ORG_SMS_ONLY, PLAIN, REGISTRY, RESERVED, UNKNOWN
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.recipients.registry import LocalRegistry, _Coalesced


@pytest.fixture
def statements(database: Database) -> Iterator[list[str]]:
    """Every SQL statement the engine sends, as sent: the real queries, observed, not replaced."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)


def _person_queries(sent: list[str]) -> int:
    return sum(1 for s in sent if "FROM registry_persons" in s)


async def test_concurrent_person_look_ups_share_queries_and_each_gets_its_own_keys(
    database: Database, clock: FrozenClock, statements: list[str]
) -> None:
    assert (await load(database, clock, REGISTRY)).rejected == []
    registry = LocalRegistry(database)
    asked = [[PLAIN], [RESERVED], [PLAIN, UNKNOWN], [UNKNOWN], [RESERVED, PLAIN]] * 8
    statements.clear()
    answers = await asyncio.gather(*(registry.persons(keys) for keys in asked))
    for keys, answer in zip(asked, answers, strict=True):
        assert set(answer) == set(keys) - {UNKNOWN}
        for number, contact in answer.items():
            assert contact.national_identity_number == number
    assert answers[1][RESERVED].is_reserved
    assert not answers[0][PLAIN].is_reserved
    # Forty look-ups: the first goes alone, the rest arrive while it is under way and go together.
    assert 1 <= _person_queries(statements) <= 2, statements


async def test_a_look_up_alone_is_sent_at_once_and_empty_asks_nothing(
    database: Database, clock: FrozenClock, statements: list[str]
) -> None:
    assert (await load(database, clock, REGISTRY)).rejected == []
    registry = LocalRegistry(database)
    statements.clear()
    assert await registry.persons([]) == {}
    assert statements == []
    assert set(await registry.persons([PLAIN])) == {PLAIN}
    assert set(await registry.organizations([ORG_BOTH, ORG_SMS_ONLY, "999999999"])) == {ORG_BOTH, ORG_SMS_ONLY}
    assert _person_queries(statements) == 1


async def test_a_failed_query_fails_every_look_up_it_was_answering_and_the_next_ones_work(
    database: Database, clock: FrozenClock
) -> None:
    assert (await load(database, clock, REGISTRY)).rejected == []
    registry = LocalRegistry(database)
    broken = {"on": True}

    def fail(*_: Any) -> None:
        if broken["on"]:
            raise RuntimeError("the database went away")

    event.listen(database.engine.sync_engine, "before_cursor_execute", fail)
    try:
        outcomes = await asyncio.gather(*(registry.persons([PLAIN]) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        broken["on"] = False
        assert set(await registry.persons([PLAIN, RESERVED])) == {PLAIN, RESERVED}
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", fail)


async def test_many_keys_are_split_across_queries_and_none_is_lost(database: Database, clock: FrozenClock) -> None:
    records: list[dict[str, Any] | str] = [
        {"kind": "person", "nationalIdentityNumber": f"{n:011d}", "name": f"P{n}", "emailAddress": f"p{n}@e.no"}
        for n in range(1, 301)
    ]
    assert (await load(database, clock, records)).rejected == []
    registry = LocalRegistry(database)
    registry._persons = _Coalesced(registry._fetch_persons, max_keys=50)  # small batches, to see the split
    asked = [[f"{n:011d}" for n in range(start, start + 30)] for start in range(1, 301, 30)]
    answers = await asyncio.gather(*(registry.persons(keys) for keys in asked))
    for keys, answer in zip(asked, answers, strict=True):
        assert sorted(answer) == keys
