"""Mounts the console on the API's FastAPI app: its routers, static assets, error pages and security headers."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from varsel.console import pages, pages_orders, pages_overview, pages_webhooks, reports_pages, support_pages
from varsel.console.oidc import OidcSignIn
from varsel.console.sessions import SHORTEST_KEY, SessionCodec, ensure_secret_key, secret_key_file
from varsel.console.sign_in import SignInLinks
from varsel.console.web import (
    PREFIX,
    Console,
    ConsoleError,
    ConsoleNotFound,
    SecurityHeadersMiddleware,
    SignInRequired,
    build_templates,
    error_page,
)

if TYPE_CHECKING:
    from varsel.app import Varsel

log = logging.getLogger("varsel.console")

# The console's pages. A new page's router goes here (see the package's docstring).
ROUTERS: list[APIRouter] = [
    pages.router,
    reports_pages.router,
    support_pages.router,
    pages_orders.router,
    pages_overview.router,
    pages_webhooks.router,
]

_not_found = APIRouter(include_in_schema=False)


@_not_found.api_route(PREFIX + "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def _no_such_page(request: Request, rest: str) -> Response:
    # Last of the console's routes: an unknown console path gets the console's 404 page, not a JSON problem.
    raise ConsoleNotFound()


async def _console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    return error_page(request, exc.status, exc.title, exc.message)


async def _sign_in_required(request: Request, exc: Exception) -> Response:
    if request.method == "GET" and "hx-request" not in request.headers:
        response: Response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    else:
        response = error_page(request, 403, "Signed out", "Your session has ended or was never valid: sign in again.")
        response.headers["HX-Redirect"] = f"{PREFIX}/sign-in"
    return response


def _secret_key(varsel: Varsel) -> str:
    configured = varsel.settings.console.secret_key
    if configured is not None and configured.get_secret_value():
        key = configured.get_secret_value()
        if len(key) < SHORTEST_KEY:
            # Whoever holds one session cookie can try keys against its signature offline; a short or guessable key
            # found so signs an admin's session.
            log.warning(
                "VARSEL_CONSOLE__SECRET_KEY is %d characters long: use at least %d random ones "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')",
                len(key),
                SHORTEST_KEY,
            )
        return key
    if varsel.database.dialect == "postgresql":
        # Several API processes share a PostgreSQL database; each would make a key of its own in its own data folder,
        # and a session signed by one would be refused by the others.
        log.warning(
            "VARSEL_CONSOLE__SECRET_KEY is not set: console sessions are signed with a key kept in %s; "
            "set it (the same in every API process) when running more than one",
            secret_key_file(varsel.settings.data_dir),
        )
    return ensure_secret_key(secret_key_file(varsel.settings.data_dir))


def mount_console(app: FastAPI, varsel: Varsel) -> None:
    settings = varsel.settings.console
    secret_key = _secret_key(varsel)
    app.state.console = Console(
        varsel=varsel,
        sessions=SessionCodec(secret_key, varsel.clock, timedelta(minutes=settings.session_minutes)),
        links=SignInLinks(varsel.database, varsel.clock, timedelta(minutes=settings.link_minutes)),
        oidc=OidcSignIn.configured(settings.oidc, varsel.http, varsel.clock, secret_key),
        templates=build_templates(),
        public_url=varsel.settings.public_url,
    )
    for router in ROUTERS:
        app.include_router(router)
    # Paths arrive lowercased (RouteSpellingMiddleware), so the callback is registered so.
    app.add_api_route(
        settings.oidc.redirect_path.lower(), pages.oidc_callback, methods=["GET"], include_in_schema=False
    )
    app.mount(f"{PREFIX}/static", StaticFiles(packages=[("varsel.console", "static")]), name="console-static")
    app.include_router(_not_found)
    app.add_exception_handler(ConsoleError, _console_error)
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_middleware(SecurityHeadersMiddleware)
