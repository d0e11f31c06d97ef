"""The HTTP client the provider adapters that speak HTTP (LINK Mobility, ACS) call their providers with.

Why aiohttp and not httpx, which varsel uses elsewhere: provider calls are the dispatch path, and varsel must send
2,000 SMS a second. Measured on a 2-core machine posting small JSON to a loopback server, an httpx.AsyncClient
spent 2-5 ms of CPU per request (266 requests/s at concurrency 1, 128-180 at concurrency 50; its pool does
bookkeeping in the number of connections for every request), aiohttp 3.x about 0.3 ms (1,900-2,700 requests/s).
Through LinkMobilitySmsProvider and its guard (3,000 SMS at concurrency 50), httpx took 3.6-5.6 s of CPU per 1,000
SMS and aiohttp 0.34-0.49 s. httpx stays for the calls where that does not matter (condition checks, JWKS).

What this keeps of httpx's behaviour, so the adapters behave as they did:

* Redirects are not followed (httpx's default): a provider's 3xx is answered to the adapter as it came.
* TLS trusts what httpx trusted (``httpx.create_ssl_context()``: SSL_CERT_FILE / SSL_CERT_DIR, else certifi), and
  the proxy environment variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) are honoured as httpx's
  ``trust_env`` did, read once per origin rather than on every request as aiohttp's own ``trust_env`` would.
* A request's timeout is one total budget (connecting, waiting for a pool slot, sending, reading the whole body):
  httpx's ``Timeout(n)`` allowed n seconds for each phase; the adapters' ``timeout_seconds`` now bound the call.

What differs: cookies a provider sets are not kept (the provider APIs are stateless; httpx kept them), and an
aiohttp session must be created inside the running event loop, while adapters are built outside one: the session
is made on first use and serves that loop only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDictProxy
from yarl import URL

from varsel import jsonsafe

# Connections open at once (in use or idle) per client. The guard in front of an adapter caps calls under way
# (GuardSettings.max_concurrency, 50 by default); the pool must not be the tighter limit.
DEFAULT_CONNECTION_LIMIT = 100
# How long an idle connection is kept for reuse, as httpx did (its keepalive_expiry).
DEFAULT_KEEPALIVE_SECONDS = 5.0


class ProviderTimeout(Exception):
    """The provider gave no complete answer within the request's timeout. str(): the underlying exception's name."""


class ProviderConnectionError(Exception):
    """The provider could not be reached, or the connection failed before a complete answer. str(): what failed."""


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """A provider's complete answer: the subset of httpx.Response the adapters read."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body decoded as httpx does: the Content-Type's charset, else UTF-8, undecodable bytes replaced."""
        charset = _charset(self.headers.get("Content-Type", "")) or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ValueError (jsonsafe.UnreadableJson) when it is not, or is nested too deep or
        holds a number Python refuses: a provider's answer is foreign input like any other."""
        return jsonsafe.loads(self.content)


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


# The longest wait a provider's Retry-After is taken at its word for. A longer one (or a date centuries ahead) is
# more likely a broken answer than a plan; waiting an hour and asking again costs nothing.
MAX_RETRY_AFTER_SECONDS = 3600.0


def bounded_retry_after(seconds: float) -> float | None:
    """A provider's Retry-After, in seconds, as varsel honours it: between 0 and MAX_RETRY_AFTER_SECONDS, or None
    when it is no finite number (NaN or infinity would break every time computed from it)."""
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def basic_authorization(username: str, password: str) -> str:
    """The Authorization header value for HTTP basic authentication (UTF-8, as httpx encodes it)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def json_body(document: Any) -> bytes:
    """A JSON request body serialised as httpx serialises ``json=``: compact, UTF-8, no NaN."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


class ProviderHttp:
    """One adapter's HTTP client: an aiohttp session with a keep-alive connection pool, made on first use.

    Every call reads the answer's body in full and gives the connection back to the pool (or closes it, when the
    call failed half way) before it returns or raises. Timeouts raise ProviderTimeout; failures to connect, resets,
    a server that hangs up mid-answer and malformed answers raise ProviderConnectionError. After ``aclose()`` calls
    raise RuntimeError.
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_CONNECTION_LIMIT,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        trust_env: bool = True,
    ) -> None:
        self._limit = limit
        self._keepalive_seconds = keepalive_seconds
        self._trust_env = trust_env
        # Made here, outside the event loop: loading the CA certificates takes some milliseconds.
        self._ssl = httpx.create_ssl_context(trust_env=trust_env)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._proxies: dict[tuple[str, str | None, int | None], str | None] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the provider HTTP client is closed")
        loop = asyncio.get_running_loop()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                keepalive_timeout=self._keepalive_seconds,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Proxies are resolved here, once per origin (see _proxy_for); aiohttp's trust_env would read the
                # environment and ~/.netrc on every request.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("the provider HTTP client was first used in another event loop; it serves one loop")
        return self._session

    def _proxy_for(self, url: URL) -> str | None:
        if not self._trust_env:
            return None
        key = (url.scheme, url.host, url.port)
        if key not in self._proxies:
            self._proxies[key] = _environment_proxy(url)
        return self._proxies[key]

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        timeout_seconds: float,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderAnswer:
        """Send one request and return the complete answer, whatever its status; ``timeout_seconds`` bounds it all."""
        session = self._get_session()
        try:
            target = url if isinstance(url, URL) else URL(url)
        except ValueError as error:
            raise ProviderConnectionError(f"{url!r} is not a URL: {error}") from error
        try:
            async with session.request(
                method,
                target,
                data=body,
                headers=headers,
                timeout=self._timeout(timeout_seconds),
                allow_redirects=False,
                proxy=self._proxy_for(target),
            ) as response:
                content = await response.read()
                return ProviderAnswer(response.status, response.headers, content)
        # First: asyncio's TimeoutError is an OSError, and aiohttp's ServerTimeoutError a ClientError.
        except TimeoutError as error:
            raise ProviderTimeout(type(error).__name__) from error
        except (aiohttp.ClientError, OSError) as error:
            said = str(error)
            raise ProviderConnectionError(
                f"{type(error).__name__}: {said}" if said else type(error).__name__
            ) from error

    async def post_json(
        self, url: str | URL, document: Any, *, timeout_seconds: float, headers: Mapping[str, str] | None = None
    ) -> ProviderAnswer:
        """POST ``document`` as a JSON body (Content-Type application/json)."""
        return await self.request(
            "POST",
            url,
            timeout_seconds=timeout_seconds,
            body=json_body(document),
            headers={**(headers or {}), "Content-Type": "application/json"},
        )

    async def aclose(self) -> None:
        """Close the session and its connections; later calls raise RuntimeError. Closing twice is harmless."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    close = aclose


def _environment_proxy(url: URL) -> str | None:
    """The proxy the environment names for this URL, as httpx's trust_env read it; None for a direct connection."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or (url.host is not None and urllib.request.proxy_bypass(url.host)):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"
