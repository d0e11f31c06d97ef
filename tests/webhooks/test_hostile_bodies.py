"""Hostile bodies on the webhooks API (tests/test_hostile_input.py leaves them here): too large, not JSON, nested
deep, the wrong media type, control characters and NUL in every string field, on both databases: each a clear 4xx
problem naming the field where there is one, never a 5xx, and nothing stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.webhooks.conftest import WEBHOOKS, Receiver

Auth = Callable[..., dict[str, str]]
KINDS = ["order.completed"]


@pytest.fixture
async def subscription(client: httpx.AsyncClient, auth: Auth, receiver: Receiver) -> str:
    made = await client.post(WEBHOOKS, json={"url": receiver.url, "events": KINDS}, headers=auth())
    assert made.status_code == 201
    return str(made.json()["id"])


def _targets(subscription: str, receiver: Receiver) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, a valid body) of every webhooks endpoint that reads a body."""
    one = f"{WEBHOOKS}/{subscription}"
    valid = {"url": receiver.url, "events": KINDS}
    return [
        ("POST", WEBHOOKS, valid),
        ("PATCH", one, valid),
        ("PUT", one, valid),
        ("POST", f"{one}/replay", {"fromSequenceNumber": 0}),
    ]


async def test_bodies_that_are_no_json_object_are_problems(
    client: httpx.AsyncClient, auth: Auth, subscription: str, receiver: Receiver
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for method, path, _ in _targets(subscription, receiver):
        for body, status in [(b"{", 400), (b"42", 400), (b"\xff\xfe", 400), (deep, 400), (b"x" * (3 << 20), 413)]:
            answer = await client.request(
                method, path, content=body, headers={**auth(), "Content-Type": "application/json"}
            )
            assert answer.status_code == status, (method, path, body[:10], answer.text[:300])
            assert answer.headers["content-type"] == "application/problem+json"
        wrong_type = await client.request(method, path, content=b"{}", headers={**auth(), "Content-Type": "text/plain"})
        assert wrong_type.status_code == 415


@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\u202e", "\x7f", "\ud800"])
async def test_control_characters_in_string_fields_are_refused_naming_the_field(
    client: httpx.AsyncClient, auth: Auth, subscription: str, receiver: Receiver, bad: str
) -> None:
    for method, path, valid in _targets(subscription, receiver):
        for field in ("url", "events", "since"):
            if field == "since" and not path.endswith("/replay"):
                continue
            if field != "since" and path.endswith("/replay"):
                continue
            body = dict(valid)
            if field == "url":
                body["url"] = receiver.url + bad
            elif field == "events":
                body["events"] = [KINDS[0] + bad]
            else:
                body = {"since": "2026-03-01T00:00:00Z" + bad}
            raw = json.dumps(body).encode()  # ASCII escapes: "\ud800" arrives as a lone surrogate escape
            answer = await client.request(
                method, path, content=raw, headers={**auth(), "Content-Type": "application/json"}
            )
            assert answer.status_code == 400, (method, path, field, answer.text[:300])
            errors = answer.json()["errors"]
            assert errors, answer.text
    listed = (await client.get(WEBHOOKS, headers=auth())).json()
    assert [(s["url"], s["events"]) for s in listed] == [(receiver.url, KINDS)]
