"""Schemathesis against /openapi.json, in process, with valid tokens: no 5xx, and every answer matches the schema.

Each operation gets VARSEL_SCHEMATHESIS_EXAMPLES generated requests (default 25, enough for CI), positive and
negative, on SQLite and PostgreSQL. Generation is derandomized, so a run tests the same requests every time and a
failure in CI reproduces locally. For a deeper run by hand:

    VARSEL_SCHEMATHESIS_EXAMPLES=1000 .venv/bin/pytest tests/test_openapi_schemathesis.py -p xdist -n 0
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.python import asgi as schemathesis_asgi
from sqlalchemy import text
from starlette.types import ASGIApp, Receive, Scope, Send

from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.db.tables import metadata
from varsel.settings import Settings

EXAMPLES = int(os.environ.get("VARSEL_SCHEMATHESIS_EXAMPLES", "25"))

V1 = "/notifications/api/v1"
CREATE_SCOPE = "altinn:serviceowner/notifications.create"
PREVIEW_SCOPE = "varsel:notifications.preview"
REGISTRY_SCOPE = "varsel:registry.write"
COMPOSED_SCOPE = "altinn:serviceowner/notifications.composedemail.create"
ALL_SCOPES = [CREATE_SCOPE, PREVIEW_SCOPE, REGISTRY_SCOPE, COMPOSED_SCOPE]

# Operations a platform access token cannot do everything on: the preview needs a scope platform tokens do not
# carry, and registry pushes take bearer tokens only. They always get the bearer token alone.
BEARER_ONLY = {"POST /notifications/api/v1/orders/preview", "POST /notifications/api/v1/registry/records"}

SCHEMATHESIS_CONFIG: dict[str, Any] = {
    "generation": {
        # The tokens are the test's own (valid ones, see `credentials`); generated values for the security headers
        # would only replace them with garbage. Invalid tokens are the `ignored_auth` check's and the auth tests'.
        "with-security-parameters": False,
    },
    "checks": {
        # Positive data is what the JSON Schema allows, and the order rules go beyond what JSON Schema can say: a
        # send time not in the past, a condition endpoint naming a public DNS name, exactly one kind of identifier
        # per recipient, an order id that exists for this org, an order still far enough from its send time to be
        # cancelled. So a schema-valid request may be refused with a documented 400 (naming the field), 404 or
        # 409; anything else (401, 403, 413, 415, 422, 5xx) for valid data with valid tokens is still a failure.
        "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "409"]},
        # Schemathesis's default list plus 413: a body over the size limit (e.g. more registry records than
        # maxItems allows, megabytes of them) is refused before it is parsed, which is a rejection too.
        "negative_data_rejection": {
            "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
        },
    },
    "phases": {
        # Follow the links the schema documents, not guessed ones: the guesses take resourceId in an order for the
        # id of some resource no operation creates, and then never start a workflow by creating an order.
        "stateful": {"inference": {"algorithms": []}},
    },
    "operations": [
        {
            # GET /orders/{id} takes any string as id (a non-UUID answers 404 after authentication, so anonymous
            # callers learn nothing), so /orders/email, /orders/sms and /orders/preview also match it and a 405
            # there rightly says `Allow: GET, POST`. The check compares Allow with the methods documented under
            # the literal path only and does not see the overlapping template. It stays on for every other path.
            "include-path": [f"{V1}/orders/email", f"{V1}/orders/sms", f"{V1}/orders/preview"],
            "checks": {"allow_header_conformance": {"enabled": False}},
        },
        {
            # A schema-valid chain may name a person or organisation the registry does not know: 422 NOT-00001.
            "include-path": [f"{V1}/future/orders"],
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "409", "422"]}},
        },
    ],
}


def _served_spec() -> dict[str, Any]:
    """/openapi.json as varsel serves it. The document does not depend on settings or data, so it is read once, at
    collection, from an app that never serves a request (the test below checks the tested app serves the same)."""
    with tempfile.TemporaryDirectory() as folder:
        services = build(Settings(data_dir=Path(folder)), database=Database(f"sqlite+aiosqlite:///{folder}/unused.db"))
        spec: dict[str, Any] = create_app(services).openapi()
        asyncio.run(services.close())
    return spec


class AppUnderTest:
    """The ASGI app schemathesis calls: it hands each request to the current test's app.

    Schemathesis binds an app to the schema, and the schema must exist at collection to make one test per
    operation, before any test's database exists; so the schema gets this stand-in, and the `app` fixture points it
    at the app built on that test's database. Its own lifespan does nothing: the fixture starts and stops the real
    app's.
    """

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.target is not None, "the test must use the `app` fixture"
        await self.target(scope, receive, send)


SPEC = _served_spec()
APP_UNDER_TEST = AppUnderTest()
schema = schemathesis.openapi.from_dict(SPEC, config=schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG))
schema.app = APP_UNDER_TEST


async def _empty_postgres(url: str) -> None:
    database = Database(url)
    names = ", ".join(table.name for table in metadata.sorted_tables)
    async with database.transaction() as conn:
        await conn.execute(text(f"TRUNCATE {names} CASCADE"))
    await database.dispose()


@pytest.fixture
def app(database_url: str, settings: Settings, clock: FrozenClock) -> Iterator[FastAPI]:
    """The app under test. Schemathesis runs it on an event loop of its own, so it gets a database engine of its
    own, first opened on that loop (the `varsel` fixture's engine belongs to the test's loop)."""
    if database_url.startswith("postgresql"):
        asyncio.run(_empty_postgres(database_url))
    tested = create_app(build(settings, clock=clock, database=Database(database_url)))
    assert tested.openapi() == SPEC
    with schemathesis_asgi.get_client(tested):
        pass  # entering starts the app's lifespan on schemathesis's loop; it runs until shutdown_lifespans()
    APP_UNDER_TEST.target = tested
    yield tested
    APP_UNDER_TEST.target = None
    # The app's lifespan shutdown, on that loop: providers, HTTP client and database engine closed.
    schemathesis_asgi.shutdown_lifespans()


@pytest.fixture
def credentials(token: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    """credentials(operation label): the headers for the next request, alternating a bearer token alone with a
    bearer token plus a platform access token (which wins for order endpoints), so both ways in are exercised.
    Both name the same org: an order created with one is found with the other, as workflows expect."""
    bearer = {"Authorization": f"Bearer {token('ttd', scopes=ALL_SCOPES)}"}
    with_platform = {**bearer, "PlatformAccessToken": token("ttd", platform=True)}
    turns = itertools.cycle([bearer, with_platform])

    def headers(label: str) -> dict[str, str]:
        chosen = next(turns)
        return dict(bearer if label in BEARER_ONLY else chosen)

    return headers


# derandomize: the same requests on every run, so CI is stable and a failure there reproduces locally. No example
# database, for the same reason: a failure seen once on one machine is not replayed into later runs. No deadline:
# timing is not what is tested. Health checks: the `app` fixture is deliberately shared by a test's examples, and
# generated bodies are large and often filtered.
DETERMINISTIC = hypothesis_settings(
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@hypothesis_settings(DETERMINISTIC, max_examples=EXAMPLES)
def test_every_operation_answers_within_its_schema(
    case: schemathesis.Case, app: FastAPI, credentials: Callable[[str], dict[str, str]]
) -> None:
    """Examples from the schema, boundary values (coverage phase) and EXAMPLES generated requests per operation,
    positive and negative, each checked by every schemathesis check: no 5xx, status, content type, headers and body
    as documented, schema-valid data accepted, schema-invalid data refused, auth enforced, 405s with a true Allow."""
    case.call_and_validate(headers=credentials(case.operation.label))


def test_order_workflows_answer_within_their_schema(app: FastAPI, credentials: Callable[[str], dict[str, str]]) -> None:
    """Sequences of calls following the documented links: an order is created, then read, listed and cancelled
    through its id, so the operations on existing orders answer 200 (and 409) and those answers are validated too
    (with generated ids they only ever meet 404)."""

    class Workflow(schema.as_state_machine()):
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": credentials(case.operation.label)}

    # A third as many workflows as single requests: each workflow is up to 8 requests.
    Workflow.run(settings=hypothesis_settings(DETERMINISTIC, max_examples=max(5, EXAMPLES // 3), stateful_step_count=8))


OPERATIONS = [
    pytest.param(method, path, operation, id=f"{method.upper()} {path}")
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
]


# One database is enough: what is checked here is decided before any query.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS)
async def test_each_operation_takes_exactly_the_tokens_its_schema_names(
    client: httpx.AsyncClient, token: Callable[..., str], method: str, path: str, operation: dict[str, Any]
) -> None:
    """A credential the schema offers for an operation authenticates there; one it does not offer is refused.
    (The registry push declared the app-wide "bearer or PlatformAccessToken" while it takes bearer tokens only.)"""
    offered = {name for requirement in operation.get("security", SPEC["security"]) for name in requirement}
    credentials = {
        "bearer": {"Authorization": f"Bearer {token('ttd', scopes=ALL_SCOPES)}"},
        "platformAccessToken": {"PlatformAccessToken": token("ttd", platform=True)},
    }
    assert offered <= set(credentials)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("example")
    url = path.replace("{id}", str(uuid.uuid4()))
    query = {"sendersReference": "case-4711"} if method == "get" and path.endswith("/orders") else None

    for scheme, headers in credentials.items():
        response = await client.request(method, url, json=body, params=query, headers=headers)
        if scheme in offered:
            # Authenticated: the operation's own answer (a 404 for a made-up id; 403 where a scope is missing).
            assert response.status_code != 401, (scheme, response.text)
        else:
            assert response.status_code == 401, (scheme, response.text)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # Two routes share /orders; Starlette named only the first one's method in Allow.
        ("OPTIONS", "/orders", "GET, POST"),
        ("DELETE", "/orders", "GET, POST"),
        ("POST", f"/orders/{uuid.UUID(int=1)}/cancel", "PUT"),
        ("GET", "/registry/records", "POST"),
    ],
)
async def test_method_not_allowed_names_every_method_of_the_path(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], method: str, path: str, allow: str
) -> None:
    response = await client.request(method, f"{V1}{path}", headers=auth())
    assert response.status_code == 405, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == allow
