"""Where token signing keys come from: a PEM public key, a JWKS URL (cached), or varsel's development key."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from varsel import jsonsafe

# Asymmetric algorithms only: 'none' and the HMAC family (where the public key would double as the secret) are
# never accepted.
ALLOWED_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

DEV_ISSUER = "varsel-dev"
DEV_KEY_ID = "varsel-dev-1"


class KeysUnavailable(Exception):
    """The keys could not be fetched: not the caller's fault, so it becomes a 503, not a 401."""


class KeySource(Protocol):
    async def keys_for(self, kid: str | None) -> list[Any]:
        """Candidate verification keys for a token with this key id (all keys when it has none)."""
        ...


class StaticKeys:
    def __init__(self, keys: list[Any]) -> None:
        self._keys = keys

    @classmethod
    def from_pem(cls, pem: str) -> StaticKeys:
        return cls([serialization.load_pem_public_key(pem.encode())])

    async def keys_for(self, kid: str | None) -> list[Any]:
        return list(self._keys)


class JwksKeys:
    """A JWKS document fetched over HTTPS and cached; fetched again early when a token names an unknown key id
    (key rotation), but at most once every `min_refresh_seconds` so bad tokens cannot make us hammer the issuer."""

    def __init__(
        self, url: str, client: httpx.AsyncClient, cache_seconds: int = 3600, min_refresh_seconds: float = 30.0
    ) -> None:
        self._url = url
        self._client = client
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._failure: KeysUnavailable | None = None
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        try:
            response = await self._client.get(self._url, timeout=10.0)
            response.raise_for_status()
            # The issuer's endpoint is another's answer: read with the bounded reader, not httpx's .json().
            document = jsonsafe.loads(response.content)
        except (httpx.HTTPError, ValueError) as error:
            raise KeysUnavailable(f"could not fetch signing keys from {self._url}: {error}") from error
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise KeysUnavailable(f"{self._url} did not answer a JWKS document (an object with a list of keys)")
        keys: dict[str | None, Any] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue  # PyJWK would raise AttributeError on it: a 500 instead of skipping one bad entry
            try:
                jwk = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key of a type we do not use must not spoil the others
            keys[entry.get("kid")] = jwk.key
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def keys_for(self, kid: str | None) -> list[Any]:
        async with self._lock:
            now = time.monotonic()
            stale = now - self._fetched_at > self._cache_seconds
            unknown = kid is not None and kid not in self._keys
            # At most one attempt every min_refresh seconds, whether it worked or not. Rate-limiting only after
            # successes let every request retry while the issuer was down: each one in turn, under the lock, waiting
            # for its fetch to time out, and every token with a made-up key id hit the issuer again.
            if (stale or unknown) and now - self._attempted_at > self._min_refresh:
                self._attempted_at = now
                try:
                    await self._refresh()
                    self._failure = None
                except KeysUnavailable as error:
                    self._failure = error
            if self._failure is not None and not self._keys:
                # Never fetched: keep answering "unavailable" (503) until the next attempt is due.
                raise KeysUnavailable(str(self._failure))
        if kid is not None:
            return [self._keys[kid]] if kid in self._keys else []
        return list(self._keys.values())


def ensure_dev_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The development signing key, created (readable by the owner only) on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key
