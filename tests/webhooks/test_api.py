"""The subscriptions API: made, read, changed, rotated, deleted, each refusal a problem naming the field and why, and
another service owner's subscription not found anywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.webhooks.conftest import OTHER_ORG, WEBHOOKS, FakeResolver, Receiver
from varsel.app import Varsel
from varsel.webhooks.addresses import WebhookHosts

Auth = Callable[..., dict[str, str]]
KINDS = ["order.completed", "notification.status_changed"]


async def _create(client: httpx.AsyncClient, auth: Auth, url: str, kinds: list[str] | None = None, org: str = "ttd")\
        -> httpx.Response:  # fmt: skip
    return await client.post(WEBHOOKS, json={"url": url, "events": kinds or KINDS}, headers=auth(org))


async def test_a_subscription_is_made_with_its_secret_shown_once(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    made = await _create(client, auth, receiver.url)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["url"] == receiver.url
    assert body["events"] == sorted(KINDS)
    assert body["enabled"] is True
    assert body["secret"].startswith("whsec_")
    assert made.headers["Location"].endswith(f"{WEBHOOKS}/{body['id']}")

    read = await client.get(f"{WEBHOOKS}/{body['id']}", headers=auth())
    assert read.status_code == 200
    assert "secret" not in read.json()
    listed = await client.get(WEBHOOKS, headers=auth())
    assert [s["id"] for s in listed.json()] == [body["id"]]
    assert "secret" not in listed.json()[0]


async def test_the_create_scope_is_needed(client: httpx.AsyncClient, auth: Auth, receiver: Receiver) -> None:
    assert (await client.get(WEBHOOKS)).status_code == 401
    refused = await client.post(WEBHOOKS, json={"url": receiver.url, "events": KINDS}, headers=auth(scopes=["x"]))
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"url": "http://hooks.example.com/x", "events": KINDS}, "Url",
         "The URL must use https (unless the operator of this service lists the host in "
         "VARSEL_WEBHOOKS__ALLOWED_HOSTS)."),
        ({"url": "https://user:pw@hooks.example.com/x", "events": KINDS}, "Url",
         "The URL must not carry credentials (user:password@): verify deliveries by their signature."),
        ({"url": "https://10.0.0.5/x", "events": KINDS}, "Url",
         "The URL must name its host by a DNS name, not an IP address (unless the operator of this service lists "
         "the host in VARSEL_WEBHOOKS__ALLOWED_HOSTS)."),
        ({"url": "https://printer.local/x", "events": KINDS}, "Url",
         "The URL's host must be a public DNS name with a top-level domain (unless the operator of this service "
         "lists the host in VARSEL_WEBHOOKS__ALLOWED_HOSTS)."),
        ({"url": "ftp://hooks.example.com/x", "events": KINDS}, "Url", "The URL must be an absolute https URL."),
        ({"url": "https://hooks.example.com/x", "events": []}, "Events",
         "At least one event kind is required: order.completed, order.send_condition_not_met, order.cancelled, "
         "notification.status_changed."),
        ({"url": "https://hooks.example.com/x", "events": ["order.completed", "order.shipped"]}, "Events[1]",
         "Unknown event kind 'order.shipped'; known kinds: order.completed, order.send_condition_not_met, "
         "order.cancelled, notification.status_changed."),
        ({"url": "https://hooks.example.com/x", "events": ["order.completed", "order.completed"]}, "Events[1]",
         "The event kind 'order.completed' is listed twice."),
        ({"events": KINDS}, "Url", "Field required."),
        ({"url": "https://hooks.example.com/x", "events": ["order.completed"] * 5}, "Events",
         "At most 4 event kinds, each once: order.completed, order.send_condition_not_met, order.cancelled, "
         "notification.status_changed."),
        ({"url": "https://hooks.example.com/x", "events": "order.completed"}, "Events",
         "Input should be a valid array."),
    ],
)  # fmt: skip
async def test_bad_input_is_a_problem_naming_the_field(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, Any], field: str, message: str
) -> None:
    refused = await client.post(WEBHOOKS, json=body, headers=auth())
    assert refused.status_code == 400, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["errors"] == {field: [message]}


async def test_a_url_resolving_to_an_internal_address_is_refused_at_creation(
    client: httpx.AsyncClient, auth: Auth, resolver: FakeResolver
) -> None:
    resolver.answers["hooks.example.com"] = ["93.184.215.14", "10.0.0.5"]
    refused = await _create(client, auth, "https://hooks.example.com/x")
    assert refused.status_code == 400
    assert refused.json()["errors"] == {
        "Url": [
            "The URL's host is refused: hooks.example.com resolves to an address that is not public (10.0.0.5) "
            "(unless the operator of this service lists the host in VARSEL_WEBHOOKS__ALLOWED_HOSTS)."
        ]
    }
    # A public answer passes; a name that does not resolve (yet) too: it is checked again at every delivery.
    resolver.answers["hooks.example.com"] = ["93.184.215.14"]
    assert (await _create(client, auth, "https://hooks.example.com/x")).status_code == 201
    assert (await _create(client, auth, "https://not-yet.example.com/x")).status_code == 201


async def test_a_suffix_of_the_allow_list_admits_plain_http_but_not_internal_names_or_addresses(
    resolver: FakeResolver,
) -> None:
    """A `*.` suffix admits names nobody listed one by one, so it cannot vouch for where they point: a host it matches
    must still be a public DNS name resolving to public addresses (as the attachments' suffixes), and the refusal
    says that only an exact entry lifts the check (before, an internal name was accepted by the URL rule, then
    refused with a hint to list the host where it already was)."""
    hosts = WebhookHosts(["*.svc.cluster.local", "*.corp.example.com", "hooks.svc.cluster.local"], resolver)
    exact_only = (
        " (a '*.' suffix in VARSEL_WEBHOOKS__ALLOWED_HOSTS lifts only the https rule: the operator must list the host "
        "there by its exact name to lift this one)."
    )
    assert hosts.url_problem("http://other.svc.cluster.local/x") == (
        "The URL's host must be a public DNS name with a top-level domain" + exact_only
    )
    assert hosts.url_problem("http://hooks.corp.example.com/x") is None  # plain http: the suffix admits it
    resolver.answers["hooks.corp.example.com"] = ["10.0.0.7"]
    assert await hosts.address_problem("http://hooks.corp.example.com/x") == (
        "The URL's host is refused: hooks.corp.example.com resolves to an address that is not public (10.0.0.7)"
        + exact_only
    )
    # Listed exactly, an internal name is taken as it is, and not resolved.
    assert hosts.url_problem("http://hooks.svc.cluster.local/x") is None
    assert await hosts.address_problem("http://hooks.svc.cluster.local/x") is None
    assert "hooks.svc.cluster.local" not in resolver.asked


async def test_another_owners_subscription_is_not_found_anywhere(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    theirs = (await _create(client, auth, receiver.url, org=OTHER_ORG)).json()["id"]
    other = auth("ttd")
    path = f"{WEBHOOKS}/{theirs}"
    answers = [
        await client.get(path, headers=other),
        await client.patch(path, json={"enabled": False}, headers=other),
        await client.put(path, json={"url": receiver.url, "events": KINDS}, headers=other),
        await client.post(f"{path}/rotate-secret", headers=other),
        await client.post(f"{path}/replay", json={"fromSequenceNumber": 0}, headers=other),
        await client.get(f"{path}/events", headers=other),
        await client.get(f"{path}/attempts", headers=other),
        await client.delete(path, headers=other),
    ]
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert answers[0].json()["title"] == "Webhook subscription not found"
    assert (await client.get(WEBHOOKS, headers=other)).json() == []
    # Still there for its owner.
    assert (await client.get(path, headers=auth(OTHER_ORG))).status_code == 200


@pytest.mark.parametrize("bad", ["not-an-id", "x" * 300, "%00"])
async def test_an_id_that_is_no_uuid_is_not_found(client: httpx.AsyncClient, auth: Auth, bad: str) -> None:
    assert (await client.get(f"{WEBHOOKS}/{bad}", headers=auth())).status_code == 404
    assert (await client.delete(f"{WEBHOOKS}/{bad}", headers=auth())).status_code == 404


async def test_change_replace_rotate_and_delete(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver, varsel: Varsel
) -> None:
    made = (await _create(client, auth, receiver.url)).json()
    path = f"{WEBHOOKS}/{made['id']}"
    disabled = await client.patch(path, json={"enabled": False}, headers=auth())
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabledReason"] == "Disabled by the service owner."
    enabled = (await client.patch(path, json={"enabled": True}, headers=auth())).json()
    assert enabled["enabled"] is True
    assert "disabledAt" not in enabled
    assert "disabledReason" not in enabled
    changed = await client.patch(path, json={"events": ["order.cancelled"]}, headers=auth())
    assert changed.json()["events"] == ["order.cancelled"]
    assert changed.json()["url"] == receiver.url
    bad = await client.patch(path, json={"url": "http://hooks.example.com/"}, headers=auth())
    assert bad.status_code == 400
    assert list(bad.json()["errors"]) == ["Url"]
    replaced = await client.put(path, json={"url": receiver.url + "/v2", "events": KINDS}, headers=auth())
    assert replaced.status_code == 200
    assert replaced.json()["url"] == receiver.url + "/v2"
    assert replaced.json()["events"] == sorted(KINDS)
    assert (await client.put(path, json={"events": KINDS}, headers=auth())).status_code == 400

    rotated = await client.post(f"{path}/rotate-secret", headers=auth())
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != made["secret"]
    assert rotated.json()["previousSecretExpires"] == "2026-03-03T10:00:00Z"  # the test clock's now + 24 h

    assert (await client.delete(path, headers=auth())).status_code == 204
    assert (await client.get(path, headers=auth())).status_code == 404
    assert (await client.delete(path, headers=auth())).status_code == 404


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({}, {"$": ["Give exactly one of since and fromSequenceNumber."]}),
        ({"since": "2026-03-01T00:00:00Z", "fromSequenceNumber": 3}, {"$": ["Give exactly one of since and "
                                                                            "fromSequenceNumber."]}),
        ({"since": "2026-03-01T00:00:00"}, {"Since": ["The time must have a UTC offset (Z or +01:00, say)."]}),
        # No UTC time is that early or that late: a 400, not an overflow where the database layer converts it.
        ({"since": "0001-01-01T00:00:00+01:00"}, {"Since": ["The time is out of range in UTC."]}),
        ({"since": "9999-12-31T23:59:59-01:00"}, {"Since": ["The time is out of range in UTC."]}),
        ({"fromSequenceNumber": -1}, {"FromSequenceNumber": ["Input should be greater than or equal to 0."]}),
    ],
)  # fmt: skip
async def test_a_replay_needs_one_starting_point(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver, body: dict[str, Any], errors: dict[str, Any]
) -> None:
    made = (await _create(client, auth, receiver.url)).json()
    refused = await client.post(f"{WEBHOOKS}/{made['id']}/replay", json=body, headers=auth())
    assert refused.status_code == 400
    assert refused.json()["errors"] == errors


async def test_a_service_owner_has_at_most_so_many_subscriptions(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver, varsel: Varsel
) -> None:
    limit = varsel.settings.webhooks.max_subscriptions_per_owner
    for _ in range(limit):
        assert (await _create(client, auth, receiver.url)).status_code == 201
    refused = await _create(client, auth, receiver.url)
    assert refused.status_code == 409
    assert refused.json()["title"] == "Too many webhook subscriptions"
    # Another owner's count is its own; after a deletion there is room again.
    assert (await _create(client, auth, receiver.url, org=OTHER_ORG)).status_code == 201
    first = (await client.get(WEBHOOKS, headers=auth())).json()[0]["id"]
    assert (await client.delete(f"{WEBHOOKS}/{first}", headers=auth())).status_code == 204
    assert (await _create(client, auth, receiver.url)).status_code == 201
