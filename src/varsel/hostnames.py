"""Host names as the resolver reads them, and which of them the public DNS can answer.

Shared by intake (a condition endpoint is judged when the order comes in) and the dispatcher (judged again, and
called, at send time): both must read a name the same way, or a check passes one name and the call goes to another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import idna

# Names that only mean something inside a network: localhost (RFC 6761), mDNS (RFC 6762), home networks (RFC 8375),
# ICANN's private-use .internal, and the usual private suffixes.
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9\-]{1,59})$")
# One label of a host name as DNS sees it (after IDNA); underscores occur in real names, so they pass.
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?")


def dns_name(host: str) -> str:
    """`host` as the resolver is asked for it and httpx sends it, lower case and without the root's trailing dot.

    A name with any character outside ASCII is mapped as UTS #46 says (full-width and ideographic dots are dots,
    full-width letters are letters, invisible characters go) and IDNA-encoded (bücher → xn--bcher-kva). ValueError,
    saying why, when it has no such reading: checking the name as written and calling what it maps to would let
    `printer.local` written with a full-width dot (U+FF0E) past a check that refuses `printer.local`.
    """
    if host.isascii():
        name = host.lower()
    else:
        try:
            name = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as error:
            raise ValueError(f"{host!r} is not a valid internationalised domain name ({error})") from None
    return name.rstrip(".")


def is_public_name(name: str) -> bool:
    """Whether a name (as dns_name reads it) is one the public DNS can answer: two labels or more, a top-level
    domain, every label a plain one, and none of the names that only mean something inside a network."""
    labels = name.split(".")
    return (
        len(labels) >= 2
        and not name.endswith(LOCAL_SUFFIXES)
        and _TLD.match(labels[-1]) is not None
        # urlsplit keeps whatever sits between // and the path as the host: spaces, %-escapes and the like are
        # no name DNS can resolve.
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
    )


def _read_entry(entry: str) -> str:
    try:
        return dns_name(entry.strip("[]"))
    except ValueError:
        return entry.lower()  # matches nothing dns_name reads from a URL, which is what an unreadable entry is


class HostAllowList:
    """An operator's list of hosts varsel may call although they are not public (attachment stores, webhook
    receivers): exact names, or `*.` suffixes, each read as DNS reads it (dns_name), so that an entry in Unicode or
    upper case matches a URL's host as the request will resolve it. What a match permits is the caller's rule."""

    def __init__(self, allowed: Iterable[str], *, suffixes: Iterable[str] = ()) -> None:
        entries = [entry.strip() for entry in allowed if entry.strip()]
        # As the operator wrote them, for messages that name them.
        self.listed = tuple(entries)
        self.exact = frozenset(_read_entry(entry) for entry in entries if not entry.startswith("*."))
        # `suffixes`: ones the caller always allows (with their leading dot), before the operator's.
        self.suffixes = (*suffixes, *("." + _read_entry(entry[2:]) for entry in entries if entry.startswith("*.")))

    def by_suffix(self, host: str) -> bool:
        return bool(self.suffixes) and host.endswith(self.suffixes)

    def allows(self, host: str) -> bool:
        """Whether `host` (read with dns_name) is listed, exactly or by a suffix."""
        return host in self.exact or self.by_suffix(host)
