"""Review (#17) of OpenID Connect sign-in: an ID token is accepted only when signed with an asymmetric algorithm under
one of the issuer's keys, whatever the provider's discovery document offers ("none", HS256 with a key the provider
publishes, HS256 keyed with its public RSA key: all refused), against a loopback provider the test serves; and the
callback's "error" is shown only as an OAuth error code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.console.oidc_provider import CLIENT_ID, OidcProvider
from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.console.config import ConsoleSettings, OidcSettings
from varsel.console.oidc import OidcRefused, OidcSignIn
from varsel.db.engine import Database
from varsel.settings import Settings

NONCE = "the-nonce"


class SymmetricProvider(OidcProvider):
    """A provider whose discovery offers only HS256 and whose JWKS publishes a symmetric key beside its RSA key (as
    a misconfigured one may): a token signed with that key must not sign anyone in."""

    def __init__(self, clock: FrozenClock) -> None:
        super().__init__(clock)
        self.shared = OctKey.generate_key(256, parameters={"kid": "shared"})
        self.algorithms = ["HS256"]

    async def _discovery(self, request: Request) -> Response:
        answer = await super()._discovery(request)
        document = json.loads(bytes(answer.body))
        document["id_token_signing_alg_values_supported"] = self.algorithms
        return JSONResponse(document)

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False), self.shared.as_dict()]})


@pytest.fixture
async def provider(clock: FrozenClock) -> AsyncIterator[SymmetricProvider]:
    oidc = SymmetricProvider(clock)
    async with oidc.server:
        yield oidc


@pytest.fixture
async def sign_in(provider: SymmetricProvider, clock: FrozenClock) -> AsyncIterator[OidcSignIn]:
    async with httpx.AsyncClient() as http:
        settings = OidcSettings(issuer=provider.issuer, client_id=CLIENT_ID)
        oidc = OidcSignIn.configured(settings, http, clock, "a console key of the test, long enough to sign")
        assert oidc is not None
        yield oidc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(provider: SymmetricProvider, clock: FrozenClock) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    return {"iss": provider.issuer, "aud": CLIENT_ID, "sub": "p", "iat": now, "exp": now + 300, "nonce": NONCE,
            "roles": ["varsel-admin"]}  # fmt: skip


async def test_a_token_signed_with_a_published_symmetric_key_is_refused(
    provider: SymmetricProvider, sign_in: OidcSignIn, clock: FrozenClock
) -> None:
    token = jwt.encode({"alg": "HS256", "kid": "shared"}, _claims(provider, clock), provider.shared)
    with pytest.raises(OidcRefused):
        await sign_in.verify(token, NONCE)


async def test_an_unsigned_token_and_one_keyed_with_the_public_key_are_refused(
    provider: SymmetricProvider, sign_in: OidcSignIn, clock: FrozenClock
) -> None:
    provider.algorithms = ["RS256", "HS256", "none"]
    claims = json.dumps(_claims(provider, clock)).encode()
    # "none": no signature at all.
    unsigned = f"{_b64(json.dumps({'alg': 'none'}).encode())}.{_b64(claims)}."
    # HS256 keyed with the RSA public key as the provider publishes it (the classic confusion).
    # (made by hand: joserfc itself refuses to use a public key as an HMAC secret).
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'kid': provider.key.kid}).encode())}.{_b64(claims)}"
    mac = hmac.new(provider.key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{_b64(mac)}"
    for token in (unsigned, confused):
        with pytest.raises(OidcRefused):
            await sign_in.verify(token, NONCE)
    # The provider's RS256 token still signs in.
    good = jwt.encode({"alg": "RS256", "kid": provider.key.kid}, _claims(provider, clock), provider.key)
    assert (await sign_in.verify(good, NONCE))["sub"] == "p"


async def test_the_callbacks_error_shows_a_code_and_no_text_of_the_links_maker(
    settings: Settings, database: Database, clock: FrozenClock
) -> None:
    # Anyone can send a person to the callback with an "error" of their choosing: only a code is shown.
    oidc = OidcSettings(issuer="http://127.0.0.1:9", client_id=CLIENT_ID)
    services = build(
        settings.model_copy(update={"console": ConsoleSettings(oidc=oidc)}), clock=clock, database=database
    )
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            path = "/console/sign-in/oidc/callback"
            spoof = await http.get(path, params={"error": "Your account is locked: call +47 400 00 000 now"})
            denied = await http.get(path, params={"error": "access_denied"})
    finally:
        await services.http.aclose()
    assert spoof.status_code == denied.status_code == 403
    assert "call +47" not in spoof.text
    assert "refused the sign-in." in spoof.text
    assert "refused the sign-in (access_denied)." in denied.text
