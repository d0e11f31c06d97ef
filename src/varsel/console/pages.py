"""The console's home, sign-in by one-time link, and sign-out."""

from __future__ import annotations

import logging
import re

import httpx
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from varsel.console.oidc import FLOW_COOKIE, FLOW_SECONDS, OidcRefused
from varsel.console.principal import Principal
from varsel.console.sessions import (
    SESSION_COOKIE,
    checked_form,
    end_session,
    same_origin,
    secure_cookies,
    signed_in,
    start_session,
)
from varsel.console.web import PREFIX, ConsoleError, ConsoleForbidden, ConsoleNotFound, console_of, render

log = logging.getLogger("varsel.console")

router = APIRouter(prefix=PREFIX, include_in_schema=False)

# An OAuth 2.0 / OpenID Connect error code, as providers send them (RFC 6749 4.1.2.1, OIDC Core 3.1.2.6).
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")


@router.get("")
async def home(request: Request, principal: Principal = Depends(signed_in)) -> Response:
    return render(request, "home.html")


@router.get("/sign-in")
async def sign_in(request: Request) -> Response:
    console = console_of(request)
    if console.sessions.loads(request.cookies.get(SESSION_COOKIE)) is not None:
        return RedirectResponse(PREFIX, status_code=303)
    oidc = console.oidc
    return render(
        request,
        "sign_in.html",
        {
            "oidc": oidc is not None,
            "oidc_name": oidc.display_name if oidc is not None else "",
            "link_minutes": console.varsel.settings.console.link_minutes,
        },
    )


@router.get("/sign-in/link/{token}")
async def sign_in_link(request: Request, token: str) -> Response:
    # Showing the form uses nothing up: only its POST does.
    return render(request, "sign_in_link.html", {"token": token})


@router.post("/sign-in/link/{token}")
async def use_sign_in_link(request: Request, token: str) -> Response:
    if not same_origin(request):
        raise ConsoleForbidden("This form came from another site.")
    principal = await console_of(request).links.use(token)
    if principal is None:
        raise ConsoleForbidden(
            "This sign-in link cannot be used: it has been used already, has expired, or was never issued. "
            "Ask for a new one."
        )
    response = RedirectResponse(PREFIX, status_code=303)
    start_session(request, response, principal)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, form: FormData = Depends(checked_form)) -> Response:
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    end_session(request, response)
    return response


def _redirect_uri(request: Request) -> str:
    console = console_of(request)
    base = (console.public_url or str(request.base_url)).rstrip("/")
    assert console.oidc is not None
    return base + console.oidc.settings.redirect_path


@router.get("/sign-in/oidc")
async def oidc_start(request: Request) -> Response:
    oidc = console_of(request).oidc
    if oidc is None:
        raise ConsoleNotFound()
    try:
        url, flow = await oidc.start(_redirect_uri(request))
    except OidcRefused as error:
        log.warning("OpenID Connect sign-in could not start: %s", error)
        raise ConsoleError(str(error)) from error
    except httpx.HTTPError as error:
        log.warning("OpenID Connect sign-in could not start: %s", error)
        raise ConsoleError("The sign-in provider cannot be reached; try again shortly.") from error
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE, flow, max_age=FLOW_SECONDS, path="/", httponly=True, samesite="lax", secure=secure_cookies(request)
    )
    return response


async def oidc_callback(request: Request) -> Response:
    """Where the provider sends the browser back (console.oidc.redirect_path): registered by mount_console."""
    oidc = console_of(request).oidc
    if oidc is None:
        raise ConsoleNotFound()
    params = request.query_params
    if "error" in params:
        # Only an OAuth error code (access_denied, login_required, …) is shown: anyone can link to this page with
        # an "error" of their own, and a sentence of theirs on our page ("call this number …") is a phishing aid.
        code = params["error"]
        told = f" ({code})" if _ERROR_CODE.fullmatch(code) else ""
        raise ConsoleForbidden(f"The sign-in provider refused the sign-in{told}.")
    try:
        claims = await oidc.finish(
            params.get("code", ""), params.get("state", ""), request.cookies.get(FLOW_COOKIE), _redirect_uri(request)
        )
    except OidcRefused as error:
        raise ConsoleForbidden(str(error)) from error
    except httpx.HTTPError as error:
        log.warning("OpenID Connect sign-in could not finish: %s", error)
        raise ConsoleError("The sign-in provider cannot be reached; try again shortly.") from error
    principal = oidc.principal(claims)
    if principal is None:
        raise ConsoleForbidden(
            f"You are signed in at {oidc.display_name}, but your account names no service owner "
            f"({oidc.settings.org_claim}) and is no varsel administrator, so there is nothing here for you. "
            "Ask your administrator for access."
        )
    response = render(request, "redirect.html", {"target": PREFIX})
    response.delete_cookie(FLOW_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request))
    start_session(request, response, principal)
    return response
