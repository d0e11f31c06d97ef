"""Hostile input on every endpoint that takes a body: huge bodies, deep nesting, a million recipients, control
characters and bytes that are not UTF-8 in every string field, huge headers, bodies that are not JSON.

Each is answered with a clear 4xx RFC 9457 problem (naming the field where there is one), never a 5xx, and the
service still takes a normal order afterwards. The string-field tests run on SQLite and PostgreSQL: PostgreSQL text
columns refuse NUL, so a NUL that got past validation would surface there as a 500 or a 503.

What each string field accepts, as a user would expect it:

- Text for people, the email subject and the email and SMS bodies: any Unicode text, a right-to-left override
  (U+202E, legitimate in right-to-left languages) included, stored and shown back as sent; tabs, and in bodies line
  breaks (a subject's line breaks are folded into spaces); no other control character: NUL, BEL, ESC, DEL and the
  C1 codes are mistakes (a terminal colour code, mis-decoded text) that would otherwise surface raw in an email
  header or break an SMS gateway's encoding, so they are refused here, naming the field.
- The sender's reference: the sender's own opaque text, which varsel only stores and shows back as sent; anything
  but NUL (which no database text column can hold).
- Everything with a syntax (addresses, numbers, identity numbers, the sender, URLs, resource ids and actions, enums,
  times): a control or formatting character makes it invalid, refused naming the field.
- Registry records: each is applied or refused on its own, a refusal listed in the 200 answer's `rejected` with
  the field in the reason, as the registry push documents. Which characters each record field takes is the
  registry import's rule (its addresses are checked when orders look them up); a record with NUL is always
  refused and never reaches the database.
- Bytes that are not JSON text (invalid UTF-8, a raw control character, a lone surrogate escape) are refused by the
  JSON reader, before any field exists: the problem is reported on `$`, and its line and column point into the
  field's value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from varsel.app import Varsel, create_app
from varsel.problems import field_path
from varsel.settings import Limits, Settings

V1 = "/notifications/api/v1"
PROBLEM_JSON = "application/problem+json"
SCOPES = ["altinn:serviceowner/notifications.create", "varsel:notifications.preview", "varsel:registry.write"]
MEGABYTE = 1024 * 1024
MAX_BODY = Limits().max_body_bytes

Headers = dict[str, str]
Path = tuple[str | int, ...]

ORDER: dict[str, Any] = {
    "sendersReference": "case-4711",
    "requestedSendTime": "2026-03-03T10:00:00Z",
    "conditionEndpoint": "https://example.com/condition",
    "resourceId": "app_ttd_apps-test",
    "resourceAction": "read",
    "notificationChannel": "EmailAndSms",
    "emailTemplate": {
        "fromAddress": "noreply@example.com",
        "subject": "Your case has been updated",
        "body": "Dear customer, your case has been updated.",
        "contentType": "Plain",
    },
    "smsTemplate": {"senderNumber": "Varsel", "body": "Your case has been updated."},
    "recipients": [
        {"emailAddress": "ola.nordmann@example.com"},
        {"mobileNumber": "+4799999999"},
        {"nationalIdentityNumber": "01017012345"},
        {"organizationNumber": "311000179"},
    ],
}
_BASE = {key: ORDER[key] for key in ("sendersReference", "requestedSendTime", "conditionEndpoint", "resourceId")}
EMAIL_ORDER: dict[str, Any] = {
    **_BASE,
    "resourceAction": "read",
    **ORDER["emailTemplate"],
    "recipients": [ORDER["recipients"][0], ORDER["recipients"][2], ORDER["recipients"][3]],
}
SMS_ORDER: dict[str, Any] = {
    **_BASE,
    "resourceAction": "read",
    **ORDER["smsTemplate"],
    "recipients": [ORDER["recipients"][1], ORDER["recipients"][2], ORDER["recipients"][3]],
}
RECORDS: list[dict[str, Any]] = [
    {
        "kind": "person",
        "nationalIdentityNumber": "01017012345",
        "name": "Ola Nordmann",
        "emailAddress": "ola.nordmann@example.com",
        "mobileNumber": "+4799999999",
    },
    {
        "kind": "organization",
        "organizationNumber": "311000179",
        "name": "Nordmann AS",
        "emailAddresses": ["post@nordmann.example.com"],
        "mobileNumbers": ["+4740000000"],
    },
    {
        "kind": "userContact",
        "userId": "user-1",
        "nationalIdentityNumber": "01017012345",
        "organizationNumber": "311000179",
        "emailAddress": "ola@nordmann.example.com",
        "mobileNumber": "+4741000000",
    },
    {
        "kind": "authorization",
        "userId": "user-1",
        "organizationNumber": "311000179",
        "resourceId": "app_ttd_apps-test",
        "actions": ["read"],
    },
]


@dataclass(frozen=True)
class BodyEndpoint:
    path: str
    body: Any  # valid, with every string field filled in
    ok: int
    orders: bool = True  # an order endpoint (else the registry push)

    def __str__(self) -> str:
        return self.path


ORDERS = BodyEndpoint(f"{V1}/orders", ORDER, 202)
EMAIL_ORDERS = BodyEndpoint(f"{V1}/orders/email", EMAIL_ORDER, 202)
SMS_ORDERS = BodyEndpoint(f"{V1}/orders/sms", SMS_ORDER, 202)
PREVIEW = BodyEndpoint(f"{V1}/orders/preview", ORDER, 200)
REGISTRY = BodyEndpoint(f"{V1}/registry/records", RECORDS, 200, orders=False)
BODY_ENDPOINTS = [ORDERS, EMAIL_ORDERS, SMS_ORDERS, PREVIEW, REGISTRY]
# The providers' delivery-report webhooks read their bodies themselves, with limits of their own; their hostile
# bodies are tests/providers/test_delivery_reports.py's.
REPORT_WEBHOOKS = {f"{V1}/reports/sms/linkmobility", f"{V1}/reports/email/acs"}


# Most of what is tested here is decided before any query (body size, JSON reading, tokens, media types), so one
# database is enough; only the string fields, which are stored, are tested on SQLite and PostgreSQL.
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# The normal order that shows the service still serves: the smallest there is.
NORMAL_ORDER = {"subject": "s", "body": "b", "recipients": [{"emailAddress": "a@example.com"}]}


@pytest.fixture
def headers(auth: Callable[..., Headers]) -> Headers:
    """A valid token for every endpoint here: orders, previews and registry pushes."""
    return auth(scopes=SCOPES)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["title"]
    assert problem["traceId"]
    return problem


def errors_of(response: httpx.Response) -> dict[str, list[str]]:
    """A 400 validation problem's errors: each field with its reasons."""
    errors: dict[str, list[str]] = assert_problem(response, 400)["errors"]
    assert errors
    assert all(reasons and all(isinstance(r, str) and r for r in reasons) for reasons in errors.values())
    return errors


