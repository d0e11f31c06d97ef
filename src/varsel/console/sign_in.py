"""Sign-in to the console by one-time link: `varsel console login --org ORG` (or --admin) prints a link; following it
and pressing "Sign in" starts a session. The link's token is stored only as its SHA-256, is used at most once and
expires after console.link_minutes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from varsel.clock import Clock
from varsel.console import repository_sign_in
from varsel.console.principal import Principal
from varsel.db.engine import Database

# Links older than this past their expiry are deleted as new ones are made: long enough to tell in the table that
# a replayed link had been used, short enough that the table stays small.
_KEPT_AFTER_EXPIRY = timedelta(days=7)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SignInLinks:
    def __init__(self, database: Database, clock: Clock, lifetime: timedelta) -> None:
        self._db = database
        self._clock = clock
        self._lifetime = lifetime

    async def create(self, principal: Principal) -> str:
        """A new link's token (lowercase hex: the API lowercases paths)."""
        token = secrets.token_hex(32)
        now = self._clock.now()
        async with self._db.transaction() as conn:
            await repository_sign_in.delete_expired(conn, now - _KEPT_AFTER_EXPIRY)
            await repository_sign_in.insert_link(
                conn, _hash(token), principal.org, principal.admin, now, now + self._lifetime
            )
        return token

    async def use(self, token: str) -> Principal | None:
        """Whom the link signs in, once; None for a link unknown, used already or expired."""
        if not token or len(token) > 200:
            return None
        async with self._db.transaction() as conn:
            row = await repository_sign_in.use_link(conn, _hash(token), self._clock.now())
        if row is None:
            return None
        return Principal(org=row.org, admin=bool(row.admin), name="link")
