"""Authentication and tenancy: every way a request is refused or accepted, on every v1 endpoint.

Development mode (no issuers configured) trusts the key in the data folder for bearer and platform tokens;
production mode (issuers configured) trusts only the configured issuers' keys. Tokens are verified against the
real clock, so the tokens built here use time.time(); orders use the frozen test clock.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import varsel.auth.keys as keys_module
from varsel.app import Varsel, build, create_app
from varsel.auth.keys import DEV_ISSUER, DEV_KEY_ID, ensure_dev_key
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import AuthSettings, Settings, TrustedIssuer

V1 = "/notifications/api/v1"
ORG_CLAIM = "urn:altinn:org"
PROBLEM_JSON = "application/problem+json"
ISSUER = "https://maskinporten.test/"
CREATE_SCOPE = "altinn:serviceowner/notifications.create"

Headers = dict[str, str]


# ---------------------------------------------------------------- token building


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def bearer_claims(org: Any = "ttd", *, iss: str = DEV_ISSUER, scope: str | None = CREATE_SCOPE, **extra: Any) -> dict:
    """Claims of a bearer token valid for an hour; `org=None` or `scope=None` leaves the claim out."""
    now = int(time.time())
    # A jti of its own: varsel remembers a verified token; tests that count key look-ups need tokens it has not seen.
    claims: dict[str, Any] = {"iss": iss, "iat": now, "nbf": now, "exp": now + 3600, "jti": uuid.uuid4().hex}
    if scope is not None:
        claims["scope"] = scope
    if org is not None:
        claims[ORG_CLAIM] = org
    claims.update(extra)
    return claims


def platform_claims(issuer: str | None = "ttd", **extra: Any) -> dict:
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "nbf": now, "exp": now + 3600, "urn:altinn:app": "ttd/app"}
    if issuer is not None:
        claims["iss"] = issuer
    claims.update(extra)
    return claims


def sign(key: Any, claims: dict, *, alg: str = "ES256", kid: str | None = DEV_KEY_ID) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid is not None else None)


def unsigned_token(claims: dict) -> str:
    """alg "none": header . payload . empty signature, built by hand (PyJWT would not verify it anyway)."""
    return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims)}."


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def hs256_token(secret: bytes, claims: dict) -> str:
    """The classic key-confusion forgery: HMAC with the verifier's public key PEM as the shared secret."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': DEV_KEY_ID})}.{b64json(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def jwk_of(key: Any, kid: str | None) -> dict:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "RS256"
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "ES256"
    jwk["use"] = "sig"
    if kid is not None:
        jwk["kid"] = kid
    return jwk


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


@pytest.fixture
def dev_key(settings: Settings) -> ec.EllipticCurvePrivateKey:
    """The development key of the test's data folder: the one the `client` app trusts."""
    return ensure_dev_key(settings.dev_key_path)


# ---------------------------------------------------------------- orders and endpoints

EMAIL_ORDER = {"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}]}
POSTED_REFERENCE = "posted-through-the-table"
SECRET_REFERENCE = "case-4711-secret-reference"
SECRET_SUBJECT = "Confidential subject line"
SECRET_ADDRESS = "citizen.secret@example.com"


PREVIEW_SCOPE = "varsel:notifications.preview"
REGISTRY_SCOPE = "varsel:registry.write"
SUPPORT_SCOPE = "altinn:notifications.support.admin"
REGISTRY_PERSON = {"kind": "person", "nationalIdentityNumber": "01017012345", "emailAddress": "p@example.com"}
# The cases about the org claim: they do not matter to an endpoint that needs no org (a registry push is not a
# tenant's).
ORG_CASES = (
    "no-org-claim",
    "org-500-characters",
    "org-with-spaces",
    "org-with-trailing-newline",
    "org-empty",
    "org-not-a-string",
)
OK = 0  # in an outcome: the endpoint's own success status
COMPOSED_ATTACHMENT = {
    "filename": "a.pdf",
    "mimeType": "application/pdf",
    "sasUrl": "https://a.blob.core.windows.net/c/a.pdf?se=2099-01-01T00:00:00Z&sp=r&sr=b&sig=x",
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {id} and {ref} are replaced with the existing order's id and senders reference
    body: Any = None
    ok: int = 200
    scope: str = CREATE_SCOPE  # what a valid token for this endpoint carries (space-separated)
    stranger: int = 404  # what a valid token of another org gets
    # Cases whose outcome differs here from AuthCase.expected, by case name.
    outcomes: dict[str, int] = field(default_factory=dict)
    # Whether a successful answer shows the caller's existing order (the feed shows only orders that have ended).
    shows_order: bool = True
    # Headers the endpoint needs besides the token (the support dashboard's identifier).
    headers: dict[str, str] = field(default_factory=dict)
    # Whether its success status (201, 202) stores an order (a webhook subscription's 201 does not).
    stores_order: bool = True

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def creates_order(self) -> bool:
        return self.stores_order and self.ok in (201, 202)

    @property
    def route(self) -> tuple[str, str]:
        """(method, path) as the app routes it."""
        return self.method, V1 + self.path.split("?")[0]


# The cases a valid token of the order's owner makes.
_VALID_CASES = (
    "valid",
    "valid-scope-list-and-lowercase-scheme",
    "expired-within-leeway",
    "not-yet-valid-within-leeway",
)
ENDPOINTS = [
    Endpoint(
        "POST",
        "/orders",
        {
            "sendersReference": POSTED_REFERENCE,
            "notificationChannel": "Email",
            "emailTemplate": {"subject": "s", "body": "b"},
            "recipients": [{"emailAddress": "a@example.com"}],
        },
        202,
        stranger=202,  # an order of its own
    ),
    Endpoint("POST", "/orders/email", {**EMAIL_ORDER, "sendersReference": POSTED_REFERENCE}, 202, stranger=202),
    Endpoint(
        "POST",
        "/orders/sms",
        {"sendersReference": POSTED_REFERENCE, "body": "b", "recipients": [{"mobileNumber": "+4799999999"}]},
        202,
        stranger=202,
    ),
    Endpoint(
        "POST",
        "/orders/preview",
        {**EMAIL_ORDER, "notificationChannel": "Email", "emailTemplate": {"subject": "s", "body": "b"}},
        scope=f"{CREATE_SCOPE} {PREVIEW_SCOPE}",
        stranger=200,  # previews its own order; nothing of another org's is read
    ),
    Endpoint("GET", "/orders/{id}"),
    Endpoint("GET", "/orders?sendersReference={ref}", stranger=200),  # an empty list, see assert_no_leak
    Endpoint("GET", "/orders/{id}/status"),
    Endpoint("GET", "/orders/{id}/notifications/email"),
    Endpoint("GET", "/orders/{id}/notifications/sms"),
    Endpoint("PUT", "/orders/{id}/cancel"),
    Endpoint(
        "POST",
        "/future/orders",
        {
            "idempotencyId": "auth-matrix",
            "sendersReference": POSTED_REFERENCE,
            "recipient": {
                "recipientEmail": {"emailAddress": "a@example.com", "emailSettings": {"subject": "s", "body": "b"}}
            },
        },
        201,
        stranger=201,  # a chain of its own: idempotency keys are per service owner
    ),
    # Instant orders (one family of keys, per service owner): each sent through the outbox before the answer.
    Endpoint(
        "POST",
        "/future/orders/instant/sms",
        {
            "idempotencyId": "auth-matrix",
            "sendersReference": POSTED_REFERENCE,
            "recipientSms": {"phoneNumber": "+4799999999", "timeToLiveInSeconds": 300, "smsSettings": {"body": "b"}},
        },
        201,
        stranger=201,
    ),
    Endpoint(
        "POST",
        "/future/orders/instant/email",
        {
            "idempotencyId": "auth-matrix",
            "sendersReference": POSTED_REFERENCE,
            "recipientEmail": {"emailAddress": "a@example.com", "emailSettings": {"subject": "s", "body": "b"}},
        },
        201,
        stranger=201,
    ),
    Endpoint(
        "POST",
        "/future/orders/instant",
        {
            "idempotencyId": "auth-matrix",
            "sendersReference": POSTED_REFERENCE,
            "recipient": {
                "recipientSms": {"phoneNumber": "+4799999999", "timeToLiveInSeconds": 300, "smsSettings": {"body": "b"}}
            },
        },
        201,
        stranger=201,
    ),
    Endpoint(
        "POST",
        "/future/orders/composed-email",
        {
            "idempotencyId": "auth-matrix",
            "sendersReference": POSTED_REFERENCE,
            "recipient": {
                "emailAddress": "a@example.com",
                "emailSettings": {"subject": "s", "body": "b", "attachments": [COMPOSED_ATTACHMENT]},
            },
        },
        201,
        scope="altinn:serviceowner/notifications.composedemail.create",  # its own scope: the create scope does not do
        stranger=201,
    ),
    # The existing order is a v1 order: read as a shipment (type Notification), but no chain.
    Endpoint("GET", "/future/shipment/{id}"),
    Endpoint("GET", "/future/shipment/feed", shows_order=False, stranger=200),  # its own feed: empty
    Endpoint(
        "GET",
        "/orders/chain/{id}",
        # Authenticated, it finds no chain by a v1 order's id: a 404 like another org's chain.
        outcomes=dict.fromkeys(
            ("valid", "valid-scope-list-and-lowercase-scheme", "expired-within-leeway", "not-yet-valid-within-leeway"),
            404,
        ),
    ),
    # The support dashboard: its own scope, across service owners (no org needed, none shown); the existing order
    # went to an address, so no look-up finds it.
    *(
        Endpoint(
            "GET",
            f"/future/dashboard/recipients/notifications/{route}",
            scope=SUPPORT_SCOPE,
            headers={header: value},
            stranger=200,
            shows_order=False,
            # The support scope alone is what it needs.
            outcomes=dict.fromkeys((*ORG_CASES, "admin-scope-only"), OK),
        )
        for route, header, value in (
            ("nin", "NationalIdentityNumber", "01017012345"),
            ("orgnumber", "OrganizationNumber", "910000001"),
        )
    ),
    # Status webhooks: a subscription is the service owner's own, and the existing order's id names none (a 404 like
    # another org's subscription).
    Endpoint(
        "POST",
        "/webhooks",
        {"url": "https://hooks.example.com/varsel", "events": ["order.completed"]},
        201,
        stranger=201,
        shows_order=False,
        stores_order=False,
    ),
    Endpoint("GET", "/webhooks", stranger=200, shows_order=False),
    *(
        Endpoint(method, path, body, outcomes=dict.fromkeys(_VALID_CASES, 404))
        for method, path, body in (
            ("GET", "/webhooks/{id}", None),
            ("PATCH", "/webhooks/{id}", {"enabled": False}),
            ("PUT", "/webhooks/{id}", {"url": "https://hooks.example.com/varsel", "events": ["order.completed"]}),
            ("DELETE", "/webhooks/{id}", None),
            ("POST", "/webhooks/{id}/rotate-secret", None),
            ("POST", "/webhooks/{id}/replay", {"fromSequenceNumber": 0}),
            ("GET", "/webhooks/{id}/events", None),
            ("GET", "/webhooks/{id}/attempts", None),
        )
    ),
    Endpoint(
        "POST",
        "/registry/records",
        [REGISTRY_PERSON],
        scope=REGISTRY_SCOPE,
        # The registries are the whole service's, not a tenant's: the registry scope is all a push needs.
        stranger=200,
        outcomes=dict.fromkeys(ORG_CASES, OK),
    ),
]

# Routes outside the matrix, each with the reason it takes no bearer token. Any other route must be in ENDPOINTS.
UNAUTHENTICATED_ROUTES = {
    ("GET", "/openapi.json"): "the API description: public, no data",
    ("GET", "/"): "a redirect to /docs",
    ("GET", "/docs"): "Swagger UI over /openapi.json (its assets, a static mount under /docs/assets, are no route)",
    ("GET", "/redoc"): "ReDoc over /openapi.json",
    ("GET", "/metrics"): "Prometheus scrapers carry no token; counts only, no order or person data",
    ("GET", "/health/live"): "orchestrator probe; says only that the process answers",
    ("GET", "/health/ready"): "orchestrator probe; says only whether the database answers",
    ("GET", f"{V1}/tests/sendcondition"): "a send condition for test orders, as the reference's: echoes its query",
    # The providers' delivery-report webhooks authenticate with credentials of their own (basic auth, an access
    # key); tests/providers/test_delivery_reports.py proves each refusal.
    ("POST", f"{V1}/reports/sms/linkmobility"): "LINK Mobility delivery reports: basic auth",
    ("POST", f"{V1}/reports/email/acs"): "Azure Communication Services delivery reports: access key",
    ("OPTIONS", f"{V1}/reports/email/acs"): "Event Grid's subscription handshake: access key",
    # Usage metrics, as the reference's: the daily files take an API key (tests/support/test_metrics.py proves each
    # refusal); the monthly summaries take none (the reference's gateway guards them: README, restrict at a proxy).
    ("GET", f"{V1}/metrics"): "the usage summary's month form: no data",
    ("POST", f"{V1}/metrics"): "the monthly usage summary (per owner counts), anonymous as the reference's",
    ("GET", f"{V1}/metrics/usage"): "the monthly usage summary as JSON or CSV, anonymous as the reference's",
    ("POST", f"{V1}/metrics/sms"): "yesterday's SMS as Parquet: X-API-Key",
    ("POST", f"{V1}/metrics/email"): "yesterday's emails as Parquet: X-API-Key",
}


@dataclass(frozen=True)
class ExistingOrder:
    id: str
    reference: str

    @property
    def secrets(self) -> list[str]:
        """What must never appear in an answer to a caller who may not see the order."""
        return [self.id, self.reference, SECRET_SUBJECT, SECRET_ADDRESS]


async def create_order(
    client: httpx.AsyncClient, headers: Headers, now: datetime, reference: str = SECRET_REFERENCE
) -> ExistingOrder:
    """An email order sent a day from now: far enough away that its owner can still cancel it."""
    body = {
        "sendersReference": reference,
        "requestedSendTime": (now + timedelta(days=1)).isoformat(),
        "subject": SECRET_SUBJECT,
        "body": "b",
        "recipients": [{"emailAddress": SECRET_ADDRESS}],
    }
    response = await client.post(f"{V1}/orders/email", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return ExistingOrder(response.json()["orderId"], reference)


async def call(client: httpx.AsyncClient, endpoint: Endpoint, headers: Headers, order: ExistingOrder) -> httpx.Response:
    path = endpoint.path.format(id=order.id, ref=order.reference)
    return await client.request(
        endpoint.method, f"{V1}{path}", json=endpoint.body, headers={**endpoint.headers, **headers}
    )


async def order_count(client: httpx.AsyncClient, headers: Headers, reference: str) -> int:
    response = await client.get(f"{V1}/orders", params={"sendersReference": reference}, headers=headers)
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    assert count == len(response.json()["orders"])
    return count


async def order_status(client: httpx.AsyncClient, headers: Headers, order_id: str) -> str:
    response = await client.get(f"{V1}/orders/{order_id}/status", headers=headers)
    assert response.status_code == 200, response.text
    status: str = response.json()["processingStatus"]["status"]
    return status


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["traceId"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return body


def assert_no_leak(response: httpx.Response, order: ExistingOrder) -> None:
    for secret in order.secrets:
        assert secret not in response.text


# ---------------------------------------------------------------- 1. every outcome on every endpoint (dev key)


@dataclass(frozen=True)
class AuthCase:
    name: str
    # (the dev key, the scopes a valid token for the endpoint carries) -> request headers
    headers: Callable[[ec.EllipticCurvePrivateKey, str], Headers]
    expected: int


def _other_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _tampered(key: ec.EllipticCurvePrivateKey, scope: str) -> Headers:
    """A dev-signed token for ttd whose payload was swapped for one naming digdir: the signature no longer fits."""
    header, _, signature = sign(key, bearer_claims("ttd", scope=scope)).split(".")
    return bearer(f"{header}.{b64json(bearer_claims('digdir', scope=scope))}.{signature}")


def _rs256_with_dev_kid(key: ec.EllipticCurvePrivateKey, scope: str) -> Headers:
    """An RS256 token naming the (EC) development key id: PyJWT raises TypeError for that pair, which was a 500."""
    return bearer(sign(_spare_rsa_key(), bearer_claims(scope=scope), alg="RS256"))


@functools.cache
def _spare_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _now() -> int:
    return int(time.time())


def _signed(org: Any = "ttd", **claims: Any) -> Callable[[ec.EllipticCurvePrivateKey, str], Headers]:
    """A case's headers: a bearer token signed with the dev key, for `org`, with the endpoint's scopes unless
    `claims` say otherwise; a claim given as None is left out."""

    def headers(key: ec.EllipticCurvePrivateKey, scope: str) -> Headers:
        built = bearer_claims(org, scope=scope) | claims
        return bearer(sign(key, {name: value for name, value in built.items() if value is not None}))

    return headers


STRANGER = -1  # a valid token of another org: the endpoint's `stranger` outcome

AUTH_CASES = [
    AuthCase("no-authorization-header", lambda key, scope: {}, 401),
    AuthCase("basic-scheme", lambda key, scope: {"Authorization": "Basic xyz"}, 401),
    AuthCase(
        "basic-scheme-with-a-valid-jwt",
        lambda key, scope: {"Authorization": f"Basic {sign(key, bearer_claims(scope=scope))}"},
        401,
    ),
    AuthCase("bearer-without-token", lambda key, scope: {"Authorization": "Bearer"}, 401),
    AuthCase("bearer-garbage", lambda key, scope: {"Authorization": "Bearer this-is-not-a-jwt"}, 401),
    AuthCase("bearer-garbage-with-dots", lambda key, scope: {"Authorization": "Bearer a.b.c"}, 401),
    AuthCase("expired-beyond-leeway", lambda key, scope: _signed(exp=_now() - 90)(key, scope), 401),
    AuthCase("expired-within-leeway", lambda key, scope: _signed(exp=_now() - 5)(key, scope), OK),
    AuthCase("without-exp", _signed(exp=None), 401),
    AuthCase("not-yet-valid-beyond-leeway", lambda key, scope: _signed(nbf=_now() + 300)(key, scope), 401),
    AuthCase("not-yet-valid-within-leeway", lambda key, scope: _signed(nbf=_now() + 5)(key, scope), OK),
    AuthCase("other-ec-key-same-kid", lambda key, scope: _signed()(_other_ec_key(), scope), 401),
    AuthCase("tampered-payload", _tampered, 401),
    AuthCase("alg-none", lambda key, scope: bearer(unsigned_token(bearer_claims(scope=scope))), 401),
    AuthCase(
        "hs256-with-dev-public-key-pem",
        lambda key, scope: bearer(hs256_token(public_pem(key).encode(), bearer_claims(scope=scope))),
        401,
    ),
    AuthCase("rs256-header-with-dev-kid", _rs256_with_dev_kid, 401),
    AuthCase("untrusted-issuer", _signed(iss="https://untrusted.example/"), 401),
    AuthCase("no-issuer", _signed(iss=None), 401),
    AuthCase("wrong-scope", _signed(scope="altinn:serviceowner/notifications.read"), 403),
    AuthCase("admin-scope-only", _signed(scope="altinn:notifications.support.admin"), 403),
    AuthCase("no-scope", _signed(scope=None), 403),
    AuthCase("no-org-claim", _signed(org=None), 403),
    AuthCase("org-500-characters", _signed("t" * 500), 403),
    AuthCase("org-with-spaces", _signed("t td"), 403),
    AuthCase("org-with-trailing-newline", _signed("ttd\n"), 403),
    AuthCase("org-empty", _signed(""), 403),
    AuthCase("org-not-a-string", _signed(["ttd"]), 403),
    AuthCase("valid-token-of-another-org", _signed("digdir"), STRANGER),
    AuthCase("valid", _signed(), OK),
    AuthCase(
        "valid-scope-list-and-lowercase-scheme",
        lambda key, scope: {"Authorization": f"bearer {sign(key, bearer_claims(scope=None, scp=scope.split()))}"},
        OK,
    ),
]


async def registry_knows(client: httpx.AsyncClient, headers: Headers, person: dict[str, str]) -> bool:
    """Whether the registry has the person's contact: what an order for their number finds."""
    order = {"subject": "s", "body": "b", "recipients": [{"nationalIdentityNumber": person["nationalIdentityNumber"]}]}
    response = await client.post(f"{V1}/orders/email", json=order, headers=headers)
    assert response.status_code == 202, response.text
    return person["nationalIdentityNumber"] not in response.json()["recipientLookup"]["missingContact"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda endpoint: endpoint.id)
@pytest.mark.parametrize("case", AUTH_CASES, ids=lambda case: case.name)
async def test_every_endpoint_answers_each_authentication_outcome(
    client: httpx.AsyncClient,
    auth: Callable[..., Headers],
    dev_key: ec.EllipticCurvePrivateKey,
    clock: FrozenClock,
    case: AuthCase,
    endpoint: Endpoint,
) -> None:
    order = await create_order(client, auth("ttd"), clock.now())
    expected = endpoint.outcomes.get(case.name, case.expected)
    accepted = expected == OK

    response = await call(client, endpoint, case.headers(dev_key, endpoint.scope), order)

    if accepted:
        assert response.status_code == endpoint.ok, response.text
        if endpoint.method != "POST" and endpoint.shows_order:
            assert order.id in response.text  # the caller's own order, found
    elif expected == STRANGER:
        # Authenticated, but as another org: it may use the endpoint for itself and sees nothing of ttd's.
        assert response.status_code == endpoint.stranger, response.text
        if endpoint.stranger >= 400:
            assert_problem(response, endpoint.stranger)
        assert_no_leak(response, order)
    else:
        assert_problem(response, expected)
        assert_no_leak(response, order)
    # A refused request changed nothing: no order was created, the existing one was not cancelled, the registry
    # was not written; another org's order is its own.
    created = 1 if accepted and endpoint.creates_order else 0
    assert await order_count(client, auth("ttd"), POSTED_REFERENCE) == created
    if endpoint.creates_order:
        assert await order_count(client, auth("digdir"), POSTED_REFERENCE) == (1 if expected == STRANGER else 0)
    cancelled = accepted and endpoint.path.endswith("/cancel")
    assert await order_status(client, auth("ttd"), order.id) == ("Cancelled" if cancelled else "Registered")
    if endpoint.path == "/registry/records":
        assert await registry_knows(client, auth("ttd"), REGISTRY_PERSON) == (accepted or expected == STRANGER)


def test_the_matrix_has_every_required_outcome() -> None:
    """No token, expired, not yet valid, wrong signature, wrong issuer, alg none, wrong scope, another org's."""
    required = {
        "no-authorization-header",
        "expired-beyond-leeway",
        "not-yet-valid-beyond-leeway",
        "other-ec-key-same-kid",
        "tampered-payload",
        "untrusted-issuer",
        "alg-none",
        "wrong-scope",
        "valid-token-of-another-org",
    }
    assert required <= {case.name for case in AUTH_CASES}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the routes are the same on every database
def test_every_authenticated_route_is_in_the_matrix(varsel: Varsel) -> None:
    """A new endpoint cannot escape the matrix above: every route the app serves is in ENDPOINTS or is listed,
    with its reason, as taking no bearer token."""
    try:
        # Recent FastAPI keeps included routers nested in app.routes; this flattens them.
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(create_app(varsel).routes))
    except ImportError:
        routes = list(create_app(varsel).routes)
    served = {(method, route.path) for route in routes for method in route.methods or () if method != "HEAD"}
    # The console signs in with session cookies, not bearer tokens: its routes have their own list and walls
    # (tests/console/test_route_walls.py), which no console route escapes either.
    served = {(method, path) for method, path in served if path != "/console" and not path.startswith("/console/")}

    in_matrix = {endpoint.route for endpoint in ENDPOINTS}
    assert served - set(UNAUTHENTICATED_ROUTES) == in_matrix
    assert set(UNAUTHENTICATED_ROUTES) <= served, "a listed unauthenticated route no longer exists"
    assert not in_matrix & set(UNAUTHENTICATED_ROUTES)


def test_hand_built_tokens_are_well_formed_so_only_their_signature_is_wrong(
    dev_key: ec.EllipticCurvePrivateKey,
) -> None:
    """The alg-none and HS256 forgeries are refused for their algorithm, not because they are malformed."""
    claims = bearer_claims()
    none = unsigned_token(claims)
    assert jwt.get_unverified_header(none)["alg"] == "none"
    assert jwt.decode(none, options={"verify_signature": False}) == claims
    forged = hs256_token(public_pem(dev_key).encode(), claims)
    assert jwt.get_unverified_header(forged) == {"alg": "HS256", "typ": "JWT", "kid": DEV_KEY_ID}
    assert jwt.decode(forged, options={"verify_signature": False}) == claims
    signing_input, _, signature = forged.rpartition(".")
    expected = hmac.new(public_pem(dev_key).encode(), signing_input.encode(), hashlib.sha256).digest()
    assert b64url(expected) == signature


async def test_authentication_is_checked_before_the_body_is_validated(client: httpx.AsyncClient) -> None:
    """An anonymous caller learns nothing about validation: 401 even for a body that would be a 400 or a 415."""
    invalid = await client.post(f"{V1}/orders/email", json={"recipients": "nope"})
    assert_problem(invalid, 401)
    not_json = await client.post(f"{V1}/orders/email", content=b"x", headers={"Content-Type": "text/plain"})
    assert_problem(not_json, 401)


async def test_an_unparseable_order_id_is_404_for_an_authenticated_caller_and_401_for_others(
    client: httpx.AsyncClient, auth: Callable[..., Headers]
) -> None:
    assert_problem(await client.get(f"{V1}/orders/not-a-uuid", headers=auth()), 404)
    assert_problem(await client.get(f"{V1}/orders/not-a-uuid"), 401)


# ---------------------------------------------------------------- 2. PlatformAccessToken (dev key)


async def test_platform_token_alone_is_accepted_and_its_issuer_is_the_creator(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Callable[..., Headers]
) -> None:
    platform = {"PlatformAccessToken": token("digdir", platform=True)}
    created = await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=platform)
    assert created.status_code == 202, created.text
    order_id = created.json()["orderId"]

    read = await client.get(f"{V1}/orders/{order_id}", headers=platform)
    assert read.status_code == 200, read.text
    assert read.json()["creator"] == "digdir"
    status = await client.get(f"{V1}/orders/{order_id}/status", headers=platform)
    assert status.json()["creator"] == "digdir"
    # The same tenant as a bearer token for digdir; not ttd's.
    assert (await client.get(f"{V1}/orders/{order_id}", headers=auth("digdir"))).status_code == 200
    assert_problem(await client.get(f"{V1}/orders/{order_id}", headers=auth("ttd")), 404)


async def test_platform_token_wins_over_a_bearer_token_for_another_org(
    client: httpx.AsyncClient, token: Callable[..., str], auth: Callable[..., Headers]
) -> None:
    headers = {"PlatformAccessToken": token("digdir", platform=True), **auth("ttd")}
    created = await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=headers)
    assert created.status_code == 202, created.text
    read = await client.get(f"{V1}/orders/{created.json()['orderId']}", headers=auth("digdir"))
    assert read.json()["creator"] == "digdir"


INVALID_PLATFORM_TOKENS: list[tuple[str, Callable[[ec.EllipticCurvePrivateKey], str]]] = [
    ("garbage", lambda key: "not-a-token"),
    ("whitespace", lambda key: "   "),
    ("expired", lambda key: sign(key, platform_claims(exp=_now() - 90))),
    ("not-yet-valid", lambda key: sign(key, platform_claims(nbf=_now() + 300))),
    ("other-ec-key-same-kid", lambda key: sign(_other_ec_key(), platform_claims())),
    ("alg-none", lambda key: unsigned_token(platform_claims())),
    ("hs256-with-dev-public-key-pem", lambda key: hs256_token(public_pem(key).encode(), platform_claims())),
    ("no-issuer", lambda key: sign(key, platform_claims(issuer=None))),
]


@pytest.mark.parametrize(("name", "make"), INVALID_PLATFORM_TOKENS, ids=[name for name, _ in INVALID_PLATFORM_TOKENS])
async def test_invalid_platform_token_is_refused_not_ignored_even_with_a_valid_bearer_token(
    client: httpx.AsyncClient,
    auth: Callable[..., Headers],
    dev_key: ec.EllipticCurvePrivateKey,
    name: str,
    make: Callable[[ec.EllipticCurvePrivateKey], str],
) -> None:
    headers = {"PlatformAccessToken": make(dev_key), **auth("ttd")}
    body = {**EMAIL_ORDER, "sendersReference": POSTED_REFERENCE}
    assert_problem(await client.post(f"{V1}/orders/email", json=body, headers=headers), 401)
    assert await order_count(client, auth("ttd"), POSTED_REFERENCE) == 0
    # The bearer token on its own is fine: the refusal is the platform token's.
    assert (await client.post(f"{V1}/orders/email", json=body, headers=auth("ttd"))).status_code == 202


@pytest.mark.parametrize("issuer", ["not an org", "t" * 500, "ttd\n", "", "-ttd"], ids=repr)
async def test_platform_token_whose_issuer_is_not_a_valid_org_is_forbidden(
    client: httpx.AsyncClient, auth: Callable[..., Headers], dev_key: ec.EllipticCurvePrivateKey, issuer: str
) -> None:
    headers = {"PlatformAccessToken": sign(dev_key, platform_claims(issuer))}
    body = {**EMAIL_ORDER, "sendersReference": POSTED_REFERENCE}
    assert_problem(await client.post(f"{V1}/orders/email", json=body, headers=headers), 403)
    assert await order_count(client, auth("ttd"), POSTED_REFERENCE) == 0


@pytest.mark.parametrize(
    "claims",
    [
        # What `varsel token --scope varsel:registry.write` signs: no create scope, issuer varsel-dev (#19).
        bearer_claims("ttd", scope="varsel:registry.write"),
        bearer_claims("ttd"),
        bearer_claims(None, scope="varsel:registry.write"),
        bearer_claims(None, scope=None, scp=["x"]),
        platform_claims("ttd", scope=CREATE_SCOPE),
        platform_claims("ttd", **{ORG_CLAIM: "ttd"}),
    ],
    ids=["registry-scope", "create-scope", "no-org", "scp", "platform-with-scope", "platform-with-org-claim"],
)
async def test_a_bearer_token_is_never_a_platform_token(
    client: httpx.AsyncClient, auth: Callable[..., Headers], dev_key: ec.EllipticCurvePrivateKey, claims: dict
) -> None:
    # In development one key signs both kinds, so the header alone once made any development token a platform
    # token: the order was stored under the creator varsel-dev, which every development token could read.
    headers = {"PlatformAccessToken": sign(dev_key, claims)}
    body = {**EMAIL_ORDER, "sendersReference": POSTED_REFERENCE}
    refused = await client.post(f"{V1}/orders/email", json=body, headers=headers)
    assert_problem(refused, 401)
    assert "bearer token" in refused.json()["detail"]
    assert await order_count(client, auth("ttd"), POSTED_REFERENCE) == 0
    assert await order_count(client, auth(DEV_ISSUER), POSTED_REFERENCE) == 0


async def test_the_development_issuer_is_no_service_owner(
    client: httpx.AsyncClient, auth: Callable[..., Headers], dev_key: ec.EllipticCurvePrivateKey
) -> None:
    headers = {"PlatformAccessToken": sign(dev_key, platform_claims(DEV_ISSUER))}
    body = {**EMAIL_ORDER, "sendersReference": POSTED_REFERENCE}
    assert_problem(await client.post(f"{V1}/orders/email", json=body, headers=headers), 403)
    assert await order_count(client, auth(DEV_ISSUER), POSTED_REFERENCE) == 0


# ---------------------------------------------------------------- 3. tenancy


def _without_trace(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "traceId"}


@pytest.mark.parametrize("b_uses", ["bearer", "platform"])
async def test_another_orgs_order_is_not_found_listed_or_cancelled(
    client: httpx.AsyncClient,
    auth: Callable[..., Headers],
    token: Callable[..., str],
    clock: FrozenClock,
    b_uses: str,
) -> None:
    org_a = auth("ttd")
    org_b = auth("digdir") if b_uses == "bearer" else {"PlatformAccessToken": token("digdir", platform=True)}
    order = await create_order(client, org_a, clock.now())
    absent = str(uuid.uuid4())

    for method, suffix in [
        ("GET", ""),
        ("GET", "/status"),
        ("GET", "/notifications/email"),
        ("GET", "/notifications/sms"),
        ("PUT", "/cancel"),
    ]:
        theirs = await client.request(method, f"{V1}/orders/{order.id}{suffix}", headers=org_b)
        body = assert_problem(theirs, 404)  # 404, never 403: B must not learn that the id exists
        assert_no_leak(theirs, order)
        nobodys = await client.request(method, f"{V1}/orders/{absent}{suffix}", headers=org_b)
        assert _without_trace(body) == _without_trace(assert_problem(nobodys, 404))

    listed = await client.get(f"{V1}/orders", params={"sendersReference": order.reference}, headers=org_b)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"count": 0, "orders": []}

    # A still sees its order, uncancelled, and could cancel it: B's cancel failed for tenancy, not for timing.
    mine = await client.get(f"{V1}/orders/{order.id}", headers=org_a)
    assert mine.status_code == 200
    assert mine.json()["creator"] == "ttd"
    assert await order_count(client, org_a, order.reference) == 1
    assert await order_status(client, org_a, order.id) == "Registered"
    cancelled = await client.put(f"{V1}/orders/{order.id}/cancel", headers=org_a)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["processingStatus"]["status"] == "Cancelled"


# ---------------------------------------------------------------- 4. configured issuers (production mode)


@pytest.fixture
async def make_client(
    database: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[Settings], httpx.AsyncClient]]:
    """make_client(settings): the app built from these settings, over ASGI, as the `client` fixture does."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # the JWKS fetches go to loopback, never through a proxy
    opened: list[tuple[Varsel, httpx.AsyncClient]] = []

    def make(settings: Settings) -> httpx.AsyncClient:
        services = build(settings, clock=clock, database=database)
        app = create_app(services)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test")
        opened.append((services, http))
        return http

    yield make
    for services, http in opened:
        await http.aclose()
        await services.http.aclose()


def production_settings(settings: Settings, *issuers: TrustedIssuer, **auth: Any) -> Settings:
    """The test's settings (same data folder, so the dev key exists) with issuers configured."""
    return Settings(
        data_dir=settings.data_dir,
        conditions={"allowed_hosts": []},
        auth=AuthSettings(issuers=list(issuers), **auth),
    )


def rs256(key: rsa.RSAPrivateKey, claims: dict, kid: str | None = None) -> Headers:
    return bearer(sign(key, claims, alg="RS256", kid=kid))


async def test_issuer_with_public_key_accepts_its_tokens_and_refuses_dev_tokens(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    token: Callable[..., str],
    dev_key: ec.EllipticCurvePrivateKey,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    client = make_client(
        production_settings(settings, TrustedIssuer(issuer=ISSUER, public_key_pem=public_pem(rsa_keys[0])))
    )
    mine = rs256(rsa_keys[0], bearer_claims("ttd", iss=ISSUER))

    created = await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=mine)
    assert created.status_code == 202, created.text
    read = await client.get(f"{V1}/orders/{created.json()['orderId']}", headers=mine)
    assert read.json()["creator"] == "ttd"

    refused = [
        bearer(token("ttd")),  # what `varsel token` prints
        bearer(sign(dev_key, bearer_claims("ttd", iss=ISSUER))),  # the configured issuer's name, the dev key
        rs256(rsa_keys[1], bearer_claims("ttd", iss=ISSUER)),  # the configured issuer's name, another RSA key
        bearer(hs256_token(public_pem(rsa_keys[0]).encode(), bearer_claims("ttd", iss=ISSUER))),
        {"PlatformAccessToken": token("ttd", platform=True)},  # no platform key configured: none accepted
    ]
    for headers in refused:
        assert_problem(await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=headers), 401)
    # Scope and org rules are the same for configured issuers.
    no_scope = rs256(rsa_keys[0], bearer_claims("ttd", iss=ISSUER, scope="other"))
    assert_problem(await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=no_scope), 403)
    no_org = rs256(rsa_keys[0], bearer_claims(None, iss=ISSUER))
    assert_problem(await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=no_org), 403)


