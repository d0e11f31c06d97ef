"""A loopback OpenID Connect provider for the console's sign-in tests: discovery, JWKS, an authorization endpoint
that signs the configured person in on a "Continue" link (no password), and a token endpoint that checks the client's
credentials, the code, the redirect URI and the PKCE verifier, and signs ID tokens with a test RSA key.

Switches, set between tests: ``claims`` (the person's claims besides iss/sub/aud/iat/exp/nonce), ``audience``
(another aud), ``forge_signature`` (sign with another key under the same key id), ``nonce`` (another nonce) and
``state`` (send the browser back with another state), ``discovery_issuer`` (a discovery document naming another
issuer).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tests.providers.linkmobility_peer import LoopbackServer
from varsel.clock import Clock

CLIENT_ID = "varsel-console"
CLIENT_SECRET = "console-client-secret"
KEY_ID = "test-key-1"


@dataclass
class _Grant:
    redirect_uri: str
    challenge: str
    nonce: str


class OidcProvider:
    def __init__(self, clock: Clock, host: str = "127.0.0.1") -> None:
        # "localhost" makes the provider another site than a console on 127.0.0.1, as a real provider is: the
        # browser then treats the return to the console as a cross-site navigation (SameSite rules apply).
        self.host = host
        self.clock = clock
        self.key = RSAKey.generate_key(2048, parameters={"kid": KEY_ID, "use": "sig", "alg": "RS256"})
        self.forger_key = RSAKey.generate_key(2048, parameters={"kid": KEY_ID, "use": "sig", "alg": "RS256"})
        self.claims: dict[str, Any] = {"sub": "person-1", "email": "person@ttd.example", "org": "ttd"}
        self.audience: str | None = None
        self.forge_signature = False
        self.nonce: str | None = None
        self.state: str | None = None
        self.discovery_issuer: str | None = None
        self.jwks_fetches = 0
        self.grants: dict[str, _Grant] = {}
        self.token_errors: list[str] = []
        self.server = LoopbackServer(
            Starlette(
                routes=[
                    Route("/.well-known/openid-configuration", self._discovery),
                    Route("/jwks", self._jwks),
                    Route("/authorize", self._authorize),
                    Route("/token", self._token, methods=["POST"]),
                ]
            )
        )

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.server.port}"

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.discovery_issuer or self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    def rotate_key(self, kid: str) -> None:
        """A new signing key under a new key id, as a provider rotating its keys publishes it."""
        self.key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})

    async def _jwks(self, request: Request) -> Response:
        self.jwks_fetches += 1
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        wanted = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge")
        if any(not params.get(name) for name in wanted) or params.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        if params["client_id"] != CLIENT_ID or params["response_type"] != "code" or "openid" not in params["scope"]:
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.grants[code] = _Grant(params["redirect_uri"], params["code_challenge"], params["nonce"])
        state = self.state if self.state is not None else params["state"]
        back = f"{params['redirect_uri']}?{urlencode({'code': code, 'state': state})}"
        # The person confirms on the provider's own page, as at a real provider: the way back to the console then
        # starts on the provider's site, a cross-site navigation (an immediate redirect would count as the
        # console's own, and SameSite=Strict cookies would go along where they never do in real life).
        page = '<!doctype html><title>Provider</title><link rel="icon" href="data:,">'
        return HTMLResponse(f'{page}<a id="approve" href="{html.escape(back)}">Continue</a>')

    def _refuse(self, why: str) -> Response:
        self.token_errors.append(why)
        return JSONResponse({"error": "invalid_grant", "error_description": why}, status_code=400)

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.grants.pop(str(form.get("code")), None)  # a code is used once
        if grant is None or form.get("grant_type") != "authorization_code":
            return self._refuse("unknown code")
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse("redirect_uri differs")
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant.challenge:
            return self._refuse("PKCE verifier does not match")
        now = int(self.clock.now().timestamp())
        claims = {
            "iss": self.issuer,
            "aud": self.audience or CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce if self.nonce is not None else grant.nonce,
            **self.claims,
        }
        key = self.forger_key if self.forge_signature else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid or KEY_ID}, claims, key)
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": id_token})
