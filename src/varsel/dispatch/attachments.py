"""A composed email's attachments, fetched when the email goes out (never at intake).

The URLs are the service owner's (SAS URLs on Azure Blob Storage, or an object store the operator allow-listed), and
varsel fetches them from inside its own network, so they go through the same guard as condition checks
(varsel.outbound): the host read as DNS reads it, resolved, every address public, the request sent to the checked
address, redirects (at most 3) followed by hand and checked again. On top of that only allow-listed hosts are
fetched at all: ``*.blob.core.windows.net`` always, as in the reference, and ``settings.attachments.allowed_hosts``.
A host listed by its exact name is the operator's own store and skips the address check (it may live inside the
network); a host admitted only by a ``*.`` suffix must resolve to public addresses.

One email's attachments are fetched together, within one timeout and one size cap over all of them; reading stops
as soon as the cap is passed (a Content-Length over it is refused before any of the body is read). Outcomes are the
email's, raised as the provider errors the Sender already handles, so fetching happens before the provider's guard
and its breaker never counts a store's failure:

- a 4xx from the store (but 408 and 429), a host not allow-listed, an address that is not public, a redirect
  anywhere of those: PermanentEmailError, Failed_InvalidSasUrl;
- too large: PermanentEmailError, Failed_PayloadTooLarge;
- 5xx, 429, 408, timeouts, network and DNS failures: TransientProviderError, retried with the sender's policy until
  the notification expires.

A SAS URL's query is its signature: no message or log line here carries a URL's query (``_shown``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from varsel.notifications.statuses import EmailStatus
from varsel.orders.attachments import AttachmentHosts
from varsel.outbound import OutboundGuard, RefusedAddress, Resolver, Unresolvable, split_url
from varsel.providers.base import Attachment, PermanentEmailError, TransientProviderError
from varsel.providers.http import bounded_retry_after
from varsel.settings import AttachmentSettings

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A URL's query as it may stand in a message: from "?" to the next blank.
_QUERY = re.compile(r"\?\S*")


class _Budget:
    """The bytes one email's attachments may still take, shared by its concurrent downloads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int, name: str) -> None:
        self.used += count
        if self.used > self.limit:
            raise PermanentEmailError(
                f"attachment {name!r}: the attachments of this email exceed {self.limit} bytes together",
                EmailStatus.FAILED_PAYLOAD_TOO_LARGE,
            )


