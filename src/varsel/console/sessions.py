"""Console sessions: signed cookies, the signed-in principal as a FastAPI dependency, and CSRF checks.

A session is a cookie signed with the console's secret key (itsdangerous), HttpOnly, SameSite=Strict, Secure when
the public URL is https, holding whom it acts as, its CSRF token and when it ends. Nothing is stored server-side:
signing out deletes the cookie, and a session ends at its expiry (console.session_minutes after sign-in), judged by
the injected clock, never later, whatever the browser keeps. Changing the secret key ends every session.

Every state-changing form carries the session's CSRF token (``{{ csrf_field() }}`` in a template; htmx requests also
carry it in the X-CSRF-Token header, set on the page's body by base.html); ``checked_form`` reads the form and
refuses (403) a POST without it, with another, or from another origin.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.datastructures import FormData

from varsel.clock import Clock
from varsel.console.principal import Principal
from varsel.console.web import ConsoleForbidden, ConsoleNotFound, SignInRequired, console_of

log = logging.getLogger("varsel.console")

SESSION_COOKIE = "varsel_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_SALT = "varsel.console.session"
_KEY_FILE = "console-secret-key"


# A kept key shorter than this is no key: an empty file would sign every session with "", which anyone can forge.
SHORTEST_KEY = 32


def ensure_secret_key(path: Path) -> str:
    """The key kept in the data folder for deployments that set none: made once, readable by its owner only.

    The key is written to a file of its own and then linked into place, so the key file, once it exists, always
    holds a whole key: of two processes starting at once, one links its key and the other reads that one (a file
    created first and written after would let the other read it empty in between, and sign with an empty key)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{secrets.token_hex(8)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(48))
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:
                raise
            except OSError:
                # A file system without hard links: create the file exclusively and write it. A process reading it
                # in between reads it short and refuses to start (below) rather than sign with it.
                _write_exclusively(path, draft.read_text())
        except FileExistsError:
            pass  # another process made the key first: use that one
        finally:
            draft.unlink(missing_ok=True)
    key = path.read_text().strip()
    if len(key) < SHORTEST_KEY:
        # Left by an interrupted write of an older version, or edited by hand: never sign sessions with it.
        raise ValueError(
            f"the console's key file {path} holds no usable key (fewer than {SHORTEST_KEY} characters): "
            "delete it to have a new one made, or set VARSEL_CONSOLE__SECRET_KEY"
        )
    return key


def _write_exclusively(path: Path, key: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key)


def secret_key_file(data_dir: Path) -> Path:
    return data_dir / _KEY_FILE


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires: datetime


class SessionCodec:
    """Turns sessions into cookie values and back; a value with a bad signature, or past its expiry, is no session."""

    def __init__(self, secret_key: str, clock: Clock, lifetime: timedelta, salt: str = _SALT) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt=salt)
        self._clock = clock
        self.lifetime = lifetime

    def new(self, principal: Principal) -> Session:
        return Session(principal, secrets.token_urlsafe(24), self._clock.now() + self.lifetime)

    def dumps(self, session: Session) -> str:
        principal = session.principal
        payload = {
            "o": principal.org,
            "a": principal.admin,
            "n": principal.name,
            "c": session.csrf,
            "e": int(session.expires.timestamp()),
        }
        return str(self._serializer.dumps(payload))

    def loads(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            payload: Any = self._serializer.loads(value)
        except BadSignature:
            return None
        try:
            expires = datetime.fromtimestamp(int(payload["e"]), tz=UTC)
            principal = Principal(org=payload["o"], admin=bool(payload["a"]), name=str(payload["n"]))
            csrf = str(payload["c"])
        except (KeyError, TypeError, ValueError):
            return None
        if expires <= self._clock.now():
            return None
        return Session(principal, csrf, expires)


def secure_cookies(request: Request) -> bool:
    public_url = console_of(request).public_url
    return (urlsplit(public_url).scheme if public_url else request.url.scheme) == "https"


def start_session(request: Request, response: Response, principal: Principal) -> Session:
    """Signs the principal in: a new session (and CSRF token) in the response's cookie."""
    console = console_of(request)
    session = console.sessions.new(principal)
    response.set_cookie(
        SESSION_COOKIE,
        console.sessions.dumps(session),
        # Max-Age, not Expires: the browser's clock need not agree with ours; the server judges the expiry itself.
        max_age=int(console.sessions.lifetime.total_seconds()),
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    log.info("console sign-in as %s (%s)", principal.label, principal.name)
    return session


def end_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure_cookies(request)
    )


def current_session(request: Request) -> Session:
    """The request's session; SignInRequired (to the sign-in page) without a valid one."""
    session = console_of(request).sessions.loads(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired()
    request.state.console_session = session
    return session


def signed_in(session: Session = Depends(current_session)) -> Principal:
    """The dependency every console page takes: who is signed in (an org or an admin)."""
    return session.principal


def admin_only(principal: Principal = Depends(signed_in)) -> Principal:
    """For admin pages: an org session gets the same 404 as for a page that does not exist."""
    if not principal.admin:
        raise ConsoleNotFound()
    return principal


def same_origin(request: Request) -> bool:
    """Whether a POST comes from a page of ours: browsers send Origin with every POST. Compared by host and port
    only, since a TLS-terminating proxy makes the scheme we see differ from the browser's."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site POST (those carry Origin); the CSRF token still has to match
    expected = urlsplit(console_of(request).public_url).netloc if console_of(request).public_url else None
    return urlsplit(origin).netloc == (expected or request.headers.get("host", ""))


async def checked_form(request: Request, session: Session = Depends(current_session)) -> FormData:
    """The posted form, once its CSRF token is the session's: the dependency of every state-changing console POST."""
    if not same_origin(request):
        raise ConsoleForbidden("This form came from another site.")
    form = await request.form()
    # In the form, or in the header htmx adds to each of its requests (hx-headers on the page's body).
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise ConsoleForbidden("The form's security token is missing or out of date. Reload the page and try again.")
    return form
