"""/openapi.json says what varsel answers to input that does not validate: a 400 problem (ValidationProblemDetails),
never FastAPI's 422, which no route answers (install_problem_handlers turns parameter errors into 400 problems)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi import Header, Query

from varsel.app import Varsel, create_app

ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SCOPES = [
    "altinn:serviceowner/notifications.create",
    "varsel:notifications.preview",
    "varsel:registry.write",
    "altinn:serviceowner/notifications.composedemail.create",
]
PROBLEM_JSON = "application/problem+json"
VALIDATION_PROBLEM = {"$ref": "#/components/schemas/ValidationProblemDetails"}

# Values that parse as nothing varsel knows: an id or a reference no order has, NUL, a right-to-left override, a
# long string; an empty one too in a query (in a path it would name another route).
PATH_VALUES = ["not-an-id", "%00", "x" * 3000, "%E2%80%AE", str(uuid4())]
QUERY_VALUES = [*PATH_VALUES, ""]
# Bodies that fail: not JSON at all, cut off, the wrong type, an object without anything required.
BODIES = [b"{", b'{"recipients": [', b"42", b"[]", b"{}"]


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]


def _assert_documents_400_problem(responses: dict[str, Any], where: str) -> None:
    assert "400" in responses, f"{where}: validation can fail, but 400 is not documented"
    assert responses["400"]["content"] == {PROBLEM_JSON: {"schema": VALIDATION_PROBLEM}}, where


async def _probe(
    client: httpx.AsyncClient, method: str, path: str, op: dict[str, Any], headers: dict[str, str]
) -> list[tuple[str, httpx.Response]]:
    """Requests with invalid parameters and bodies, each with a valid token for every operation."""
    parameters = op.get("parameters", [])
    path_values = {p["name"]: str(uuid4()) for p in parameters if p["in"] == "path"}
    queries = [p["name"] for p in parameters if p["in"] == "query"]
    requests: list[tuple[str, dict[str, Any]]] = []
    for name in path_values:
        for value in PATH_VALUES:
            requests.append((path.format(**{**path_values, name: value}), {}))
    concrete = path.format(**path_values)
    for name in queries:
        requests.append((concrete, {}))  # absent
        for value in QUERY_VALUES:
            requests.append((f"{concrete}?{name}={value}", {}))
        requests.append((f"{concrete}?{name}=a&{name}=b", {}))
    if "requestBody" in op:
        for body in BODIES:
            requests.append((concrete, {"content": body, "headers": {"Content-Type": "application/json"}}))
    answers = []
    for url, extra in requests:
        response = await client.request(
            method.upper(), url, content=extra.get("content"), headers={**headers, **extra.get("headers", {})}
        )
        answers.append((url, response))
    return answers


@ONE_DATABASE
async def test_every_operation_documents_the_statuses_it_answers_to_invalid_input(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    headers = auth(scopes=SCOPES)
    failing_operations = set()
    for path, method, op in _operations(spec):
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        # FastAPI's 422 is answered by no route; v2's 422 NOT-00001 (an AltinnProblemDetails) is a real answer.
        altinn_422 = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/AltinnProblemDetails"}}}
        assert "422" not in responses or responses["422"]["content"] == altinn_422, (
            f"{where} documents FastAPI's 422, which no route answers"
        )
        if "requestBody" in op:
            _assert_documents_400_problem(responses, where)
        for url, response in await _probe(client, method, path, op, headers):
            status = str(response.status_code)
            assert status != "422", f"{method.upper()} {url}: {response.text}"
            assert status in responses, f"{method.upper()} {url} answered {status}, not documented: {response.text}"
            if status == "400":
                failing_operations.add(where)
                _assert_documents_400_problem(responses, where)
                assert response.headers["content-type"] == PROBLEM_JSON
                assert response.json()["errors"], response.text
    # The probes reach validation: every body operation, and the order search without its reference.
    assert failing_operations >= {
        f"{method.upper()} {path}" for path, method, op in _operations(spec) if "requestBody" in op
    } | {"GET /notifications/api/v1/orders"}


@ONE_DATABASE
async def test_parameters_fastapi_validates_are_documented_as_the_400_they_answer(varsel: Varsel) -> None:
    """Today every path and query parameter of varsel is a plain string and cannot fail FastAPI's validation; the
    first typed one (an UUID, an int, a required query or header) must be documented as the 400 it answers."""
    app = create_app(varsel)

    async def typed(thing_id: UUID, limit: int = 10) -> dict[str, str]:
        return {"id": str(thing_id), "limit": str(limit)}

    async def required(q: Annotated[str, Query()], x_tenant: Annotated[str, Header()]) -> dict[str, str]:
        return {"q": q, "tenant": x_tenant}

    async def plain(thing_id: str, q: str | None = None) -> dict[str, str]:
        return {"id": thing_id}

    app.add_api_route("/typed/{thing_id}", typed)
    app.add_api_route("/required", required)
    app.add_api_route("/plain/{thing_id}", plain)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://varsel.test") as client:
        spec = (await client.get("/openapi.json")).json()
        answers = {
            "/typed/{thing_id}": [
                await client.get("/typed/not-a-uuid"),
                await client.get(f"/typed/{uuid4()}?limit=many"),
            ],
            "/required": [await client.get("/required"), await client.get("/required?q=1")],
        }
        assert (await client.get("/plain/anything?q=%00")).status_code == 200
    for path, responses in answers.items():
        documented = spec["paths"][path]["get"]["responses"]
        assert "422" not in documented, path
        _assert_documents_400_problem(documented, path)
        for response in responses:
            assert response.status_code == 400, response.text
            assert response.headers["content-type"] == PROBLEM_JSON
    # A parameter that takes any value cannot fail: no 400 is promised for it.
    assert set(spec["paths"]["/plain/{thing_id}"]["get"]["responses"]) == {"200"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
