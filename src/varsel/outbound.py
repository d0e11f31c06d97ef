"""Requests varsel makes to URLs others named (condition endpoints, attachment stores), kept off internal addresses.

varsel calls such URLs from inside its own network, so they must not be a way in: the host is read as the resolver
and httpx read it (``hostnames.dns_name``), resolved here, every address it resolves to must be public, and the
request goes to that checked address (so a second, different DNS answer cannot slip in), with TLS still verifying
the certificate for the name (httpcore's ``sni_hostname`` extension). Hosts the operator trusts by exact name skip the
address check (an internal service on purpose). Callers follow redirects by hand and check each hop here again.

The resolver is a constructor argument (the event loop's getaddrinfo by default): DNS is the outside world, and a
test makes a name resolve to an internal address with it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

from varsel.hostnames import dns_name, is_public_name

# (host, port) -> the addresses it resolves to, as text.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class RefusedAddress(Exception):
    """The URL may not be requested: not http(s), a host that is no DNS name, or an address that is not public."""


class Unresolvable(RefusedAddress):
    """The name did not resolve. A refusal to a condition check; a caller may treat it as passing (DNS fails)."""


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def authority(host: str, port: int | None) -> str:
    literal = f"[{host}]" if ":" in host else host
    return f"{literal}:{port}" if port else literal


# IPv6 ranges that carry an IPv4 address in their low 32 bits, and reach it when requested: NAT64's well-known prefix
# (RFC 6052: the gateway translates to that IPv4 address, 64:ff9b::7f00:1 to its own loopback), the deprecated
# IPv4-compatible addresses (RFC 4291) and SIIT's IPv4-translated ones (RFC 2765). Python's is_global judges the
# IPv6 range only, and calls all of them global whatever they carry.
_CARRIES_IPV4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)
# NAT64 for local use (RFC 8215): the operator's own translator, with the IPv4 address wherever the operator put it.
# No address in it is judged public.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a request to `address` reaches through a translator or tunnel: IPv4-mapped, NAT64's
    well-known prefix, IPv4-compatible and -translated (the low 32 bits), 6to4 (2002::/16) and Teredo (2001::/32:
    its server and its client, the client as un-obfuscated)."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if any(address in network for network in _CARRIES_IPV4):
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global excludes loopback, private, link-local (169.254.0.0/16: the cloud metadata service), shared,
    # reserved and documentation ranges.
    return address.is_global and not address.is_multicast


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is the IPv4 address itself to the socket: judged as that alone.
            return _is_public(address.ipv4_mapped)
        if address in _LOCAL_NAT64:
            return False
        # Both must be public: what a translator or tunnel delivers the request to, and the IPv6 range itself
        # (Python's table has Teredo's 2001::/32 as not global whatever it carries; :: and ::1 sit in ::/96).
        if not all(_is_public(carried) for carried in embedded_ipv4(address)):
            return False
    return _is_public(address)


@dataclass(frozen=True)
class CheckedTarget:
    """Where a checked request goes: `url` names the checked address (or the trusted name), `host` the DNS name."""

    url: str
    host: str
    headers: dict[str, str]
    extensions: dict[str, str] = field(default_factory=dict)


def split_url(url: str, schemes: Collection[str] = ("http", "https")) -> tuple[SplitResult, str]:
    """The URL's parts and its host as DNS reads it; RefusedAddress when it is no URL varsel requests."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (read for its ValueError: a port that is no number)
    except ValueError:  # a bracket left open, a port that is no number: from a redirect, say
        raise RefusedAddress(f"not a valid URL: {url[:200]}") from None
    if parts.scheme not in schemes or not parts.hostname:
        named = "http(s)" if set(schemes) == {"http", "https"} else "/".join(sorted(schemes))
        raise RefusedAddress(f"not an {named} URL: {url[:200]}")
    try:
        host = dns_name(parts.hostname)
    except ValueError as error:
        raise RefusedAddress(f"the host cannot be read as a DNS name: {error}") from None
    return parts, host


class OutboundGuard:
    def __init__(
        self,
        trusted_hosts: frozenset[str],
        resolver: Resolver | None = None,
        schemes: Collection[str] = ("http", "https"),
    ) -> None:
        # Names (as dns_name reads them) requested without any address check.
        self._trusted = trusted_hosts
        self._resolve = resolver or system_resolver
        self._schemes = tuple(schemes)

    async def target(self, url: str) -> CheckedTarget:
        """Where to send a request for `url`; RefusedAddress when it may not be sent anywhere."""
        parts, host = split_url(url, self._schemes)
        port = parts.port
        host_authority = authority(host, port)
        if host in self._trusted:
            userinfo, at, _ = parts.netloc.rpartition("@")
            target = urlunsplit((parts.scheme, userinfo + at + host_authority, parts.path or "/", parts.query, ""))
            extensions: dict[str, str] = {}
        else:
            address = await self.public_address(host, port or (443 if parts.scheme == "https" else 80))
            target = urlunsplit((parts.scheme, authority(address, port), parts.path or "/", parts.query, ""))
            # TLS still verifies the certificate for the name, not the address.
            extensions = {"sni_hostname": host}
        return CheckedTarget(target, host, {"Host": host_authority}, extensions)

    async def public_address(self, host: str, port: int) -> str:
        """A public address of `host` (a DNS name or an IP literal); RefusedAddress if it has any other."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            if not is_public_address(literal):
                raise RefusedAddress(f"{host} is not a public address")
            return str(literal)
        if not is_public_name(host):
            # Refused before any lookup: such a name is answered, if at all, by a resolver inside the network.
            raise RefusedAddress(f"{host} is not public: only DNS names with a top-level domain are called")
        try:
            answered = await self._resolve(host, port)
        except (socket.gaierror, OSError) as error:
            raise Unresolvable(f"{host} does not resolve: {error}") from error
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answered]
        except ValueError:
            raise RefusedAddress(f"{host} resolves to something that is no IP address") from None
        refused = [a for a in addresses if not is_public_address(a)]
        if not addresses or refused:
            # One internal answer among public ones is enough to refuse: the name is pointed inside.
            raise RefusedAddress(f"{host} resolves to an address that is not public ({refused[0] if refused else '-'})")
        return str(addresses[0])
