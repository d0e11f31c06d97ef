"""Send conditions: asking the service owner's endpoint whether an order should still be sent.

The endpoint is named by the service owner, and varsel calls it from inside its own network, so it must not be a
way in: the host is resolved here, every address it resolves to must be public, and the request goes to that
checked address (so a second, different DNS answer cannot slip in). Redirects are followed by hand and checked
the same way. Hosts an operator allow-lists skip the address check.

Every check reads the host as the resolver and httpx will (dns_name: UTS #46 and IDNA), at intake as here: written
with ideographic or full-width dots, ``metadata.google。internal`` is ``metadata.google.internal`` to both, so it is
judged as that, and a host that has no such reading is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from varsel import jsonsafe
from varsel.hostnames import dns_name, is_public_name

MAX_REDIRECTS = 3
MAX_ANSWER_BYTES = 64 * 1024


class ConditionResult(StrEnum):
    SEND = "send"
    DO_NOT_SEND = "do_not_send"
    FAILED = "failed"  # no usable answer: error, timeout, refused address, non-2xx, or a body without the flag


@dataclass(frozen=True)
class ConditionAnswer:
    result: ConditionResult
    detail: str = ""


class RefusedAddress(Exception):
    pass


def _authority(host: str, port: int | None) -> str:
    literal = f"[{host}]" if ":" in host else host
    return f"{literal}:{port}" if port else literal


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_global excludes loopback, private, link-local (169.254.0.0/16: the cloud metadata service), shared,
    # reserved and documentation ranges.
    return address.is_global and not address.is_multicast


class ConditionChecker:
    def __init__(self, client: httpx.AsyncClient, timeout: float, allowed_hosts: frozenset[str]) -> None:
        self._client = client
        self._timeout = timeout
        self._allowed = allowed_hosts

    async def check(self, url: str) -> ConditionAnswer:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._follow(url)
        except TimeoutError:
            return ConditionAnswer(ConditionResult.FAILED, f"no answer within {self._timeout} s")
        except RefusedAddress as error:
            return ConditionAnswer(ConditionResult.FAILED, str(error))
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            return ConditionAnswer(ConditionResult.FAILED, f"request failed: {error!r}")

    async def _follow(self, url: str) -> ConditionAnswer:
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = await self._get(url)
            if 300 <= status < 400 and location:
                url = urljoin(url, location)
                continue
            return _interpret(status, body)
        return ConditionAnswer(ConditionResult.FAILED, f"more than {MAX_REDIRECTS} redirects")

    async def _get(self, url: str) -> tuple[int, str | None, bytes]:
        """GET the URL at a checked address: its status, redirect location and (bounded) body."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a bracket left open, a port that is no number: from a redirect, say
            raise RefusedAddress(f"not a valid URL: {url[:200]}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedAddress(f"not an http(s) URL: {url[:200]}")
        try:
            host = dns_name(parts.hostname)
        except ValueError as error:
            raise RefusedAddress(f"the host cannot be read as a DNS name: {error}") from None
        authority = _authority(host, port)
        if host in self._allowed:
            userinfo, at, _ = parts.netloc.rpartition("@")
            target = urlunsplit((parts.scheme, userinfo + at + authority, parts.path or "/", parts.query, ""))
            extensions: dict[str, str] = {}
        else:
            address = await self._public_address(host, port or (443 if parts.scheme == "https" else 80))
            target = urlunsplit((parts.scheme, _authority(address, port), parts.path or "/", parts.query, ""))
            # TLS still verifies the certificate for the name, not the address.
            extensions = {"sni_hostname": host}
        headers = {"Host": authority, "Accept": "application/json"}
        request = self._client.build_request("GET", target, headers=headers, extensions=extensions)
        response = await self._client.send(request, follow_redirects=False, stream=True)
        try:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    break  # an answer this large is not a condition answer; what was read decides
        finally:
            await response.aclose()
        return response.status_code, response.headers.get("location"), body[:MAX_ANSWER_BYTES]

    async def _public_address(self, host: str, port: int) -> str:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            if not _is_public(literal):
                raise RefusedAddress(f"{host} is not a public address")
            return str(literal)
        if not is_public_name(host):
            # Refused before any lookup: such a name is answered, if at all, by a resolver inside the network.
            raise RefusedAddress(f"{host} is not public: only DNS names with a top-level domain are called")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise RefusedAddress(f"{host} does not resolve: {error}") from error
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        refused = [a for a in addresses if not _is_public(a)]
        if not addresses or refused:
            # One internal answer among public ones is enough to refuse: the name is pointed inside.
            raise RefusedAddress(f"{host} resolves to an address that is not public ({refused[0] if refused else '-'})")
        return str(addresses[0])


def _interpret(status: int, body: bytes) -> ConditionAnswer:
    if not 200 <= status < 300:
        return ConditionAnswer(ConditionResult.FAILED, f"answered HTTP {status}")
    try:
        answer = jsonsafe.loads(body)
    except jsonsafe.UnreadableJson as error:
        # Inconclusive like any other bad body, however hostile: nested thousands of levels deep, say.
        return ConditionAnswer(ConditionResult.FAILED, f"answer is not JSON varsel reads: {str(error)[:200]}")
    flag = answer.get("sendNotification") if isinstance(answer, dict) else None
    if flag is True:
        return ConditionAnswer(ConditionResult.SEND)
    if flag is False:
        return ConditionAnswer(ConditionResult.DO_NOT_SEND)
    return ConditionAnswer(ConditionResult.FAILED, 'answer lacks a boolean "sendNotification"')
