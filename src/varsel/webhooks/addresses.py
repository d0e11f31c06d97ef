"""Which URLs a webhook subscription may name: one rule for the API (at creation and change) and the delivery worker.

varsel posts to these URLs from inside its own network, so they must not be a way in. A URL is https, names its host
by a public DNS name, and carries no credentials; the host must resolve to public addresses only, checked when the
subscription is made (when the name resolves then) and again at every delivery, where the request goes to the very
address checked (varsel.outbound); the URL's rule is run again at every delivery too, as the allow-list may have
changed since. The operator's allow-list (settings.webhooks.allowed_hosts) takes exact names and `*.` suffixes, as
the attachments' does: a name listed exactly may be any host (an internal name, an IP literal, a test's loopback
peer), plain http included, and is delivered to without the address check; a host matched only by a suffix may use
plain http, but must still be a public DNS name that resolves to public addresses (a suffix admits names nobody
listed one by one, so it cannot vouch for where they point).
"""

from __future__ import annotations

import asyncio
import ipaddress
import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit

from varsel.hostnames import HostAllowList, dns_name, is_public_name
from varsel.outbound import CheckedTarget, OutboundGuard, RefusedAddress, Resolver, Unresolvable

ALLOWED_HOSTS_SETTING = "VARSEL_WEBHOOKS__ALLOWED_HOSTS"
MAX_URL_CHARS = 2_000
# How long creation waits for the host's name to resolve; a name that does not answer in time is checked at delivery.
RESOLVE_SECONDS = 3.0
# Spaces, control and formatting characters (a right-to-left override, say): none belongs in a URL, and urlsplit
# silently drops some (tabs, line breaks), so the host checked would not be the host called.
_NOT_IN_A_URL = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_HINT = f" (unless the operator of this service lists the host in {ALLOWED_HOSTS_SETTING})"
# For a host a `*.` suffix of the allow-list matches: only listing it by its exact name lifts the check.
_EXACT_HINT = (
    f" (a '*.' suffix in {ALLOWED_HOSTS_SETTING} lifts only the https rule: the operator must list the host there by "
    "its exact name to lift this one)"
)


class WebhookHosts(HostAllowList):
    """The operator's allow-list and the outbound guard built on it."""

    def __init__(self, allowed: Iterable[str], resolver: Resolver | None = None) -> None:
        super().__init__(allowed)
        self.guard = OutboundGuard(self.exact, resolver, schemes=("http", "https"))

    async def target(self, url: str) -> CheckedTarget:
        """Where a delivery to `url` goes, both rules checked now: the URL's (the allow-list may have changed since
        the subscription was made: plain http to a host no longer listed is refused) and the address's."""
        problem = self.url_problem(url)
        if problem is not None:
            raise RefusedAddress(problem)
        return await self.guard.target(url)

    def url_problem(self, url: str) -> str | None:
        """Why `url` cannot be a webhook endpoint (a sentence for the problem's errors), or None."""
        if len(url) > MAX_URL_CHARS:
            return f"The URL must be at most {MAX_URL_CHARS} characters long."
        if any(unicodedata.category(character) in _NOT_IN_A_URL for character in url):
            return "The URL must not contain spaces, control or formatting characters."
        try:
            parts = urlsplit(url)
            written = parts.hostname or ""
            _ = parts.port  # raises on a port that is no number
        except ValueError:
            return "The URL is not a valid URL."
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not written.rstrip("."):
            return "The URL must be an absolute https URL."
        if parts.username is not None or parts.password is not None:
            return "The URL must not carry credentials (user:password@): verify deliveries by their signature."
        try:
            host = dns_name(written)
        except ValueError as error:
            return f"The URL's host cannot be read as a DNS name: {error}."
        if host in self.exact:
            return None
        by_suffix = self.by_suffix(host)
        hint = _EXACT_HINT if by_suffix else _HINT
        if scheme != "https" and not by_suffix:
            return f"The URL must use https{_HINT}."
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return f"The URL must name its host by a DNS name, not an IP address{hint}."
        if not is_public_name(host):
            return f"The URL's host must be a public DNS name with a top-level domain{hint}."
        return None

    async def address_problem(self, url: str) -> str | None:
        """Why `url` (which passed url_problem) may not be posted to, judged by what its host resolves to now;
        None when it resolves to public addresses only, is trusted by name, or does not resolve (yet)."""
        try:
            async with asyncio.timeout(RESOLVE_SECONDS):
                await self.guard.target(url)
        except Unresolvable:
            return None
        except TimeoutError:
            return None
        except RefusedAddress as error:
            hint = _EXACT_HINT if self.by_suffix(dns_name(urlsplit(url).hostname or "")) else _HINT
            return f"The URL's host is refused: {error}{hint}."
        return None