async def assert_still_serving(client: httpx.AsyncClient, headers: Headers) -> None:
    """The service is up and takes a normal order."""
    response = await client.post(f"{V1}/orders/email", json=NORMAL_ORDER, headers=headers)
    assert response.status_code == 202, response.text


async def post_raw(client: httpx.AsyncClient, endpoint: BodyEndpoint, body: bytes, headers: Headers) -> httpx.Response:
    return await client.post(endpoint.path, content=body, headers={**headers, "Content-Type": "application/json"})


@ONE_DATABASE
def test_every_endpoint_that_takes_a_json_body_is_here(varsel: Varsel) -> None:
    """A new endpoint taking a body cannot miss these tests."""
    try:
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(create_app(varsel).routes))
    except ImportError:  # older FastAPI: app.routes is already flat
        routes = list(create_app(varsel).routes)
    with_body = {route.path for route in routes if {"POST", "PUT", "PATCH"} & set(route.methods or ())}
    # PUT /orders/{id}/cancel takes no body. POST /future/orders answers a repeated body 200 (idempotency), which
    # these tests' repeated posts cannot use: its hostile bodies are tests/api_v2/test_hostile_bodies.py's (and
    # composed email's, with its own scope, tests/api_v2/test_composed.py's).
    elsewhere = {f"{V1}/orders/{{id}}/cancel", f"{V1}/future/orders", f"{V1}/future/orders/composed-email"}
    # The instant routes are idempotent too: their hostile bodies are tests/api_v2/test_instant_api.py's.
    elsewhere |= {f"{V1}/future/orders/instant", f"{V1}/future/orders/instant/sms", f"{V1}/future/orders/instant/email"}
    # The console's forms (form posts behind a session and a CSRF token) are fuzzed by tests/console/
    # test_review_forms.py; the metrics month form by tests/support/test_metrics.py, and its Parquet routes read
    # no body.
    with_body = {path for path in with_body if path != "/console" and not path.startswith("/console/")}
    elsewhere |= {f"{V1}/metrics", f"{V1}/metrics/sms", f"{V1}/metrics/email"}
    # Status webhooks: their hostile bodies are tests/webhooks/test_hostile_bodies.py's (rotate-secret takes none).
    elsewhere |= {f"{V1}/webhooks", f"{V1}/webhooks/{{id}}", f"{V1}/webhooks/{{id}}/replay",
                  f"{V1}/webhooks/{{id}}/rotate-secret"}  # fmt: skip
    assert with_body - REPORT_WEBHOOKS - elsewhere == {e.path for e in BODY_ENDPOINTS}


