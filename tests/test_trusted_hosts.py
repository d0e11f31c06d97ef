"""Trusted hosts (#19): without a public URL, links follow the Host header, so only names of this service are
answered; any other Host gets a 400 problem before anything is read or stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from varsel.app import Varsel, build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import Settings

V1 = "/notifications/api/v1"
ORDER = {"body": "Hei", "recipients": [{"mobileNumber": "+4799999999"}], "sendersReference": "trusted-hosts"}

Client = Callable[..., Any]


@pytest.fixture
async def client_for(
    tmp_path: Path, database: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """client_for(**settings): an in-process client of an app built with these settings (trusted_hosts etc.)."""
    # The suite trusts every host (conftest); here the default is what is tested.
    monkeypatch.delenv("VARSEL_TRUSTED_HOSTS", raising=False)
    built: list[Varsel] = []
    clients: list[httpx.AsyncClient] = []

    def make(**values: Any) -> httpx.AsyncClient:
        settings = Settings(data_dir=tmp_path / "var", **values)
        varsel = build(settings, clock=clock, database=database)
        built.append(varsel)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(varsel)), base_url="http://localhost")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for varsel in built:
        await varsel.http.aclose()


async def _post(client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], host: str) -> httpx.Response:
    return await client.post(f"{V1}/orders/sms", json=ORDER, headers={**auth(), "Host": host})


async def _stored(client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]) -> int:
    listed = await client.get(f"{V1}/orders", params={"sendersReference": "trusted-hosts"}, headers=auth())
    assert listed.status_code == 200, listed.text
    count: int = listed.json()["count"]
    return count


def _assert_untrusted(response: httpx.Response, host: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Untrusted host"
    assert "VARSEL_TRUSTED_HOSTS" in problem["detail"]
    assert "location" not in response.headers
    assert problem["traceId"]


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "127.0.0.2",
        "",
        # Not hosts at all, though a loose reading finds "localhost" or "::1" in them; some Starlette versions
        # built links such as http://localhost:@evil.example/… from them (#19 review).
        "localhost:@evil.example",
        "localhost:80@evil.example",
        "[::1]@evil.example",
        "localhost:port",
        "localhost/evil",
        "[::1",
    ],
)
async def test_by_default_only_loopback_names_are_answered(
    client_for: Callable[..., httpx.AsyncClient], auth: Callable[..., dict[str, str]], host: str
) -> None:
    client = client_for()
    _assert_untrusted(await _post(client, auth, host), host)
    assert await _stored(client, auth) == 0


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "LOCALHOST.", "127.0.0.1:8080", "[::1]:8080"])
async def test_loopback_names_are_answered_and_links_follow_them(
    client_for: Callable[..., httpx.AsyncClient], auth: Callable[..., dict[str, str]], host: str
) -> None:
    client = client_for()
    response = await _post(client, auth, host)
    assert response.status_code == 202, response.text
    assert response.headers["location"].startswith(f"http://{host}{V1}/orders/")


async def test_with_a_public_url_any_host_is_answered_and_links_follow_the_public_url(
    client_for: Callable[..., httpx.AsyncClient], auth: Callable[..., dict[str, str]]
) -> None:
    # In-cluster callers (http://varsel:8080) must reach it; links no longer depend on the Host header at all.
    client = client_for(public_url="https://varsel.example.no")
    for host in ("varsel.example.no", "varsel:8080", "evil.example"):
        response = await _post(client, auth, host)
        assert response.status_code == 202, response.text
        assert response.headers["location"].startswith(f"https://varsel.example.no{V1}/orders/")


async def test_a_public_url_with_configured_hosts_answers_only_those(
    client_for: Callable[..., httpx.AsyncClient], auth: Callable[..., dict[str, str]]
) -> None:
    client = client_for(public_url="https://varsel.example.no", trusted_hosts=["varsel.example.no", "localhost"])
    assert (await _post(client, auth, "varsel.example.no")).status_code == 202
    _assert_untrusted(await _post(client, auth, "evil.example"), "evil.example")
    assert await _stored(client, auth) == 1


@pytest.mark.parametrize("entry", ["varsel.example.no:8443", "https://varsel.example.no", "varsel.example.no/", "*x"])
def test_a_trusted_host_entry_that_is_no_host_name_stops_the_service_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="trusted_hosts"):
        Settings(trusted_hosts=["localhost", entry])


def test_ipv6_and_wildcard_entries_are_host_names() -> None:
    assert Settings(trusted_hosts=["::1", "[::1]", "*.example.org", "*", "varsel."]).trusted_hosts


async def test_configured_names_and_wildcards(
    client_for: Callable[..., httpx.AsyncClient], auth: Callable[..., dict[str, str]]
) -> None:
    client = client_for(trusted_hosts=["varsel.example.no", "*.varsel.example.org"])
    for host in ("varsel.example.no", "a.varsel.example.org", "b.a.varsel.example.org:443"):
        assert (await _post(client, auth, host)).status_code == 202, host
    # A configured list replaces the default: loopback is not answered unless it is listed.
    for host in ("varsel.example.org", "evilvarsel.example.org", "localhost", "varsel.example.no.evil.example"):
        _assert_untrusted(await _post(client, auth, host), host)


async def test_a_star_answers_any_host(
    client_for: Callable[..., httpx.AsyncClient], auth: Callable[..., dict[str, str]]
) -> None:
    client = client_for(trusted_hosts=["*"])
    response = await _post(client, auth, "anything.example")
    assert response.status_code == 202
    assert response.headers["location"].startswith("http://anything.example/")


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics"])
async def test_health_and_metrics_answer_any_host(client_for: Callable[..., httpx.AsyncClient], path: str) -> None:
    # Orchestrators probe by address (Host: 10.1.2.3:8080); these answers carry no links.
    client = client_for()
    assert (await client.get(path, headers={"Host": "10.1.2.3:8080"})).status_code == 200


@pytest.mark.parametrize(
    ("value", "hosts"),
    [
        ("varsel.example.no, *.example.org", ["varsel.example.no", "*.example.org"]),
        ('["varsel.example.no", "localhost"]', ["varsel.example.no", "localhost"]),
        ("*", ["*"]),
    ],
)
def test_trusted_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, hosts: list[str]) -> None:
    monkeypatch.setenv("VARSEL_TRUSTED_HOSTS", value)
    settings = Settings()
    assert settings.trusted_hosts == hosts
    assert settings.answered_hosts() == hosts


def test_default_answered_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VARSEL_TRUSTED_HOSTS", raising=False)
    assert Settings().answered_hosts() == ["localhost", "127.0.0.1", "::1"]
    assert Settings(public_url="https://varsel.example.no:8443/base").answered_hosts() == ["*"]
