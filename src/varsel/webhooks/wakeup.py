"""Waking delivery workers when webhook events are committed, whoever wrote them and in whichever process.

Events are written at every status change, by many services (varsel.webhooks.outbox), in their transactions: waking
the worker before the commit would have it look too early. So the engine marks a connection that inserted into the
outbox, and once that connection's transaction has committed and the connection is back in the pool, this process's
worker is woken. On PostgreSQL the same insert also sends a NOTIFY on CHANNEL_WEBHOOKS in its transaction (delivered
at the commit, dropped with a rollback; one per transaction), which the other processes' listeners
(varsel.dispatch.wakeup.PostgresListener) turn into the same wake-up. Writes made past SQLAlchemy: PostgreSQL's
one-statement writes send their own NOTIFY, which this process's listener hears too; SQLite's direct writer's are
found by polling (dispatch.poll_seconds).
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
        # Only a statement that is the outbox's INSERT, and wrote a row (-1, not known, counts as written); it is
        # committed only if its transaction commits. PostgreSQL's one-statement writes (the instant store, the
        # senders' outcomes) run past SQLAlchemy, straight on the driver (Database.statement), and send their NOTIFY
        # themselves when they wrote an event (outbox.notifying), which this process's listener hears as any other's.
        if not statement.lstrip().startswith(_OUTBOX_INSERT) or _cursor.rowcount == 0:
            return
        first = _WRITTEN not in conn.info
        conn.info[_WRITTEN] = True
        if postgresql and first:
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
