"""Every console route is walled, and a new one cannot escape: the routes the app serves under /console are exactly
the ones listed here, each as open before sign-in (with its reason), for any signed-in principal, or for admins.
Without a session a page request goes to the sign-in page and a form post is refused; an org session gets the
console's 404 for an admin page. (The API's bearer-token routes have their own matrix:
tests/auth/test_authentication.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.conftest import ConsoleServer, http_client
from varsel.app import Varsel, create_app

# Open before sign-in, each with its reason.
OPEN = {
    ("GET", "/console/sign-in"): "the sign-in page",
    ("GET", "/console/sign-in/link/{token}"): "a one-time link's page: shows a button, uses nothing up",
    ("POST", "/console/sign-in/link/{token}"): "uses the one-time link: the token is the credential",
    ("GET", "/console/sign-in/oidc"): "starts OpenID Connect sign-in",
    ("GET", "/console/sign-in/oidc/callback"): "OpenID Connect's way back: state, nonce and the flow cookie",
    **{
        (method, "/console/{rest:path}"): "no such page: the console's 404 page"
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    },
}
# For any signed-in principal (an org sees its own orders only: tests/console/test_pages_orders.py).
SIGNED_IN = {
    ("GET", "/console"),
    ("POST", "/console/sign-out"),
    ("GET", "/console/overview"),
    ("GET", "/console/orders"),
    ("GET", "/console/orders/{order_id}"),
    ("POST", "/console/orders/{order_id}/cancel"),
    # An org sees and enables its own webhook subscriptions only: tests/webhooks/test_console.py.
    ("GET", "/console/webhooks"),
    ("POST", "/console/webhooks/{subscription_id}/enable"),
}
# Admins only: an org session gets the console's 404.
ADMIN = {
    ("GET", "/console/reports"),
    ("POST", "/console/reports/retry"),
    ("GET", "/console/recipients"),
    ("POST", "/console/recipients"),
    ("GET", "/console/usage"),
    ("GET", "/console/usage.csv"),
}
_FILLED = {
    "{token}": "0" * 64,
    "{order_id}": "00000000-0000-0000-0000-000000000001",
    "{subscription_id}": "00000000-0000-0000-0000-000000000002",
}


def _served(varsel: Varsel) -> set[tuple[str, str]]:
    from fastapi.routing import iter_route_contexts

    routes: list[Any] = list(iter_route_contexts(create_app(varsel).routes))
    return {
        (method, route.path)
        for route in routes
        for method in route.methods or ()
        if method != "HEAD" and (route.path == "/console" or route.path.startswith("/console/"))
    }


def _path(template: str) -> str:
    for name, value in _FILLED.items():
        template = template.replace(name, value)
    return template


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the routes are the same on every database
def test_every_console_route_is_listed(varsel: Varsel) -> None:
    listed = set(OPEN) | SIGNED_IN | ADMIN
    assert _served(varsel) == listed
    assert len(listed) == len(OPEN) + len(SIGNED_IN) + len(ADMIN)  # no route in two lists


async def test_without_a_session_pages_go_to_sign_in_and_posts_are_refused(console: ConsoleServer) -> None:
    async with http_client(console) as anonymous:
        for method, template in sorted(SIGNED_IN | ADMIN):
            answer = await anonymous.request(method, _path(template), data={"csrf": "x"})
            if method == "GET":
                assert answer.status_code == 303, (method, template)
                assert answer.headers["location"] == "/console/sign-in"
            else:
                assert answer.status_code == 403, (method, template)


async def test_an_org_session_gets_404_for_every_admin_route(console: ConsoleServer) -> None:
    cookie, csrf = console.session("ttd")
    async with http_client(console, cookie) as org:
        for method, template in sorted(ADMIN):
            answer = await org.request(method, _path(template), data={"csrf": csrf})
            assert answer.status_code == 404, (method, template)
        for method, template in sorted(SIGNED_IN):
            if method == "GET":  # the org's own pages answer (the order here is nobody's: 404 like another org's)
                answer = await org.get(_path(template))
                assert answer.status_code == (404 if "{order_id}" in template else 200), template
