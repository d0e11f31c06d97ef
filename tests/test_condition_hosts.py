"""Condition endpoints' hosts are judged as the resolver and httpx read them (UTS #46 and IDNA), at intake and at
send time alike: a host written with ideographic or full-width dots is the host with plain dots, and a host that
cannot be read as a DNS name is refused with a clear message."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from varsel.dispatch.conditions import ConditionChecker, ConditionResult

V1 = "/notifications/api/v1"
NOT_PUBLIC = (
    "The condition endpoint's host must be a public DNS name with a top-level domain"
    " (unless the operator of this service lists the host in VARSEL_CONDITIONS__ALLOWED_HOSTS)."
)
IP_LITERAL = (
    "The condition endpoint must name its host by a DNS name, not an IP address"
    " (unless the operator of this service lists the host in VARSEL_CONDITIONS__ALLOWED_HOSTS)."
)
# Ideographic full stop, full-width full stop, half-width ideographic full stop: dots to UTS #46, to Python's
# resolver (the "idna" codec) and to httpx alike.
DOTS = ("\u3002", "\uff0e", "\uff61")
OTHER_DOTS = [
    f"http://metadata.google{DOTS[0]}internal/computeMetadata/v1/",
    f"http://printer{DOTS[1]}local/",
    f"http://router{DOTS[2]}lan/",
    f"http://intranet{DOTS[1]}/check",  # a single label, and the root's dot
    f"http://api{DOTS[0]}localhost/check",
    "http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41.google.internal/",  # full-width letters
    "http://meta\u00addata.google.internal/",  # a soft hyphen UTS #46 drops
]
IP_LITERALS = [f"http://127{DOTS[0]}0{DOTS[0]}0{DOTS[0]}1/check", "http://\uff11\uff12\uff17.0.0.1/check"]
# No reading as a DNS name: characters UTS #46 does not allow (U+2024 and U+2488, which Python's resolver would read
# as a dot and as "1."), an empty label, an A-label that is no Punycode.
UNREADABLE = [
    "http://bad\u2024name.example.com/",
    "http://\u00e6\u2488example.com/",
    "http://b\u00fccher..example/",
    "http://b\u00fccher.xn--zz/",
]


@pytest.mark.parametrize("url", OTHER_DOTS)
@pytest.mark.parametrize("path", ["/orders", "/orders/email", "/orders/sms"])
async def test_hosts_written_with_other_dots_are_refused_at_intake(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], path: str, url: str
) -> None:
    body: dict[str, Any] = {"recipients": [{"nationalIdentityNumber": "01017012345"}], "conditionEndpoint": url}
    if path == "/orders":
        body |= {"notificationChannel": "Email", "emailTemplate": {"subject": "s", "body": "b"}}
    elif path == "/orders/email":
        body |= {"subject": "s", "body": "b"}
    else:
        body |= {"body": "b"}
    answer = await client.post(f"{V1}{path}", json=body, headers=auth())
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["errors"] == {"ConditionEndpoint": [NOT_PUBLIC]}


async def _refused(client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], url: str) -> list[str]:
    body = {"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}], "conditionEndpoint": url}
    answer = await client.post(f"{V1}/orders/email", json=body, headers=auth())
    assert answer.status_code == 400, answer.text
    errors: dict[str, list[str]] = answer.json()["errors"]
    assert list(errors) == ["ConditionEndpoint"]
    return errors["ConditionEndpoint"]


@pytest.mark.parametrize("url", IP_LITERALS)
async def test_ip_addresses_written_with_other_dots_are_refused_at_intake(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], url: str
) -> None:
    assert await _refused(client, auth, url) == [IP_LITERAL]


@pytest.mark.parametrize("url", UNREADABLE)
async def test_a_host_that_cannot_be_read_as_a_dns_name_is_refused_saying_so(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], url: str
) -> None:
    (message,) = await _refused(client, auth, url)
    assert message.startswith("The condition endpoint's host cannot be read as a DNS name: ")
    assert "not a valid internationalised domain name" in message


@pytest.mark.parametrize(
    "url",
    [
        "https://b\u00fccher.example/check",
        f"https://conditions{DOTS[0]}example{DOTS[1]}com/check",  # public, only written with other dots
        "https://EXAMPLE.com/check",
        "https://c_d.example.no./check",
    ],
)
async def test_public_names_are_accepted_as_written(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], url: str
) -> None:
    body = {"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}], "conditionEndpoint": url}
    answer = await client.post(f"{V1}/orders/email", json=body, headers=auth())
    assert answer.status_code == 202, answer.text


# ---------------------------------------------------------------- at send time


@pytest.fixture
def peer() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A loopback condition endpoint that answers true and records each call's path and Host header."""
    calls: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append((self.path, self.headers.get("Host", "")))
            body = b'{"sendNotification": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()


async def _check(url: str, allowed: frozenset[str] = frozenset()) -> tuple[ConditionResult, str]:
    async with httpx.AsyncClient() as http:
        answer = await ConditionChecker(http, 5.0, allowed).check(url)
    return answer.result, answer.detail


@pytest.mark.parametrize("url", OTHER_DOTS)
async def test_hosts_written_with_other_dots_are_refused_at_send_time_without_a_lookup(url: str) -> None:
    # An order stored before intake read hosts so, or a redirect: judged by the name the resolver would be asked
    # for, and refused before it is asked.
    result, detail = await _check(url)
    assert result is ConditionResult.FAILED
    assert detail.endswith("is not public: only DNS names with a top-level domain are called"), detail
    assert detail.split(" ")[0].isascii()


@pytest.mark.parametrize("url", UNREADABLE)
async def test_a_host_that_cannot_be_read_as_a_dns_name_is_refused_at_send_time(url: str) -> None:
    result, detail = await _check(url)
    assert result is ConditionResult.FAILED
    assert detail.startswith("the host cannot be read as a DNS name:"), detail


async def test_the_dispatcher_calls_the_host_as_the_resolver_reads_it(
    peer: tuple[str, list[tuple[str, str]]],
) -> None:
    port, calls = peer
    # The allow-listed 127.0.0.1, written with ideographic dots: the same host, called by its plain name.
    result, detail = await _check(f"http://127{DOTS[0]}0{DOTS[0]}0{DOTS[0]}1:{port}/yes", frozenset({"127.0.0.1"}))
    assert (result, detail) == (ConditionResult.SEND, "")
    assert calls == [("/yes", f"127.0.0.1:{port}")]
    # Not allow-listed, the same address written so is refused as the address it is, without a request.
    result, detail = await _check(f"http://127{DOTS[1]}0{DOTS[1]}0{DOTS[1]}1:{port}/yes")
    assert (result, detail) == (ConditionResult.FAILED, "127.0.0.1 is not a public address")
    assert len(calls) == 1
