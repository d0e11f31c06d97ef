"""Building blocks for writes made as one PostgreSQL statement (data-modifying CTEs over rows given as arrays).

A transaction of several statements costs a round trip for each, and BEGIN and COMMIT besides: the instant order's
store (the key, the order, its recipient, its notification) was six round trips and its outcome five. PostgreSQL runs
a statement whose WITH clauses insert or update as one atomic unit, so the same rows go in one round trip, without
BEGIN and COMMIT (see Database.statement). SQLite has no data-modifying CTEs: its writes stay as they are.

Rows travel as one array per column, read back into rows by unnest(): the statement's text then depends only on
which columns are given, never on how many rows. The statements are built once per such shape and kept (building
one of these from SQLAlchemy's constructs costs more CPU than the round trips it saves), and SQLAlchemy compiles
each once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, column, func
from sqlalchemy.dialects.postgresql import ARRAY


def shape(table: Table, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The columns the rows give, in the table's column order (a row without one gives NULL, as an INSERT of that
    row would). Raises ValueError for a key that is not a column."""
    # Asked for every table of every write (an instant order's store asks four times): the keys are gathered in C
    # and the answer kept per set of keys, not worked out again from the table's columns each time.
    return _shape(table, frozenset().union(*rows))


@functools.lru_cache(maxsize=1024)
def _shape(table: Table, present: frozenset[str]) -> tuple[str, ...]:
    keys = tuple(c.name for c in table.columns if c.name in present)
    unknown = present - set(keys)
    if unknown:
        raise ValueError(f"not columns of {table.name}: {sorted(unknown)}")
    return keys


def source(table: Table, keys: Sequence[str], name: str) -> Any:
    """A FROM clause named `name` with the columns `keys` of `table`, one row per element of the arrays bound as
    parameters(name, …)."""
    arrays = [bindparam(f"{name}_{key}", type_=ARRAY(table.c[key].type)) for key in keys]
    return func.unnest(*arrays).table_valued(*[column(key, table.c[key].type) for key in keys]).render_derived(name)


def parameters(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], name: str) -> dict[str, list[Any]]:
    """The arrays `source(table, keys, name)` reads the rows from."""
    return {parameter: [row.get(key) for row in rows] for parameter, key in _names(name, tuple(keys))}


@functools.lru_cache(maxsize=1024)
def _names(name: str, keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((f"{name}_{key}", key) for key in keys)
