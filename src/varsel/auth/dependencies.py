"""The FastAPI dependency that turns a request's tokens into a Caller, or a 401/403 problem."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from fastapi import Request

from varsel.auth.keys import DEV_ISSUER, KeysUnavailable
from varsel.auth.tokens import ORG_PATTERN, Caller, InvalidToken, TokenVerifier, scopes_of
from varsel.problems import Problem

log = logging.getLogger(__name__)

_BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="varsel"'}
# Claims of bearer (Maskinporten-style) tokens that an Altinn platform access token never has: its issuer is the org,
# and it grants no scopes.
_BEARER_ONLY_CLAIMS = ("scope", "scp", "urn:altinn:scope", "consumer")


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers=_BEARER_CHALLENGE)


class Authenticator:
    def __init__(self, verifier: TokenVerifier, create_scope: str, org_claim: str, registry_scope: str) -> None:
        self._verifier = verifier
        self._create_scope = create_scope
        self._org_claim = org_claim
        self._registry_scope = registry_scope

    async def caller(self, request: Request) -> Caller:
        """A service owner acting on its own orders."""
        return await self._checked(self._caller(request))

    async def scoped_caller(self, request: Request, scope: str) -> Caller:
        """A service owner on an endpoint of its own scope (composed email): a bearer token with `scope`; the create
        scope does not do, and a platform access token is no alternative. The org is not checked here: the endpoint
        checks it after the body, as the reference does (Caller.org is "" when the token names none)."""
        return await self._checked(self._scoped_caller(request, scope))

    async def registry_writer(self, request: Request) -> Caller:
        """A registry pushing changes: a bearer token with the registry scope; no org needed."""
        return await self._checked(self._registry_writer(request))

    async def _registry_writer(self, request: Request) -> Caller:
        claims = await self._bearer_claims(request)
        scopes = scopes_of(claims)
        if self._registry_scope not in scopes:
            raise Problem(403, "Forbidden", f"The token lacks the scope {self._registry_scope}.")
        org = claims.get(self._org_claim)
        return Caller(org=org if isinstance(org, str) and ORG_PATTERN.match(org) else "", scopes=scopes)

    async def _checked(self, authenticating: Coroutine[Any, Any, Caller]) -> Caller:
        try:
            return await authenticating
        except KeysUnavailable as error:
            # The error names the issuer's internal JWKS URL and the network failure: for the operator's log, not
            # for an anonymous caller.
            log.warning("token signing keys unavailable: %s", error)
            raise Problem(
                503,
                "Token keys unavailable",
                "The token could not be checked right now because the issuer's signing keys could not be fetched. "
                "Try again later.",
                headers={"Retry-After": "30"},
            ) from error

    async def _scoped_caller(self, request: Request, scope: str) -> Caller:
        platform_token = request.headers.get("PlatformAccessToken")
        if platform_token and not request.headers.get("Authorization"):
            raise Problem(
                403,
                "Forbidden",
                f"This endpoint needs a bearer token with the scope {scope}; a platform access token "
                "is no alternative.",
            )
        claims = await self._bearer_claims(request)
        scopes = scopes_of(claims)
        if scope not in scopes:
            raise Problem(403, "Forbidden", f"The token lacks the scope {scope}.")
        if platform_token:
            # The header names the creator wherever it is sent (reference 0.4), here too.
            return replace(await self._platform_caller(platform_token), scopes=scopes)
        org = claims.get(self._org_claim)
        return Caller(org=org if isinstance(org, str) and ORG_PATTERN.match(org) else "", scopes=scopes)

    async def _caller(self, request: Request) -> Caller:
        platform_token = request.headers.get("PlatformAccessToken")
        if platform_token:
            return await self._platform_caller(platform_token)

        claims = await self._bearer_claims(request, platform_allowed=True)
        scopes = scopes_of(claims)
        if self._create_scope not in scopes:
            raise Problem(403, "Forbidden", f"The token lacks the scope {self._create_scope}.")
        org = claims.get(self._org_claim)
        if not isinstance(org, str) or not ORG_PATTERN.match(org):
            raise Problem(403, "Forbidden", f"The token has no valid {self._org_claim} claim naming the service owner.")
        return Caller(org=org, scopes=scopes)

    async def _platform_caller(self, platform_token: str) -> Caller:
        try:
            claims = await self._verifier.verify_platform(platform_token.strip())
        except InvalidToken as error:
            raise _unauthorized(f"Invalid platform access token: {error}.") from error
        # In development one key signs both kinds of token, so a signature alone does not say which kind a
        # token is. A bearer token sent in this header would otherwise act for its issuer ("varsel-dev", a
        # tenant every development token could then read) with scopes nobody checked: a token that carries
        # what only bearer tokens carry is refused here, whoever signed it.
        bearer_claims = sorted(claim for claim in (*_BEARER_ONLY_CLAIMS, self._org_claim) if claim in claims)
        if bearer_claims:
            raise _unauthorized(
                "Invalid platform access token: it carries "
                f"{', '.join(bearer_claims)}, so it is a bearer token; send it as 'Authorization: Bearer <token>'."
            )
        org = claims.get("iss")
        # The development issuer names varsel itself, never a service owner.
        if not isinstance(org, str) or not ORG_PATTERN.match(org) or org == DEV_ISSUER:
            raise Problem(403, "Forbidden", "The platform access token does not name a valid org.")
        return Caller(org=org, scopes=scopes_of(claims), via_platform_token=True)

    async def _bearer_claims(self, request: Request, platform_allowed: bool = False) -> dict[str, Any]:
        header = request.headers.get("Authorization")
        if not header:
            wanted = "A bearer token (Authorization: Bearer …)"
            raise _unauthorized(
                f"{wanted} or a PlatformAccessToken is required." if platform_allowed else f"{wanted} is required."
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("The Authorization header must be 'Bearer <token>'.")
        try:
            return await self._verifier.verify_bearer(token.strip())
        except InvalidToken as error:
            raise _unauthorized(f"Invalid bearer token: {error}.") from error