# ---------------------------------------------------------------- size: 10 MB, a million recipients


async def _asgi_post(
    app: Any, path: str, headers: Headers, body: bytes, *, declare_length: bool
) -> tuple[int, dict[str, Any], int]:
    """POST straight to the ASGI app, the body in 64 KiB chunks: (status, JSON answer, body bytes the app read)."""
    chunk = 64 * 1024
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    raw_headers = [(b"host", b"varsel.test"), (b"content-type", b"application/json")]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    if declare_length:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "server": ("varsel.test", 80),
        "client": ("127.0.0.1", 50000),
    }
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if pieces:
            piece = pieces.pop(0)
            read += len(piece)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(answer), read


@ONE_DATABASE
@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "streamed"])
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_ten_megabyte_body_is_refused_with_413_before_it_is_read_whole(
    varsel: Varsel,
    client: httpx.AsyncClient,
    headers: Headers,
    endpoint: BodyEndpoint,
    declare_length: bool,
) -> None:
    body = b'{"padding": "' + b"x" * (10 * MEGABYTE) + b'"}'
    status, problem, read = await _asgi_post(
        create_app(varsel), endpoint.path, headers, body, declare_length=declare_length
    )
    assert (status, problem["status"], problem["title"]) == (413, 413, "Content Too Large")
    assert problem["detail"] == f"The request body must be at most {MAX_BODY} bytes."
    if declare_length:
        assert read == 0  # refused on the header, nothing read
    else:
        assert MAX_BODY < read <= MAX_BODY + 64 * 1024  # read only until past the limit
    await assert_still_serving(client, headers)


def _million(item: bytes) -> bytes:
    return b",".join([item] * 1_000_000)


