"""The API's own pages: Swagger UI at /docs and ReDoc at /redoc, with their scripts and styles served from the package
(api/static, see its README for versions and licences), and / pointing a person at /docs.

FastAPI's defaults load both from a CDN (and ReDoc's fonts from Google), so where varsel runs without internet
access, as it often does, the pages stayed blank.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from varsel import __version__

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
# Under /docs, lowercase (paths arrive lowercased: RouteSpellingMiddleware).
ASSETS = "/docs/assets"

router = APIRouter(include_in_schema=False)


def asset_url(name: str) -> str:
    # The version in the query makes browsers fetch an asset again after an upgrade (the assets change with varsel's
    # release, not with each request).
    return f"{ASSETS}/{name}?v={__version__}"


@router.get("/")
async def root() -> RedirectResponse:
    # A person opening varsel's address in a browser gets the API's pages: they work without signing in and list
    # every operation with its request and answer. The console (/console) needs a sign-in link from
    # `varsel console login` first, so a newcomer sent there would meet a sign-in page and nothing more.
    return RedirectResponse(DOCS_PATH, status_code=302)


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=asset_url("swagger-ui-bundle.js"),
        swagger_css_url=asset_url("swagger-ui.css"),
        swagger_favicon_url=asset_url("favicon.svg"),
        # No badge from the online validator (validator.swagger.io), which would send it the API's description.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(REDOC_PATH)
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=asset_url("redoc.standalone.js"),
        redoc_favicon_url=asset_url("favicon.svg"),
        with_google_fonts=False,
    )


def mount_docs(app: FastAPI) -> None:
    """Serve the pages and their assets; the app must be made with docs_url=None and redoc_url=None, so that
    FastAPI's own (CDN) pages are not registered first."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(packages=[("varsel.api", "static")]), name="docs-assets")