async def test_issuer_audience_must_match(
    make_client: Callable[[Settings], httpx.AsyncClient], settings: Settings, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    audience = "https://varsel.test/api"
    issuer = TrustedIssuer(issuer=ISSUER, public_key_pem=public_pem(rsa_keys[0]), audience=audience)
    client = make_client(production_settings(settings, issuer))

    for aud in ["https://someone-else.test/", None, [], ["https://someone-else.test/"]]:
        claims = bearer_claims(iss=ISSUER) if aud is None else bearer_claims(iss=ISSUER, aud=aud)
        answer = await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=rs256(rsa_keys[0], claims))
        assert_problem(answer, 401)
    for aud in [audience, ["https://someone-else.test/", audience]]:
        claims = bearer_claims(iss=ISSUER, aud=aud)
        answer = await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=rs256(rsa_keys[0], claims))
        assert answer.status_code == 202, answer.text


@pytest.mark.parametrize("with_issuers", [True, False], ids=["production", "dev-bearer"])
async def test_configured_platform_key_replaces_the_dev_key_for_platform_tokens(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    token: Callable[..., str],
    rsa_keys: list[rsa.RSAPrivateKey],
    with_issuers: bool,
) -> None:
    platform_key = rsa_keys[2]
    issuers = [TrustedIssuer(issuer=ISSUER, public_key_pem=public_pem(rsa_keys[0]))] if with_issuers else []
    client = make_client(production_settings(settings, *issuers, platform_public_key_pem=public_pem(platform_key)))

    platform = {"PlatformAccessToken": sign(platform_key, platform_claims("digdir"), alg="RS256", kid=None)}
    created = await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=platform)
    assert created.status_code == 202, created.text
    read = await client.get(f"{V1}/orders/{created.json()['orderId']}", headers=platform)
    assert read.json()["creator"] == "digdir"

    dev_platform = {"PlatformAccessToken": token("digdir", platform=True)}
    assert_problem(await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=dev_platform), 401)
    other_rsa = {"PlatformAccessToken": sign(rsa_keys[1], platform_claims("digdir"), alg="RS256", kid=None)}
    assert_problem(await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=other_rsa), 401)
    # Bearer tokens are unaffected: the dev key still signs them while no issuers are configured.
    dev_bearer = await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=bearer(token("ttd")))
    assert dev_bearer.status_code == (401 if with_issuers else 202), dev_bearer.text