@ONE_DATABASE
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_a_million_recipients_is_refused_with_413(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> None:
    if endpoint.orders:
        # Built as bytes, not through json.dumps of a million dicts.
        fields = json.dumps({k: v for k, v in endpoint.body.items() if k != "recipients"}).encode()[1:-1]
        body = b"{" + fields + b',"recipients":[' + _million(b'{"emailAddress":"a@example.com"}') + b"]}"
    else:
        body = b"[" + _million(json.dumps(RECORDS[0]).encode()) + b"]"
    assert len(body) > 30 * MEGABYTE
    problem = assert_problem(await post_raw(client, endpoint, body, headers), 413)
    assert problem["detail"] == f"The request body must be at most {MAX_BODY} bytes."
    await assert_still_serving(client, headers)


class TestRecipientLimitWithinTheBodyLimit:
    """A million of the smallest recipients, `{}`, fit in 3 MB; with the body limit raised to let them in, the
    recipient limit refuses them, and recipients past it are not even read."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"limits": Limits(max_body_bytes=4 * MEGABYTE)})

    @ONE_DATABASE
    @pytest.mark.parametrize("endpoint", [ORDERS, EMAIL_ORDERS, SMS_ORDERS, PREVIEW], ids=str)
    async def test_a_million_recipients_is_refused_naming_the_recipient_limit(
        self,
        client: httpx.AsyncClient,
        varsel: Varsel,
        headers: Headers,
        endpoint: BodyEndpoint,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        seen: list[int] = []
        check = varsel.validator._recipients

        def spy(errors: Any, recipients: Any, channel: Any) -> Any:
            seen.append(len(recipients or ()))
            return check(errors, recipients, channel)

        monkeypatch.setattr(varsel.validator, "_recipients", spy)
        fields = json.dumps({k: v for k, v in endpoint.body.items() if k != "recipients"}).encode()[1:-1]
        body = b"{" + fields + b',"recipients":[' + _million(b"{}") + b"]}"

        errors = errors_of(await post_raw(client, endpoint, body, headers))

        assert errors == {"Recipients": ["An order can have at most 10000 recipients."]}
        # Parsed only one past the limit: a million recipient objects would take hundreds of megabytes.
        assert seen == [10_001]
        await assert_still_serving(client, headers)


# ---------------------------------------------------------------- nesting


NESTED = {
    "arrays-unclosed": b"[" * 100_000,
    "arrays-closed": b"[" * 100_000 + b"]" * 100_000,
    "objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "in-a-field": b'{"recipients":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@ONE_DATABASE
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_deeply_nested_json_is_a_400_problem(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> None:
    for name, body in NESTED.items():
        errors = errors_of(await post_raw(client, endpoint, body, headers))
        # Refused by the JSON reader's depth limit (not Python's recursion limit, which would be a 500).
        assert list(errors) == ["$"], name
        assert errors["$"][0].startswith("The request body is not valid JSON: recursion limit exceeded"), (name, errors)
        await assert_still_serving(client, headers)


# ---------------------------------------------------------------- every string field


def string_leaves(value: Any, path: Path = ()) -> Iterator[Path]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_leaves(item, (*path, index))


def replaced(value: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)  # type: ignore[index]
    return copy


def leaf(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


PLACEHOLDER = "@@hostile@@"


def body_with(endpoint: BodyEndpoint, path: Path, hostile: bytes) -> tuple[bytes, int, int]:
    """The endpoint's valid body with `hostile` (raw JSON string content) in the middle of the value at `path`:
    (the body, where the hostile bytes start, where the value's closing quote is)."""
    value = leaf(endpoint.body, path)
    middle = len(value) // 2
    text = json.dumps(replaced(endpoint.body, path, value[:middle] + PLACEHOLDER + value[middle:])).encode()
    start = text.index(PLACEHOLDER.encode())
    body = text.replace(PLACEHOLDER.encode(), hostile)
    return body, start, text.index(b'"', start) - len(PLACEHOLDER) + len(hostile)


PEOPLE_TEXT = {"subject", "body"}
OPAQUE = {"sendersReference"}


# JSON escapes of characters that are valid JSON text: the field's rules decide.
CONTROL = {"nul": rb"\u0000", "bel": rb"\u0007", "esc": rb"\u001b", "rlo": rb"\u202e"}
# Bytes that are not JSON text: the JSON reader refuses them.
NOT_JSON_TEXT = {
    "invalid-utf8-ff-fe": b"\xff\xfe",
    "invalid-utf8-c3-28": b"\xc3\x28",
    "lone-surrogate": rb"\ud800",
    "raw-control-character": b"\x07",  # control characters must be escaped in JSON strings
}


def _accepts(path: Path, name: str) -> bool:
    """Whether the field takes the character (see the module's docstring)."""
    key = path[-1]
    if key in OPAQUE:
        return name != "nul"
    if key in PEOPLE_TEXT:
        return name == "rlo"
    return False


def _values(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for item in node.values():
            yield from _values(item)
    elif isinstance(node, list):
        for item in node:
            yield from _values(item)


# Each test below goes through every string field of one endpoint's body, and reports every field that answered
# wrongly, not only the first.


async def _control_characters_in_every_field(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> list[str]:
    wrong: list[str] = []
    for path in string_leaves(endpoint.body):
        field = field_path(path)
        for name, hostile in CONTROL.items():
            body, _, _ = body_with(endpoint, path, hostile)
            response = await post_raw(client, endpoint, body, headers)
            if not _accepts(path, name):
                # Refused, naming this field and no other (the rest of the body is valid).
                named = set(response.json().get("errors", {})) if response.status_code == 400 else None
                if named != {field}:
                    wrong.append(f"{field} with {name}: {response.status_code} {response.text}")
                else:
                    errors_of(response)  # and a well-formed problem
            elif response.status_code != endpoint.ok:
                wrong.append(f"{field} with {name}: {response.status_code} {response.text}, expected {endpoint.ok}")
            elif endpoint.ok == 202:
                # Stored and shown back exactly as sent.
                sent = leaf(json.loads(body), path)
                stored = await client.get(f"{V1}/orders/{response.json()['orderId']}", headers=headers)
                if sent not in list(_values(stored.json())):
                    wrong.append(f"{field} with {name}: stored as {stored.text}")
            await assert_still_serving(client, headers)
    return wrong


@pytest.mark.parametrize("endpoint", [ORDERS, EMAIL_ORDERS, SMS_ORDERS], ids=str)
async def test_control_characters_in_every_order_string_field(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> None:
    wrong = await _control_characters_in_every_field(client, headers, endpoint)
    assert not wrong, "\n".join(wrong)


@ONE_DATABASE  # the preview stores nothing
async def test_control_characters_in_every_preview_string_field(client: httpx.AsyncClient, headers: Headers) -> None:
    wrong = await _control_characters_in_every_field(client, headers, PREVIEW)
    assert not wrong, "\n".join(wrong)


async def test_control_characters_in_every_registry_record_field(client: httpx.AsyncClient, headers: Headers) -> None:
    wrong: list[str] = []
    for path in string_leaves(RECORDS):
        index, key = path[0], path[1]
        for name, hostile in CONTROL.items():
            body, _, _ = body_with(REGISTRY, path, hostile)
            response = await post_raw(client, REGISTRY, body, headers)
            assert response.status_code == 200, response.text
            changes = response.json()
            rejected = {item["index"]: item["reason"] for item in changes["rejected"]}
            if changes["inserted"] + changes["updated"] + len(rejected) != len(RECORDS):
                wrong.append(f"{path} with {name}: {changes}")
            if (name == "nul" or key == "kind") and index not in rejected:
                wrong.append(f"{path} with {name}: not rejected")  # NUL must never reach the database
            if index in rejected and str(key) not in rejected[index]:
                wrong.append(f"{path} with {name}: the reason does not name the field: {rejected[index]}")
            await assert_still_serving(client, headers)
    assert not wrong, "\n".join(wrong)


@ONE_DATABASE  # refused by the JSON reader, before anything reaches a database
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_bytes_that_are_not_json_text_in_every_string_field(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> None:
    wrong: list[str] = []
    for path in string_leaves(endpoint.body):
        for name, hostile in NOT_JSON_TEXT.items():
            body, start, end = body_with(endpoint, path, hostile)
            response = await post_raw(client, endpoint, body, headers)
            errors = errors_of(response)
            message = errors.get("$", [""])[0]
            position = re.search(r"^The request body is not valid JSON: .* at line 1 column (\d+)\.$", message)
            # The column (1-based) points into the field's value: where the JSON reader gave up.
            if list(errors) != ["$"] or not position or not start < int(position[1]) <= end + 1:
                wrong.append(f"{field_path(path)} with {name}: {errors} (value at {start}..{end})")
            await assert_still_serving(client, headers)
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- the query string and the path


# Percent-encoded, as they arrive in a URL: the same characters and bytes as in the bodies above.
HOSTILE_IN_URLS = {
    "nul": "%00",
    "bel": "%07",
    "esc": "%1B",
    "rlo": "%E2%80%AE",
    "invalid-utf8-ff-fe": "%FF%FE",
    "invalid-utf8-c3-28": "%C3%28",
    "lone-surrogate": "%ED%A0%80",
}


async def test_hostile_senders_references_and_order_ids(client: httpx.AsyncClient, headers: Headers) -> None:
    """GET /orders?sendersReference= reaches the database with the caller's text: no such reference is stored, so
    the list is empty, except for NUL, which no text column can hold or be compared with, refused naming the
    parameter. An order id that is not a UUID is no order: 404."""
    for name, hostile in HOSTILE_IN_URLS.items():
        listed = await client.get(f"{V1}/orders?sendersReference=case{hostile}4711", headers=headers)
        if name == "nul":
            assert errors_of(listed) == {"SendersReference": ["Value error, must not contain NUL characters."]}
        else:
            assert listed.status_code == 200, (name, listed.text)
            assert listed.json() == {"count": 0, "orders": []}
        await assert_still_serving(client, headers)
        for suffix in ["", "/status", "/notifications/email", "/notifications/sms", "/cancel"]:
            method = "PUT" if suffix == "/cancel" else "GET"
            response = await client.request(method, f"{V1}/orders/0{hostile}1{suffix}", headers=headers)
            assert_problem(response, 404)
        await assert_still_serving(client, headers)


# ---------------------------------------------------------------- headers


HUGE_CREDENTIALS = {
    "bearer-a-megabyte-long": {"Authorization": "Bearer " + "a" * MEGABYTE},
    "jwt-shaped-a-megabyte-long": {"Authorization": "Bearer " + ".".join(["eyJ" + "A" * (MEGABYTE // 3)] * 3)},
    "platform-token-a-megabyte-long": {"PlatformAccessToken": "a" * MEGABYTE},
}


@ONE_DATABASE
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_a_huge_token_is_a_401_problem(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> None:
    for name, credentials in HUGE_CREDENTIALS.items():
        response = await client.post(endpoint.path, json=endpoint.body, headers=credentials)
        problem = assert_problem(response, 401)
        assert len(response.content) < 1000, f"{name}: the token is not echoed back"
        assert problem["detail"]
        await assert_still_serving(client, headers)


NOT_JSON_MEDIA_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/octet-stream",
    "",
]


@ONE_DATABASE
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_a_body_declared_as_something_else_than_json_is_a_415_problem(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> None:
    for content_type in NOT_JSON_MEDIA_TYPES:
        # A valid JSON body, so it is the declared type alone that is refused.
        request_headers = {**headers, "Content-Type": content_type} if content_type else headers
        body = json.dumps(endpoint.body).encode()
        problem = assert_problem(await client.post(endpoint.path, content=body, headers=request_headers), 415)
        assert "application/json" in problem["detail"], content_type
        await assert_still_serving(client, headers)


@ONE_DATABASE
@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=str)
async def test_json_in_another_encoding_than_utf8_is_a_400_problem(
    client: httpx.AsyncClient, headers: Headers, endpoint: BodyEndpoint
) -> None:
    """JSON is UTF-8 (RFC 8259, which defines no charset parameter): UTF-16 is not read as JSON, whatever the
    Content-Type says."""
    body = json.dumps(endpoint.body).encode("utf-16")
    response = await client.post(
        endpoint.path, content=body, headers={**headers, "Content-Type": "application/json; charset=utf-16"}
    )
    errors = errors_of(response)
    assert list(errors) == ["$"]
    await assert_still_serving(client, headers)
