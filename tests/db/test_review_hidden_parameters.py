"""Review (#17): a database error's message names no bound value. Errors are logged with their message (app.py's
handler of database errors), and the values bound to a support look-up's statements are identity numbers."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from varsel.db.engine import Database

NIN = "01017012345"


async def test_a_failing_statements_identity_number_is_not_in_its_error(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DBAPIError) as failed:
        async with database.read() as conn:
            await conn.execute(text("SELECT * FROM no_such_table WHERE national_identity_number = :nin"), {"nin": NIN})
    logging.getLogger("varsel").error("database error", exc_info=failed.value)
    assert NIN not in str(failed.value)
    assert NIN not in caplog.text
    assert "no_such_table" in caplog.text  # the statement itself is still told
