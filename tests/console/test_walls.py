"""The console's walls, over HTTP against the served API on SQLite and PostgreSQL: sign-in links used once and only
in time, forged and expired session cookies, CSRF tokens, and what an org session may not see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from itsdangerous import URLSafeSerializer

from tests.console.conftest import ConsoleServer, http_client
from tests.console.reports_data import report_row, state_of, store_reports
from varsel.clock import FrozenClock
from varsel.console.sessions import SESSION_COOKIE
from varsel.db.engine import Database


def _token(link: str) -> str:
    return link.rsplit("/", 1)[1]


async def test_a_link_signs_in_once(console: ConsoleServer) -> None:
    link = console.link("ttd")
    path = f"/console/sign-in/link/{_token(link)}"
    async with http_client(console) as http:
        # Fetching the link (as a mail scanner does) changes nothing: it shows a button.
        shown = await http.get(path)
        assert shown.status_code == 200
        assert f'action="{path}"' in shown.text
        first = await http.post(path)
        assert first.status_code == 303
        assert first.headers["location"] == "/console"
        cookie = first.cookies[SESSION_COOKIE]
        set_cookie = first.headers["set-cookie"].lower()
        assert "httponly" in set_cookie
        assert "samesite=strict" in set_cookie
        assert "max-age=28800" in set_cookie
        assert "secure" not in set_cookie  # served over plain HTTP without an https public URL

        http.cookies.clear()
        replayed = await http.post(path)
        assert replayed.status_code == 403
        assert "cannot be used" in replayed.text
        assert SESSION_COOKIE not in replayed.cookies

    async with http_client(console, cookie) as http:
        home = await http.get("/console")
        assert home.status_code == 200
        assert '<span class="principal" title="Signed in as">ttd</span>' in home.text


async def test_an_expired_link_is_refused(console: ConsoleServer, clock: FrozenClock) -> None:
    link = console.link(admin=True)
    clock.advance(timedelta(minutes=15))
    async with http_client(console) as http:
        refused = await http.post(f"/console/sign-in/link/{_token(link)}")
        assert refused.status_code == 403
        assert SESSION_COOKIE not in refused.cookies
    fresh = console.link(admin=True)
    clock.advance(timedelta(minutes=14, seconds=59))
    async with http_client(console) as http:
        assert (await http.post(f"/console/sign-in/link/{_token(fresh)}")).status_code == 303


async def test_unknown_links_are_refused(console: ConsoleServer) -> None:
    async with http_client(console) as http:
        for token in ["0" * 64, "not-a-token", "x" * 300]:
            refused = await http.post(f"/console/sign-in/link/{token}")
            assert refused.status_code == 403, token


async def test_a_link_from_another_site_is_refused(console: ConsoleServer) -> None:
    link = console.link("ttd")
    async with http_client(console) as http:
        refused = await http.post(f"/console/sign-in/link/{_token(link)}", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        # Refused before it was used: the link still works from our own page.
        accepted = await http.post(f"/console/sign-in/link/{_token(link)}", headers={"Origin": console.url})
        assert accepted.status_code == 303


async def test_a_forged_cookie_shows_nothing(console: ConsoleServer, database: Database) -> None:
    dead = report_row("dead")
    await store_reports(database, dead)
    cookie, _ = console.session("ttd")
    _, _, signature = cookie.rpartition(".")
    admin = {"o": None, "a": True, "n": "link", "c": "c", "e": 4102444800}
    forgeries = [
        # The org's own signature on an admin's payload, and an admin's cookie signed with a key of the forger's own.
        f"{URLSafeSerializer('any').dump_payload(admin).decode()}.{signature}",
        URLSafeSerializer("guessed-key", salt="varsel.console.session").dumps(admin),
        cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"),
        "",
        "garbage",
    ]
    for forged in forgeries:
        async with http_client(console, str(forged)) as http:
            page = await http.get("/console/reports")
            assert page.status_code == 303, forged
            assert page.headers["location"] == "/console/sign-in"
            assert dead["reference"] not in page.text
            posted = await http.post("/console/reports/retry", data={"all": "1", "csrf": "c"})
            assert posted.status_code == 403
    assert await state_of(database, dead["id"]) == "dead"


async def test_an_expired_session_shows_nothing(console: ConsoleServer, database: Database, clock: FrozenClock) -> None:
    dead = report_row("dead")
    await store_reports(database, dead)
    cookie, csrf = console.session(admin=True)
    async with http_client(console, cookie) as http:
        assert (await http.get("/console/reports")).status_code == 200
        clock.advance(timedelta(hours=8))
        page = await http.get("/console/reports")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in"
        posted = await http.post("/console/reports/retry", data={"all": "1", "csrf": csrf})
        assert posted.status_code == 403
        assert dead["reference"] not in posted.text
    assert await state_of(database, dead["id"]) == "dead"


@pytest.mark.parametrize(
    ("csrf", "origin"),
    [(None, None), ("", None), ("wrong", None), ("other-session", None), ("own", "https://evil.example")],
)
async def test_a_post_without_the_sessions_csrf_token_is_refused(
    console: ConsoleServer, database: Database, csrf: str | None, origin: str | None
) -> None:
    dead = report_row("dead")
    await store_reports(database, dead)
    cookie, own = console.session(admin=True)
    _, other = console.session(admin=True)
    token = {"own": own, "other-session": other}.get(csrf or "", csrf)
    form = {"report": str(dead["id"])} | ({"csrf": token} if token is not None else {})
    headers = {"Origin": origin} if origin else {}
    async with http_client(console, cookie) as http:
        refused = await http.post("/console/reports/retry", data=form, headers=headers)
        assert refused.status_code == 403
        assert "Refused" in refused.text
    assert await state_of(database, dead["id"]) == "dead"


async def test_the_sessions_csrf_token_lets_the_post_through(console: ConsoleServer, database: Database) -> None:
    # The other side of the test above: the same post with the session's own token does retry the report.
    dead = report_row("dead")
    await store_reports(database, dead)
    cookie, csrf = console.session(admin=True)
    async with http_client(console, cookie) as http:
        done = await http.post(
            "/console/reports/retry", data={"report": str(dead["id"]), "csrf": csrf}, headers={"Origin": console.url}
        )
        assert done.status_code == 303
    assert await state_of(database, dead["id"]) == "pending"


async def test_an_org_session_cannot_see_or_retry_delivery_reports(console: ConsoleServer, database: Database) -> None:
    dead = report_row("dead")
    await store_reports(database, dead)
    cookie, csrf = console.session("ttd")
    async with http_client(console, cookie) as http:
        for path in ["/console/reports", "/console/reports?dead_before=1_00", "/console/recipients", "/console/usage"]:
            page = await http.get(path)
            assert page.status_code == 404, path
            assert dead["reference"] not in page.text
        posted = await http.post("/console/reports/retry", data={"report": str(dead["id"]), "csrf": csrf})
        assert posted.status_code == 404
        posted = await http.post("/console/reports/retry", data={"all": "1", "csrf": csrf})
        assert posted.status_code == 404
        # The navigation does not offer what it may not see.
        home = await http.get("/console")
        assert "/console/reports" not in home.text
    assert await state_of(database, dead["id"]) == "dead"


async def test_htmx_may_carry_the_token_in_a_header(console: ConsoleServer, database: Database) -> None:
    # base.html has htmx send the session's token as X-CSRF-Token with each request: an hx-post outside a form.
    dead, other = report_row("dead"), report_row("dead")
    await store_reports(database, dead, other)
    cookie, csrf = console.session(admin=True)
    async with http_client(console, cookie) as http:
        home = await http.get("/console")
        assert f"""<body hx-headers='{{"X-CSRF-Token": "{csrf}"}}'>""" in home.text
        refused = await http.post(
            "/console/reports/retry", data={"report": str(other["id"])}, headers={"X-CSRF-Token": "wrong"}
        )
        assert refused.status_code == 403
        done = await http.post(
            "/console/reports/retry",
            data={"report": str(dead["id"])},
            headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
        )
        assert done.status_code == 200
        assert "1 dead report will be tried again now." in done.text
    assert await state_of(database, dead["id"]) == "pending"
    assert await state_of(database, other["id"]) == "dead"