def _shown(url: str) -> str:
    """The URL as messages may show it: without its query (a SAS signature), fragment or user information."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:300]
    except ValueError:
        return "(an unreadable URL)"


class AttachmentFetcher:
    """Downloads one email's attachments under the guard, the allow-list, the timeout and the size cap."""

    def __init__(
        self,
        settings: AttachmentSettings,
        *,
        resolver: Resolver | None = None,
        verify: ssl.SSLContext | str | bool = True,
        lease_seconds: float | None = None,
    ) -> None:
        self._hosts = AttachmentHosts(settings.allowed_hosts)
        self._room = asyncio.Semaphore(settings.max_concurrent_emails)
        self._guard = OutboundGuard(self._hosts.exact, resolver, schemes=("https",))
        self._limit = settings.max_bytes_per_email
        # A sender holds the email for its lease: a fetch outlasting it would let another worker take the email over
        # and send it a second time.
        self._timeout = min(settings.timeout_seconds, lease_seconds / 2) if lease_seconds else settings.timeout_seconds
        self._verify = verify
        self._tls: ssl.SSLContext | bool | None = None

    @property
    def timeout(self) -> float:
        """How long one email's attachments may take to fetch, in all."""
        return self._timeout

    def room(self) -> asyncio.Semaphore:
        """Held by a sender from fetching an email's attachments until the provider has the email: bounds how many
        emails' attachments a process holds in memory at once (settings.attachments.max_concurrent_emails)."""
        return self._room

    def _tls_context(self) -> ssl.SSLContext | bool:
        # Built once, on first use (loading the trust store costs milliseconds); each email's fetch gets a client of
        # its own with it.
        if self._tls is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._tls = self._verify
            elif isinstance(self._verify, str):
                self._tls = ssl.create_default_context(cafile=self._verify)
            else:
                self._tls = httpx.create_ssl_context() if self._verify else False
        return self._tls

    async def fetch(self, specs: Sequence[Mapping[str, Any]] | None) -> tuple[Attachment, ...]:
        """The attachments an order lists ({"filename", "mimeType", "url"} each), in its order, with their content."""
        if not specs:
            return ()
        budget = _Budget(self._limit)
        # A client per email, without keep-alive: a pooled connection is matched by address only, so one opened
        # (and its certificate verified) for one store name could carry a request meant for another name that
        # resolves to the same address.
        async with httpx.AsyncClient(
            verify=self._tls_context(),
            follow_redirects=False,
            timeout=httpx.Timeout(self._timeout),
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            try:
                async with asyncio.timeout(self._timeout):
                    async with asyncio.TaskGroup() as group:
                        tasks = [group.create_task(self._one(client, spec, budget)) for spec in specs]
            except TimeoutError:
                raise TransientProviderError(
                    f"the attachments could not be fetched within {self._timeout:g} s"
                ) from None
            except BaseExceptionGroup as group_error:
                raise _first(group_error) from None
        return tuple(task.result() for task in tasks)

    async def _one(self, client: httpx.AsyncClient, spec: Mapping[str, Any], budget: _Budget) -> Attachment:
        name = str(spec.get("filename") or "")
        url = str(spec.get("url") or "")
        first = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                location = await self._get(client, url, name, budget)
                if isinstance(location, bytes):
                    return Attachment(filename=name, mime_type=str(spec.get("mimeType") or ""), content=location)
                url = urljoin(url, location)
        except RefusedAddress as error:
            if isinstance(error, Unresolvable):
                # DNS failing is often passing (a resolver away); a store that is gone ends with the SAS URL's expiry.
                raise TransientProviderError(_detail(name, first, str(error))) from None
            # Permanent: the host is not one varsel fetches from, or its name points inside the network. Neither
            # changes by waiting, and trying again would only keep asking for an internal address on the
            # service owner's word; the service owner must send a URL varsel may fetch.
            raise PermanentEmailError(_detail(name, first, str(error)), EmailStatus.FAILED_INVALID_SAS_URL) from None
        except httpx.TimeoutException as error:
            raise TransientProviderError(_detail(name, first, f"timed out ({type(error).__name__})")) from None
        except httpx.TransportError as error:
            raise TransientProviderError(_detail(name, first, f"request failed ({type(error).__name__})")) from None
        except httpx.InvalidURL:
            raise PermanentEmailError(
                _detail(name, first, "not a valid URL"), EmailStatus.FAILED_INVALID_SAS_URL
            ) from None
        raise PermanentEmailError(
            _detail(name, first, f"more than {MAX_REDIRECTS} redirects"), EmailStatus.FAILED_INVALID_SAS_URL
        )

    def _check_allowed(self, url: str) -> None:
        _, host = split_url(url, ("https",))
        if self._hosts.allows(host):
            return
        raise RefusedAddress(f"{host} is not an allowed attachment host (*.blob.core.windows.net or the allow-list)")

    async def _get(self, client: httpx.AsyncClient, url: str, name: str, budget: _Budget) -> bytes | str:
        """The body (bytes), or where a redirect points (str)."""
        self._check_allowed(url)
        target = await self._guard.target(url)
        # identity: the bytes as stored, and no decompression to outgrow the cap after it was checked.
        headers = {**target.headers, "Accept-Encoding": "identity"}
        request = client.build_request("GET", target.url, headers=headers, extensions=target.extensions)
        response = await client.send(request, stream=True)
        try:
            status = response.status_code
            if status in _REDIRECTS and response.headers.get("location"):
                return response.headers["location"]
            if status == 429 or status >= 500 or status == 408:
                retry_after = _retry_after(response.headers.get("retry-after"))
                raise TransientProviderError(_detail(name, url, f"the store answered HTTP {status}"), retry_after)
            if 400 <= status < 500 or 300 <= status < 400:
                raise PermanentEmailError(
                    _detail(name, url, f"the store answered HTTP {status}"), EmailStatus.FAILED_INVALID_SAS_URL
                )
            if not 200 <= status < 300:
                raise TransientProviderError(_detail(name, url, f"the store answered HTTP {status}"))
            declared = _content_length(response.headers.get("content-length"))
            # Refused before a byte of the body is read when the declared length is over; counted from now on.
            counted = declared or 0
            budget.take(counted, name)
            chunks: list[bytes] = []
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > counted:
                    # Past what was declared (or nothing was): counted as it comes, and reading stops at the cap.
                    budget.take(read - counted, name)
                    counted = read
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await response.aclose()


def _detail(name: str, url: str, what: str) -> str:
    # `what` may quote a URL (a refused redirect's, say): any query in it goes too.
    return f"attachment {name!r} ({_shown(url)}): {_QUERY.sub('', what)}"


def _content_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return bounded_retry_after(float(value))
    except ValueError:
        return None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The failure that decides: a permanent one (the email cannot succeed) before a transient one."""
    failures = _leaves(group)
    for kind in (PermanentEmailError, TransientProviderError):
        for failure in failures:
            if isinstance(failure, kind):
                return failure
    return failures[0]


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
