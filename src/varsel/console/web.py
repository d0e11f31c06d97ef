"""What every console page shares: the console's services on the app, template rendering, the navigation, the error
pages and the security headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from varsel import __version__

if TYPE_CHECKING:
    from varsel.app import Varsel
    from varsel.console.oidc import OidcSignIn
    from varsel.console.sessions import SessionCodec
    from varsel.console.sign_in import SignInLinks

PREFIX = "/console"


@dataclass
class Console:
    """The console's own services, built once with the app (app.state.console)."""

    varsel: Varsel
    sessions: SessionCodec
    links: SignInLinks
    oidc: OidcSignIn | None
    templates: Environment
    public_url: str | None


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


class ConsoleError(Exception):
    """Answered with an HTML page (console routes never answer JSON problems)."""

    status = 500
    title = "Something went wrong"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.title)
        self.message = message


class ConsoleNotFound(ConsoleError):
    status = 404
    title = "Not found"


class ConsoleForbidden(ConsoleError):
    status = 403
    title = "Refused"


class SignInRequired(Exception):
    """No valid session: a page request goes to the sign-in page; a form post is refused."""


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    admin_only: bool


# The console's pages, in the navigation's order. A page not built yet answers 404 until it is.
NAVIGATION = (
    NavItem("Overview", f"{PREFIX}/overview", False),
    NavItem("Orders", f"{PREFIX}/orders", False),
    NavItem("Webhooks", f"{PREFIX}/webhooks", False),
    NavItem("Recipient lookup", f"{PREFIX}/recipients", True),
    NavItem("Delivery reports", f"{PREFIX}/reports", True),
    NavItem("Usage", f"{PREFIX}/usage", True),
)


def static_url(name: str) -> str:
    # The version in the query makes browsers fetch an asset again after an upgrade, while caching it meanwhile.
    return f"{PREFIX}/static/{name}?v={__version__}"


def build_templates() -> Environment:
    environment = Environment(
        loader=PackageLoader("varsel.console", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["static_url"] = static_url
    return environment


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page (or, for htmx, a fragment) from a template. Templates get, besides the context: ``principal`` (None
    before sign-in), ``navigation`` (the items this principal may see), ``path``, ``csrf_field()`` and
    ``static_url(name)``."""
    session = getattr(request.state, "console_session", None)
    principal = session.principal if session is not None else None
    csrf = session.csrf if session is not None else ""

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="csrf" value="{}">').format(csrf)

    values: dict[str, Any] = {
        "principal": principal,
        "navigation": [item for item in NAVIGATION if principal and (principal.admin or not item.admin_only)],
        "path": request.url.path,
        "csrf_field": csrf_field,
        "csrf": csrf,
        "version": __version__,
    }
    values.update(context or {})
    body = console_of(request).templates.get_template(template).render(values)
    return HTMLResponse(body, status_code=status, headers=dict(headers or {}))


def error_page(request: Request, status: int, title: str, message: str | None) -> HTMLResponse:
    return render(request, "message.html", {"title": title, "message": message}, status=status)


# No inline script or style anywhere: scripts, styles and fonts come from the package only; nothing may frame us.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: with it browsers send "Origin: null" on our own form posts, and same_origin refuses those.
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    """Adds the console's security headers to every response under /console (pages, fragments, assets, errors).
    Pages are not cached (they show data a later visitor of the same browser should not see); assets are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(f"{PREFIX}/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                headers += _HEADERS
                headers.append((b"cache-control", b"public, max-age=86400" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
