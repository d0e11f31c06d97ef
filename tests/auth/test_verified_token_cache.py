"""A verified token is remembered, so its signature is checked once; but it is never honoured beyond its exp (or
before its nbf), nor longer than VERIFIED_TOKEN_TTL_SECONDS, and nothing unverified is ever remembered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from varsel.auth.keys import DEV_ISSUER, DEV_KEY_ID
from varsel.auth.tokens import (
    VERIFIED_TOKEN_CACHE_SIZE,
    VERIFIED_TOKEN_TTL_SECONDS,
    InvalidToken,
    TokenVerifier,
    TrustedIssuerKeys,
)

LEEWAY = 30


class CountingKeys:
    """A static key source that counts how often a signature check asked for keys."""

    def __init__(self, keys: list[Any]) -> None:
        self.keys = keys
        self.asked = 0

    async def keys_for(self, kid: str | None) -> list[Any]:
        self.asked += 1
        return list(self.keys)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _token(key: ec.EllipticCurvePrivateKey, *, exp: float, nbf: float | None = None, org: str = "ttd") -> str:
    claims: dict[str, Any] = {"iss": DEV_ISSUER, "exp": int(exp), "scope": "altinn:serviceowner/notifications.create"}
    claims["urn:altinn:org"] = org
    if nbf is not None:
        claims["nbf"] = int(nbf)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": DEV_KEY_ID})


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _verifier(key: ec.EllipticCurvePrivateKey, clock: Clock) -> tuple[TokenVerifier, CountingKeys]:
    keys = CountingKeys([key.public_key()])
    return TokenVerifier([TrustedIssuerKeys(DEV_ISSUER, keys)], keys, LEEWAY, now=clock), keys


def test_a_verified_token_is_checked_once_and_answers_the_same_claims(signing_key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    verifier, keys = _verifier(signing_key, clock)
    token = _token(signing_key, exp=clock.now + 600)
    first = asyncio.run(verifier.verify_bearer(token))
    second = asyncio.run(verifier.verify_bearer(token))
    assert first == second
    assert first["urn:altinn:org"] == "ttd"
    assert keys.asked == 1
    second["urn:altinn:org"] = "someone-else"  # a caller changing its copy does not change what is remembered
    assert asyncio.run(verifier.verify_bearer(token))["urn:altinn:org"] == "ttd"


def test_a_remembered_token_is_dropped_once_past_its_exp(signing_key: ec.EllipticCurvePrivateKey) -> None:
    # Once the clock passes exp + leeway the remembered entry no longer applies and the token is verified afresh
    # (which, by the real time PyJWT goes by, refuses an expired token: the authentication tests show that).
    clock = Clock()
    verifier, keys = _verifier(signing_key, clock)
    exp = clock.now + 60
    token = _token(signing_key, exp=exp)
    asyncio.run(verifier.verify_bearer(token))
    clock.now = exp + LEEWAY - 1
    asyncio.run(verifier.verify_bearer(token))
    assert keys.asked == 1  # still within exp plus leeway: remembered
    clock.now = exp + LEEWAY + 1
    asyncio.run(verifier.verify_bearer(token))
    assert keys.asked == 2


def test_a_remembered_token_is_not_honoured_before_its_nbf(signing_key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    verifier, keys = _verifier(signing_key, clock)
    token = _token(signing_key, exp=clock.now + 600, nbf=clock.now)
    asyncio.run(verifier.verify_bearer(token))
    clock.now -= LEEWAY + 5  # the injected clock goes back before nbf - leeway: the entry no longer applies
    asyncio.run(verifier.verify_bearer(token))
    assert keys.asked == 2


def test_a_token_is_remembered_for_at_most_the_ttl(signing_key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    verifier, keys = _verifier(signing_key, clock)
    token = _token(signing_key, exp=clock.now + 3 * VERIFIED_TOKEN_TTL_SECONDS)
    asyncio.run(verifier.verify_bearer(token))
    clock.now += VERIFIED_TOKEN_TTL_SECONDS - 1
    asyncio.run(verifier.verify_bearer(token))
    assert keys.asked == 1
    clock.now += 2
    asyncio.run(verifier.verify_bearer(token))
    assert keys.asked == 2


def test_a_token_signed_by_another_key_is_refused_every_time(signing_key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    verifier, keys = _verifier(signing_key, clock)
    forged = _token(ec.generate_private_key(ec.SECP256R1()), exp=clock.now + 600)
    for _ in range(3):
        with pytest.raises(InvalidToken):
            asyncio.run(verifier.verify_bearer(forged))
    assert keys.asked == 3  # never remembered


def test_bearer_and_platform_tokens_are_remembered_apart(signing_key: ec.EllipticCurvePrivateKey) -> None:
    # A bearer token verified as such must not pass as a platform token: the platform check has other rules (its
    # issuer is the calling org, not a trusted issuer).
    clock = Clock()
    verifier, keys = _verifier(signing_key, clock)
    token = _token(signing_key, exp=clock.now + 600)
    asyncio.run(verifier.verify_bearer(token))
    asyncio.run(verifier.verify_platform(token))
    assert keys.asked == 2


def test_the_memory_is_bounded(signing_key: ec.EllipticCurvePrivateKey) -> None:
    clock = Clock()
    verifier, keys = _verifier(signing_key, clock)
    first = _token(signing_key, exp=clock.now + 600, org="org0")
    asyncio.run(verifier.verify_bearer(first))
    for n in range(1, VERIFIED_TOKEN_CACHE_SIZE + 1):
        verifier._verified.put("bearer", f"token-{n}", {"exp": clock.now + 600})
    assert len(verifier._verified._entries) == VERIFIED_TOKEN_CACHE_SIZE
    asyncio.run(verifier.verify_bearer(first))  # the oldest was forgotten, so it is verified again
    assert keys.asked == 2
