"""The shape of a one-statement write (varsel.db.one_statement): which columns its rows give, in the table's order."""

from __future__ import annotations

import pytest

from varsel.db.one_statement import parameters, shape
from varsel.db.tables import orders


def test_the_columns_the_rows_give_in_the_tables_order_whatever_each_row_gives() -> None:
    rows = [{"status": "Processed", "id": 1}, {"creator": "ttd", "id": 2}]
    assert shape(orders, rows) == ("id", "creator", "status")
    # Asked again with the same keys in another order: the same answer (kept per set of keys).
    assert shape(orders, [{"creator": "x", "status": "y", "id": 3}]) == ("id", "creator", "status")
    assert parameters(rows, ("id", "creator", "status"), "new") == {
        "new_id": [1, 2],
        "new_creator": [None, "ttd"],
        "new_status": ["Processed", None],
    }


def test_a_key_that_is_no_column_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match=r"not columns of orders: \['colour'\]"):
            shape(orders, [{"id": 1, "colour": "blue"}])
