"""Verifying who is calling: Maskinporten-style bearer tokens and Altinn-style platform access tokens."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from varsel.auth.keys import ALLOWED_ALGORITHMS, DEV_ISSUER, DEV_KEY_ID, KeySource


class InvalidToken(Exception):
    """Missing, malformed, expired, not yet valid, from an untrusted issuer, or badly signed."""


@dataclass(frozen=True)
class TrustedIssuerKeys:
    issuer: str
    keys: KeySource
    audience: str | None = None


@dataclass(frozen=True)
class Caller:
    """The service owner a request acts for, and what it may do."""

    org: str
    scopes: frozenset[str]
    via_platform_token: bool = False


# Org codes are short identifiers like "ttd" or "digdir"; anything else in the claim is refused, not stored.
# \Z, not $: `$` also matches before a trailing newline, so "ttd\n" would pass `match` as a separate tenant.
ORG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}\Z")


# A service owner's client sends the same token with every request until it expires. Checking its signature is the
# dearest part of a request (ES256: a quarter of a millisecond), so a token that verified is remembered, for at most
# this long: a key the issuer withdraws from its JWKS stops being honoured within this time.
VERIFIED_TOKEN_TTL_SECONDS = 300.0
VERIFIED_TOKEN_CACHE_SIZE = 4096


class _VerifiedTokens:
    """Tokens whose signature and claims checked out, with the claims and until when they may be trusted.

    Only verified tokens enter, so a caller cannot fill it with garbage; it is bounded and forgets the oldest first.
    Time windows (exp, nbf) are checked again on every use, so a remembered token expires exactly as it would have.
    """

    def __init__(self, now: Callable[[], float], leeway: int) -> None:
        self._now = now
        self._leeway = leeway
        self._entries: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, kind: str, token: str) -> dict[str, Any] | None:
        entry = self._entries.get((kind, token))
        if entry is None:
            return None
        trusted_until, claims = entry
        now = self._now()
        if now >= trusted_until or not _in_time_window(claims, now, self._leeway):
            del self._entries[(kind, token)]
            return None
        return dict(claims)

    def put(self, kind: str, token: str, claims: dict[str, Any]) -> None:
        self._entries[(kind, token)] = (self._now() + VERIFIED_TOKEN_TTL_SECONDS, dict(claims))
        while len(self._entries) > VERIFIED_TOKEN_CACHE_SIZE:
            self._entries.popitem(last=False)


def _in_time_window(claims: dict[str, Any], now: float, leeway: int) -> bool:
    # The claims were validated by PyJWT when the token entered, so exp is a number and nbf, if present, too.
    if now >= float(claims["exp"]) + leeway:
        return False
    nbf = claims.get("nbf")
    return nbf is None or now >= float(nbf) - leeway


class TokenVerifier:
    def __init__(
        self,
        issuers: list[TrustedIssuerKeys],
        platform_keys: KeySource | None,
        leeway_seconds: int = 30,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        self._platform_keys = platform_keys
        self._leeway = leeway_seconds
        # PyJWT checks exp and nbf against the real time, so the remembered tokens are judged by it too.
        self._verified = _VerifiedTokens(now, leeway_seconds)

    async def verify_bearer(self, token: str) -> dict[str, Any]:
        claims = self._verified.get("bearer", token)
        if claims is not None:
            return claims
        unverified = _unverified(token)
        issuer = self._issuers.get(str(unverified["payload"].get("iss")))
        if issuer is None:
            raise InvalidToken("the token's issuer is not trusted")
        claims = await _verify(token, unverified, issuer.keys, issuer.issuer, issuer.audience, self._leeway)
        self._verified.put("bearer", token, claims)
        return claims

    async def verify_platform(self, token: str) -> dict[str, Any]:
        """A platform access token: signed by the platform key; its issuer is the calling org."""
        if self._platform_keys is None:
            raise InvalidToken("platform access tokens are not accepted: no platform key is configured")
        claims = self._verified.get("platform", token)
        if claims is not None:
            return claims
        unverified = _unverified(token)
        issuer = unverified["payload"].get("iss")
        if not isinstance(issuer, str):
            raise InvalidToken("the platform access token has no issuer")
        claims = await _verify(token, unverified, self._platform_keys, issuer, None, self._leeway)
        self._verified.put("platform", token, claims)
        return claims


def _unverified(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as error:
        raise InvalidToken(f"malformed token: {error}") from error
    if not isinstance(payload, dict):
        raise InvalidToken("malformed token")
    return {"header": header, "payload": payload}


async def _verify(
    token: str,
    unverified: dict[str, Any],
    keys: KeySource,
    issuer: str,
    audience: str | None,
    leeway: int,
) -> dict[str, Any]:
    alg = unverified["header"].get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise InvalidToken(f"signing algorithm {alg!r} is not accepted")
    kid = unverified["header"].get("kid")
    candidates = await keys.keys_for(kid if isinstance(kid, str) else None)
    if not candidates:
        raise InvalidToken("no trusted key matches the token's key id")
    # Only keys of the algorithm's type: PyJWT raises TypeError (not a PyJWTError) when handed, say, an EC key for
    # an RS256 token, which made a token with a forged header a 500; and a key id-less token checked against a
    # JWKS holding both RSA and EC keys must be tried against the keys that fit, not fail on the first that does not.
    candidates = [key for key in candidates if _fits(alg, key)]
    if not candidates:
        raise InvalidToken(f"no trusted key fits the signing algorithm {alg}")
    last_error: Exception | None = None
    for key in candidates:
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                issuer=issuer,
                audience=audience,
                leeway=leeway,
                options={"require": ["exp", "iss"], "verify_aud": audience is not None},
            )
            return dict(claims)
        except (jwt.InvalidSignatureError, jwt.InvalidKeyError) as error:
            # InvalidKeyError: an EC key on another curve than the algorithm's; the next key may fit.
            last_error = error
            continue
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from error
    raise InvalidToken(f"bad signature: {last_error}")


def _fits(alg: str, key: Any) -> bool:
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg.startswith("ES"):
        return isinstance(key, ec.EllipticCurvePublicKey)
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope", claims.get("scp", ""))
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(s for s in scope if isinstance(s, str))
    return frozenset()


def sign_dev_token(
    key: ec.EllipticCurvePrivateKey,
    *,
    org: str,
    scopes: list[str],
    minutes: int = 60,
    platform: bool = False,
) -> str:
    """A token signed with the development key: a bearer token for `org`, or a platform access token."""
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "nbf": now, "exp": now + minutes * 60}
    if platform:
        # The app claim of Altinn's platform access tokens is "urn:altinn:app" (it was spelt urn_altinn_app).
        claims.update({"iss": org, "urn:altinn:app": f"{org}/dev"})
    else:
        claims.update(iss=DEV_ISSUER, scope=" ".join(scopes), **{"urn:altinn:org": org})
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": DEV_KEY_ID})
