"""Sign-in with OpenID Connect: the authorization code flow with state, nonce and PKCE (authlib's helpers), the
ID token's signature checked against the issuer's JWKS and its issuer, audience, times and nonce against ours
(joserfc, authlib's JOSE library).

The flow's secrets (state, nonce, PKCE verifier) travel in a signed, HttpOnly cookie of their own, SameSite=Lax:
the provider sends the browser back with a cross-site navigation, which a Strict cookie would not accompany.
Nothing here touches the database, so no transaction is open while the provider is called.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from itsdangerous import BadSignature, URLSafeSerializer
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

from varsel.auth.tokens import ORG_PATTERN
from varsel.clock import Clock
from varsel.console.config import OidcSettings
from varsel.console.principal import Principal

log = logging.getLogger("varsel.console")

FLOW_COOKIE = "varsel_console_oidc"
# How long a person may spend at the provider between leaving the console and coming back.
FLOW_SECONDS = 600
# Asymmetric algorithms only: an HMAC-signed ID token would be signed with the client secret, and "none" with nothing.
_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
# Discovery and keys are read again after this long (keys at once when a token names a key id we do not have).
_CACHE_SECONDS = 3600.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class OidcRefused(Exception):
    """The sign-in did not succeed; the message says why, for the person at the browser."""


@dataclass(frozen=True)
class Flow:
    state: str
    nonce: str
    verifier: str
    expires: int


class OidcSignIn:
    def __init__(self, settings: OidcSettings, http: httpx.AsyncClient, clock: Clock, secret_key: str) -> None:
        assert settings.issuer
        self.settings = settings
        self.issuer = settings.issuer
        self._http = http
        self._clock = clock
        self._flows = URLSafeSerializer(secret_key, salt="varsel.console.oidc")
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    @classmethod
    def configured(
        cls, settings: OidcSettings, http: httpx.AsyncClient, clock: Clock, secret_key: str
    ) -> OidcSignIn | None:
        if not settings.issuer:
            return None
        # Discovery and keys fetched over plain HTTP could be swapped on the way, and every sign-in forged with them.
        # Loopback is allowed: nothing crosses a network there (tests serve their provider on it).
        parts = urlsplit(settings.issuer)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            raise ValueError(f"console.oidc.issuer must be an https URL, not {settings.issuer!r}")
        if not settings.client_id:
            raise ValueError("console.oidc.client_id must be set when console.oidc.issuer is")
        return cls(settings, http, clock, secret_key)

    @property
    def display_name(self) -> str:
        return urlsplit(self.issuer).hostname or self.issuer

    async def _json(self, url: str) -> dict[str, Any]:
        response = await self._http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        try:
            document = response.json()
        except ValueError:  # a web page (an issuer URL that is a site's, a proxy's error page), or no body at all
            document = None
        if not isinstance(document, dict):
            raise OidcRefused(f"The sign-in provider's answer from {url} is not a JSON object.")
        return document

    async def _endpoint(self, name: str) -> str:
        value = (await self.metadata()).get(name)
        if not isinstance(value, str) or not value:
            raise OidcRefused(f"The sign-in provider's discovery document has no {name}.")
        return value

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > _CACHE_SECONDS:
            document = await self._json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            # A discovery document for another issuer would make us trust its tokens: refuse it (OIDC Discovery 4.3).
            if document.get("issuer") != self.issuer:
                raise OidcRefused("The sign-in provider's discovery document names another issuer.")
            self._metadata, self._metadata_at = document, time.monotonic()
        return self._metadata

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if refresh or self._keys is None or time.monotonic() - self._keys_at > _CACHE_SECONDS:
            document: Any = await self._json(await self._endpoint("jwks_uri"))
            try:
                self._keys = KeySet.import_key_set(document)
            except (JoseError, ValueError, KeyError, TypeError) as error:
                raise OidcRefused("The sign-in provider's signing keys cannot be read.") from error
            self._keys_at = time.monotonic()
        return self._keys

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    async def start(self, redirect_uri: str) -> tuple[str, str]:
        """Where to send the browser, and the flow cookie's value."""
        authorize = await self._endpoint("authorization_endpoint")
        flow = Flow(generate_token(32), generate_token(32), generate_token(48), self._now() + FLOW_SECONDS)
        url = add_params_to_uri(
            authorize,
            [
                ("response_type", "code"),
                ("client_id", self.settings.client_id),
                ("redirect_uri", redirect_uri),
                ("scope", " ".join(self.settings.scopes)),
                ("state", flow.state),
                ("nonce", flow.nonce),
                ("code_challenge", create_s256_code_challenge(flow.verifier)),
                ("code_challenge_method", "S256"),
            ],
        )
        cookie = self._flows.dumps({"s": flow.state, "n": flow.nonce, "v": flow.verifier, "e": flow.expires})
        return url, str(cookie)

    def _flow(self, cookie: str | None) -> Flow:
        try:
            payload: Any = self._flows.loads(cookie or "")
            flow = Flow(str(payload["s"]), str(payload["n"]), str(payload["v"]), int(payload["e"]))
        except (BadSignature, KeyError, TypeError, ValueError) as error:
            raise OidcRefused("The sign-in was not started here, or took too long: start again.") from error
        if flow.expires <= self._now():
            raise OidcRefused("The sign-in took too long: start again.")
        return flow

    async def finish(self, code: str, state: str, cookie: str | None, redirect_uri: str) -> dict[str, Any]:
        """The verified ID token's claims, after the provider sent the browser back with a code."""
        flow = self._flow(cookie)
        if not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise OidcRefused("The sign-in's state does not match the one this browser started: start again.")
        token_endpoint = await self._endpoint("token_endpoint")
        secret = self.settings.client_secret.get_secret_value() if self.settings.client_secret else None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": flow.verifier,
            "client_id": self.settings.client_id,
        }
        auth = httpx.BasicAuth(self.settings.client_id, secret) if secret else None
        response = await self._http.post(token_endpoint, data=form, auth=auth or httpx.USE_CLIENT_DEFAULT)
        if response.status_code != 200:
            log.warning("OpenID Connect token endpoint answered %s: %s", response.status_code, response.text[:300])
            raise OidcRefused("The sign-in provider did not accept the sign-in.")
        try:
            id_token = response.json().get("id_token")
        except (ValueError, AttributeError) as error:
            raise OidcRefused("The sign-in provider's token answer is not a JSON object.") from error
        if not isinstance(id_token, str):
            raise OidcRefused("The sign-in provider gave no ID token.")
        return await self.verify(id_token, flow.nonce)

    async def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        metadata = await self.metadata()
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [name for name in _ALGORITHMS if name in offered]
        if not algorithms:
            # An empty list would make joserfc fall back to its own defaults, HS256 among them: a token signed with
            # a symmetric key the provider publishes (or anyone holding it) would then sign in.
            raise OidcRefused("The sign-in provider signs ID tokens with no algorithm varsel accepts.")
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(), algorithms=algorithms)
            except BadSignatureError:
                raise
            except (JoseError, ValueError):
                # Perhaps a key id we do not know: the provider may have rotated its keys since we read them.
                token = jwt.decode(id_token, await self._key_set(refresh=True), algorithms=algorithms)
            claims = token.claims
            jwt.JWTClaimsRegistry(
                now=self._now,
                leeway=self.settings.leeway_seconds,
                iss={"essential": True, "value": self.issuer},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
            ).validate(claims)
        except (JoseError, ValueError) as error:
            log.warning("OpenID Connect ID token refused: %s", error)
            raise OidcRefused("The sign-in provider's ID token could not be verified.") from error
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
        if self.settings.client_id not in audiences:
            raise OidcRefused("The ID token was issued for another application.")
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            raise OidcRefused("The ID token was issued for another application.")
        given = claims.get("nonce")
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), nonce.encode()):
            raise OidcRefused("The ID token does not belong to this sign-in (its nonce differs): start again.")
        return claims

    def principal(self, claims: dict[str, Any]) -> Principal | None:
        """Admin when the admin claim holds the admin value; else the org the org claim names; else nobody."""
        name = str(claims.get("email") or claims.get("preferred_username") or claims.get("sub"))
        marks = claims.get(self.settings.admin_claim)
        values = marks if isinstance(marks, list) else [marks]
        if self.settings.admin_value in values:
            return Principal(org=None, admin=True, name=name)
        org = claims.get(self.settings.org_claim)
        if isinstance(org, str) and ORG_PATTERN.match(org):
            return Principal(org=org, admin=False, name=name)
        return None
