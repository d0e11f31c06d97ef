"""Which addresses varsel calls a URL at (condition endpoints, attachment stores): an IPv6 address that carries an IPv4
address (NAT64, 6to4, Teredo, IPv4-compatible, -mapped and -translated) is judged by the IPv4 address a translator or
tunnel would deliver the request to, so an internal one is not reached by writing it in IPv6."""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from varsel.dispatch.conditions import ConditionChecker, ConditionResult
from varsel.outbound import embedded_ipv4, is_public_address

# Each carries loopback, the cloud metadata service or a private address.
INTERNAL_INSIDE = [
    "64:ff9b::7f00:1",  # NAT64 well-known prefix: 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # 169.254.169.254
    "64:ff9b::a00:7",  # 10.0.0.7
    "2002:7f00:1::1",  # 6to4: 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4: 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:4136:e378:8000:63bf:3f57:fef8",  # Teredo, client 192.168.1.7
    "::127.0.0.1",  # IPv4-compatible
    "::169.254.169.254",
    "::10.0.0.7",
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT)
    "::ffff:0:a9fe:a9fe",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
]
# NAT64 for local use: the operator's translator, the IPv4 address anywhere in it; refused whatever it carries.
LOCAL_NAT64 = ["64:ff9b:1::1", "64:ff9b:1::808:808", "64:ff9b:1:ffff::7f00:1", "64:ff9b:1:0:808:808::"]
# Each carries a public address: what a request to it reaches is public.
PUBLIC_INSIDE = ["64:ff9b::808:808", "64:ff9b::5db8:d70e", "2002:808:808::1", "::8.8.8.8", "::ffff:0:808:808"]


@pytest.mark.parametrize("address", INTERNAL_INSIDE)
def test_an_ipv6_address_carrying_an_internal_ipv4_address_is_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", LOCAL_NAT64)
def test_local_use_nat64_is_never_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [*PUBLIC_INSIDE, "::ffff:8.8.8.8", "2606:4700::1111", "2a00:1450::1", "8.8.8.8"])
def test_an_ipv6_address_carrying_a_public_ipv4_address_is_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["::", "::1", "fe80::1", "fc00::1", "ff02::1", "2001:db8::1", "127.0.0.1"])
def test_the_plain_internal_addresses_stay_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


def test_teredo_is_refused_even_when_what_it_carries_is_public() -> None:
    # Server 65.54.227.120 and client 8.8.8.8: both public, but 2001::/32 is not a global range.
    address = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:f7f7:f7f7")
    assert [str(v4) for v4 in embedded_ipv4(address)] == ["65.54.227.120", "8.8.8.8"]
    assert not is_public_address(address)


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("64:ff9b::7f00:1", ["127.0.0.1"]),
        ("2002:7f00:1::1", ["127.0.0.1"]),
        ("::127.0.0.1", ["127.0.0.1"]),
        ("::ffff:0:a9fe:a9fe", ["169.254.169.254"]),
        ("::ffff:10.0.0.7", ["10.0.0.7"]),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", ["65.54.227.120", "127.0.0.1"]),  # the client un-obfuscated
        ("2606:4700::1111", []),
    ],
)
def test_the_ipv4_address_carried_is_read_as_the_translator_reads_it(address: str, carried: list[str]) -> None:
    assert [str(v4) for v4 in embedded_ipv4(ipaddress.IPv6Address(address))] == carried


# ---------------------------------------------------------------- through a condition check


class Resolver:
    """A DNS of the test's own: the one name it knows answers `answers`."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host != "conditions.example.com":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "::127.0.0.1"])
async def test_a_name_resolving_to_an_internal_address_written_in_ipv6_is_refused_without_a_request(
    address: str,
) -> None:
    resolver = Resolver(["93.184.215.14", address])
    async with httpx.AsyncClient() as http:
        answer = await ConditionChecker(http, 5.0, frozenset(), resolver).check("http://conditions.example.com/check")
    assert resolver.asked == ["conditions.example.com"]
    assert (answer.result, answer.detail) == (
        ConditionResult.FAILED,
        f"conditions.example.com resolves to an address that is not public ({ipaddress.ip_address(address)})",
    )


@pytest.mark.parametrize("url", ["http://[64:ff9b::7f00:1]/check", "http://[2002:a9fe:a9fe::1]/latest/meta-data"])
async def test_such_an_address_written_in_the_url_is_refused(url: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await ConditionChecker(http, 5.0, frozenset(), Resolver([])).check(url)
    host = ipaddress.ip_address(url.split("[")[1].split("]")[0])
    assert (answer.result, answer.detail) == (ConditionResult.FAILED, f"{host} is not a public address")
