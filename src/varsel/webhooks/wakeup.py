"""Waking delivery workers when webhook events are committed, whoever wrote them and in whichever process.

Events are written at every status change, by many services (varsel.webhooks.outbox), in their transactions: waking
the worker before the commit would have it look too early. So the engine marks a connection that inserted into the
outbox, and once that connection's transaction has committed and the connection is back in the pool, this process's
worker is woken. On PostgreSQL the same insert also sends a NOTIFY on CHANNEL_WEBHOOKS in its transaction (delivered
at the commit, dropped with a rollback; one per transaction), which the other processes' listeners
(varsel.dispatch.wakeup.PostgresListener) turn into the same wake-up. Writes made past SQLAlchemy (SQLite's direct
writer) are found by polling (dispatch.poll_seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from varsel.webhooks import outbox

CHANNEL_WEBHOOKS = outbox.CHANNEL_WEBHOOKS
_WRITTEN = "varsel_webhook_events_written"
_COMMITTED = "varsel_webhook_events_committed"
_OUTBOX_INSERT = "INSERT INTO webhook_events"
_NOTIFY = f"SELECT pg_notify('{CHANNEL_WEBHOOKS}', '')"


def wake_on_committed_events(engine: AsyncEngine, wake: Callable[[], None]) -> None:
    sync_engine = engine.sync_engine
    postgresql = sync_engine.dialect.name == "postgresql"

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _executed(conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _many: bool) -> None:
        if _OUTBOX_INSERT not in statement or not _inserts_events(_cursor, statement, _context):
            return
        # A statement on an AUTOCOMMIT connection (Database.statement: PostgreSQL's one-statement writes) is
        # committed once it has run; in a transaction, only if the transaction commits.
        autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        first = _WRITTEN not in conn.info
        conn.info[_COMMITTED if autocommit else _WRITTEN] = True
        # A one-statement write (a WITH clause: outbox.notifying) sends its NOTIFY itself, and only when it wrote
        # an event; from here it would be a round trip more on every instant order, whoever subscribes.
        if postgresql and (first or autocommit) and statement.lstrip().startswith(_OUTBOX_INSERT):
            # On a cursor of its own: the insert's may still hold rows SQLAlchemy is to read (RETURNING).
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.execute(_NOTIFY)
            finally:
                cursor.close()

    @event.listens_for(sync_engine, "commit")
    def _committing(conn: Any) -> None:
        # Fired before the COMMIT is sent: remembered, and acted on once the connection is given back.
        if conn.info.pop(_WRITTEN, False):
            conn.info[_COMMITTED] = True

    @event.listens_for(sync_engine, "rollback")
    def _rolled_back(conn: Any) -> None:
        # A connection the database dropped (a restart) is invalidated: its info went with it, and reading it here
        # would raise inside the rollback, turning the caller's database outage (a 503) into a 500.
        if not conn.invalidated:
            conn.info.pop(_WRITTEN, None)

    @event.listens_for(sync_engine, "checkin")
    def _given_back(_dbapi_connection: Any, record: Any) -> None:
        if record.info.pop(_COMMITTED, False):
            wake()


def _inserts_events(cursor: Any, statement: str, context: Any) -> bool:
    """Whether the statement wrote outbox rows (or may have). PostgreSQL's one-statement writes (the instant store,
    the senders' outcomes) hold the outbox's INSERT as a WITH clause whether or not anyone subscribes, and send
    their NOTIFY themselves when they wrote an event (outbox.notifying), which this process's listener hears as any
    other's: they are not looked at here (run as driver SQL, varsel.db.one_statement.execute, they come with no
    compiled parameters; a compiled one counts when it binds events)."""
    if statement.lstrip().startswith(_OUTBOX_INSERT):
        return bool(cursor.rowcount != 0)  # -1 (not known) counts as written
    # A WITH clause (outbox.events_cte): no event bound, none written. One bound may still find no subscriber.
    parameters = getattr(context, "compiled_parameters", None) or ()
    return any(outbox.events_bound(given) for given in parameters)