# ---------------------------------------------------------------- 4b. JWKS over HTTP


class JwksServer:
    """A JWKS document served over HTTP on loopback, counting the requests it gets."""

    def __init__(self, keys: list[dict]) -> None:
        self.document: Any = {"keys": keys}
        # Served as it is instead of the document, for answers json.dumps cannot write (60,000 levels deep).
        self.raw: bytes | None = None
        self.status = 200
        self._requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server._requests += 1
                    payload = server.raw if server.raw is not None else json.dumps(server.document).encode()
                    status = server.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/.well-known/jwks.json"
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def start(self) -> None:
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()  # the port now refuses connections


@pytest.fixture
def jwks_server(rsa_keys: list[rsa.RSAPrivateKey]) -> Iterator[JwksServer]:
    server = JwksServer([jwk_of(rsa_keys[0], "key-1")])
    server.start()
    yield server
    server.stop()


class FakeMonotonic:
    """Replaces varsel.auth.keys' view of time.monotonic, so cache ages can be advanced without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def jwks_clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(keys_module, "time", fake)
    return fake


def jwks_settings(settings: Settings, url: str, **auth: Any) -> Settings:
    return production_settings(settings, TrustedIssuer(issuer=ISSUER, jwks_url=url), **auth)


async def post_order(client: httpx.AsyncClient, headers: Headers) -> httpx.Response:
    return await client.post(f"{V1}/orders/email", json=EMAIL_ORDER, headers=headers)


async def test_jwks_issuer_tokens_are_accepted_and_the_keys_cached(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    jwks_clock: FakeMonotonic,
    token: Callable[..., str],
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    client = make_client(jwks_settings(settings, jwks_server.url))
    headers = rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1")
    assert jwks_server.requests == 0  # fetched on first use, not at start

    created = await post_order(client, headers)
    assert created.status_code == 202, created.text
    assert jwks_server.requests == 1
    read = await client.get(f"{V1}/orders/{created.json()['orderId']}", headers=headers)
    assert read.status_code == 200
    assert (await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1"))).status_code == 202
    assert jwks_server.requests == 1  # cached

    assert_problem(await post_order(client, bearer(token("ttd"))), 401)  # dev tokens: untrusted issuer, no fetch
    assert jwks_server.requests == 1

    jwks_clock.advance(600)  # well within jwks_cache_seconds (3600): still cached
    assert (await post_order(client, headers)).status_code == 202
    assert jwks_server.requests == 1
    jwks_clock.advance(3001)  # past jwks_cache_seconds since the fetch: fetched again
    # A token not seen before: one already verified is remembered (briefly) and needs no keys at all.
    fresh = rs256(rsa_keys[0], bearer_claims(iss=ISSUER, jti="after-the-jwks-cache"), kid="key-1")
    assert (await post_order(client, fresh)).status_code == 202
    assert jwks_server.requests == 2


async def test_unknown_key_id_refetches_the_jwks_once_for_key_rotation(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    jwks_clock: FakeMonotonic,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    client = make_client(jwks_settings(settings, jwks_server.url))
    assert (await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1"))).status_code == 202
    assert jwks_server.requests == 1

    # The issuer rotates: the new key is published before tokens signed with it arrive.
    jwks_server.document = {"keys": [jwk_of(rsa_keys[0], "key-1"), jwk_of(rsa_keys[1], "key-2")]}
    jwks_clock.advance(31)  # beyond the minimum interval between fetches
    rotated = rs256(rsa_keys[1], bearer_claims(iss=ISSUER), kid="key-2")
    assert (await post_order(client, rotated)).status_code == 202, "a token with the new key id is accepted"
    assert jwks_server.requests == 2
    assert (await post_order(client, rotated)).status_code == 202
    assert (await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1"))).status_code == 202
    assert jwks_server.requests == 2  # both keys now cached


async def test_unknown_key_ids_cannot_make_varsel_hammer_the_issuer(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    jwks_clock: FakeMonotonic,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    client = make_client(jwks_settings(settings, jwks_server.url))
    assert (await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1"))).status_code == 202
    for kid in ["made-up-1", "made-up-2", "made-up-3"]:
        assert_problem(await post_order(client, rs256(rsa_keys[1], bearer_claims(iss=ISSUER), kid=kid)), 401)
    assert jwks_server.requests == 1  # within the minimum interval: no refetch

    jwks_clock.advance(31)
    for kid in ["made-up-4", "made-up-5"]:
        assert_problem(await post_order(client, rs256(rsa_keys[1], bearer_claims(iss=ISSUER), kid=kid)), 401)
    assert jwks_server.requests == 2  # one refetch, then rate-limited again


async def test_jwks_with_mixed_key_types_verifies_a_token_without_key_id(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    """A token without kid is checked against the keys that fit its algorithm (an EC key first used to be a 500)."""
    ec_key = _other_ec_key()
    jwks_server.document = {"keys": [jwk_of(ec_key, "ec-1"), jwk_of(rsa_keys[0], "rsa-1")]}
    client = make_client(jwks_settings(settings, jwks_server.url))
    assert (await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid=None))).status_code == 202
    assert (await post_order(client, bearer(sign(ec_key, bearer_claims(iss=ISSUER), kid=None)))).status_code == 202
    # An algorithm whose key type the named key does not have is refused, not a 500.
    assert_problem(await post_order(client, bearer(sign(_other_ec_key(), bearer_claims(iss=ISSUER), kid="rsa-1"))), 401)
    assert_problem(await post_order(client, rs256(rsa_keys[1], bearer_claims(iss=ISSUER), kid="ec-1")), 401)


async def test_unreachable_jwks_before_first_use_answers_503(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    jwks_server.stop()
    client = make_client(jwks_settings(settings, jwks_server.url))
    headers = rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1")

    for _ in range(2):
        answer = await post_order(client, headers)
        body = assert_problem(answer, 503)
        assert answer.headers["retry-after"]
        assert "127.0.0.1" not in answer.text, "the internal JWKS address is for the log, not the caller"
        assert "detail" in body
    read = await client.get(f"{V1}/orders/{uuid.uuid4()}/status", headers=headers)
    assert_problem(read, 503)


@pytest.mark.parametrize(
    "document",
    [{"keys": "not-a-list"}, ["not", "an", "object"], {"no": "keys"}, "a string"],
    ids=["keys-not-a-list", "a-list", "no-keys", "a-string"],
)
async def test_jwks_url_answering_something_else_than_a_jwks_is_503_not_500(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    rsa_keys: list[rsa.RSAPrivateKey],
    document: Any,
) -> None:
    jwks_server.document = document
    client = make_client(jwks_settings(settings, jwks_server.url))
    assert_problem(await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1")), 503)


@pytest.mark.parametrize(
    "raw",
    [b"[" * 60_000, b'{"keys": [' * 5_000 + b"]}" * 5_000, b'{"keys": [], "n": ' + b"1" * 5_000 + b"}"],
    ids=["60000-brackets", "deep-keys", "5000-digit-integer"],
)
async def test_a_hostile_jwks_answer_is_503_not_500(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    rsa_keys: list[rsa.RSAPrivateKey],
    raw: bytes,
) -> None:
    # httpx's .json() raised RecursionError (or the integer's ValueError) out of the key fetch: a 500 (#19).
    jwks_server.raw = raw
    client = make_client(jwks_settings(settings, jwks_server.url))
    assert_problem(await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1")), 503)


async def test_jwks_entries_that_are_not_keys_are_skipped(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    jwks_server.document = {"keys": ["junk", 42, {"kty": "unknown", "kid": "x"}, jwk_of(rsa_keys[0], "key-1")]}
    client = make_client(jwks_settings(settings, jwks_server.url))
    assert (await post_order(client, rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1"))).status_code == 202


async def test_failing_jwks_is_retried_at_most_once_per_interval(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    jwks_clock: FakeMonotonic,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    client = make_client(jwks_settings(settings, jwks_server.url))
    headers = rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1")
    jwks_server.status = 500
    for _ in range(3):
        assert_problem(await post_order(client, headers), 503)
    assert jwks_server.requests == 1  # not once per request while the issuer is down

    jwks_server.status = 200
    jwks_clock.advance(31)
    assert (await post_order(client, headers)).status_code == 202
    assert jwks_server.requests == 2


async def test_stale_keys_keep_working_while_the_issuer_is_down(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    jwks_clock: FakeMonotonic,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    client = make_client(jwks_settings(settings, jwks_server.url))

    def headers() -> dict[str, str]:  # a token varsel has not seen, so its signature needs the keys
        return rs256(rsa_keys[0], bearer_claims(iss=ISSUER), kid="key-1")

    assert (await post_order(client, headers())).status_code == 202
    assert jwks_server.requests == 1

    jwks_server.status = 503
    jwks_clock.advance(3601)  # the cache is stale and the issuer is failing
    for _ in range(3):
        assert (await post_order(client, headers())).status_code == 202
    assert jwks_server.requests == 2  # one attempt, not one per request

    jwks_clock.advance(31)
    assert (await post_order(client, headers())).status_code == 202
    assert jwks_server.requests == 3


async def test_jwks_issuer_with_audience(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    issuer = TrustedIssuer(issuer=ISSUER, jwks_url=jwks_server.url, audience="varsel")
    client = make_client(production_settings(settings, issuer))
    wrong = rs256(rsa_keys[0], bearer_claims(iss=ISSUER, aud="other"), kid="key-1")
    assert_problem(await post_order(client, wrong), 401)
    right = rs256(rsa_keys[0], bearer_claims(iss=ISSUER, aud="varsel"), kid="key-1")
    assert (await post_order(client, right)).status_code == 202


async def test_platform_jwks_url_serves_platform_keys(
    make_client: Callable[[Settings], httpx.AsyncClient],
    settings: Settings,
    jwks_server: JwksServer,
    token: Callable[..., str],
    rsa_keys: list[rsa.RSAPrivateKey],
) -> None:
    issuer = TrustedIssuer(issuer=ISSUER, public_key_pem=public_pem(rsa_keys[1]))
    client = make_client(production_settings(settings, issuer, platform_jwks_url=jwks_server.url))
    platform = {"PlatformAccessToken": sign(rsa_keys[0], platform_claims("digdir"), alg="RS256", kid="key-1")}
    created = await post_order(client, platform)
    assert created.status_code == 202, created.text
    assert (await client.get(f"{V1}/orders/{created.json()['orderId']}", headers=platform)).json()[
        "creator"
    ] == "digdir"
    assert_problem(await post_order(client, {"PlatformAccessToken": token("digdir", platform=True)}), 401)


# ---------------------------------------------------------------- 5. `varsel token`


async def varsel_token(settings: Settings, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run `varsel token …` against the test's data folder: (the printed token, stderr)."""
    executable = Path(sys.executable).with_name("varsel")
    assert executable.exists(), executable
    environment = {key: value for key, value in os.environ.items() if not key.upper().startswith("VARSEL_")}
    environment.update(VARSEL_DATA_DIR=str(settings.data_dir), **(env or {}))
    process = await asyncio.create_subprocess_exec(
        str(executable),
        "token",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip().splitlines()[-1], stderr.decode()


async def test_varsel_token_prints_a_bearer_token_the_app_accepts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    printed, _ = await varsel_token(settings, "--org", "ttd")
    created = await post_order(client, bearer(printed))
    assert created.status_code == 202, created.text
    read = await client.get(f"{V1}/orders/{created.json()['orderId']}", headers=bearer(printed))
    assert read.json()["creator"] == "ttd"


async def test_varsel_token_with_another_scope_is_forbidden(client: httpx.AsyncClient, settings: Settings) -> None:
    printed, _ = await varsel_token(settings, "--org", "ttd", "--scope", "other")
    assert_problem(await post_order(client, bearer(printed)), 403)


async def test_varsel_token_platform_is_a_platform_access_token(client: httpx.AsyncClient, settings: Settings) -> None:
    printed, _ = await varsel_token(settings, "--org", "ttd", "--platform")
    claims = jwt.decode(printed, options={"verify_signature": False})
    assert claims["iss"] == "ttd"  # Altinn's shape: the issuer is the org, the app is named in urn:altinn:app
    assert claims["urn:altinn:app"] == "ttd/dev"
    headers = {"PlatformAccessToken": printed}
    created = await post_order(client, headers)
    assert created.status_code == 202, created.text
    read = await client.get(f"{V1}/orders/{created.json()['orderId']}", headers=headers)
    assert read.json()["creator"] == "ttd"
    # It is not a bearer token: its issuer is the org, which no one trusts as a bearer issuer.
    assert_problem(await post_order(client, bearer(printed)), 401)


async def test_varsel_token_warns_and_is_refused_when_issuers_are_configured(
    make_client: Callable[[Settings], httpx.AsyncClient], settings: Settings, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    issuer = TrustedIssuer(issuer=ISSUER, public_key_pem=public_pem(rsa_keys[0]))
    configured = json.dumps([issuer.model_dump()])
    printed, stderr = await varsel_token(settings, "--org", "ttd", env={"VARSEL_AUTH__ISSUERS": configured})
    assert "does not trust development tokens" in stderr
    client = make_client(production_settings(settings, issuer))
    assert_problem(await post_order(client, bearer(printed)), 401)


@pytest.mark.parametrize("url", ["http://keys.example.com/jwks", "ftp://keys.example.com/jwks"])
def test_signing_keys_over_plain_http_are_refused_at_start(tmp_path: Path, url: str) -> None:
    settings = Settings(data_dir=tmp_path, auth={"issuers": [{"issuer": "x", "jwks_url": url}]})
    with pytest.raises(ValueError, match="must be fetched over https"):
        build(settings)
    https = Settings(data_dir=tmp_path, auth={"issuers": [{"issuer": "x", "jwks_url": "https://keys.example.com/j"}]})
    asyncio.run(build(https).close())  # accepted
