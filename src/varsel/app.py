"""The composition root: builds the database, the auth, the services and the FastAPI app from settings."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from sqlalchemy.exc import DBAPIError

from varsel import __version__, operations
from varsel.access_log import AccessLogMiddleware
from varsel.api import metrics as metrics_endpoints
from varsel.api.docs import mount_docs
from varsel.api.v1 import endpoints as endpoints_v1
from varsel.api.v1 import webhooks as webhook_endpoints
from varsel.api.v1.models import (
    EmailNotificationOrderRequest,
    NotificationOrderRequest,
    SmsNotificationOrderRequest,
)
from varsel.api.v1.validation import OrderValidator
from varsel.api.v2 import composed as composed_endpoints
from varsel.api.v2 import dashboard as dashboard_endpoints
from varsel.api.v2 import endpoints as v2_endpoints
from varsel.api.v2 import instant as instant_endpoints
from varsel.api.v2 import shipments as shipment_endpoints
from varsel.api.v2.composed_models import ComposedEmailRequestExt
from varsel.api.v2.instant_models import (
    InstantEmailNotificationOrderRequestExt,
    InstantNotificationOrderRequestExt,
    InstantSmsNotificationOrderRequestExt,
)
from varsel.api.v2.models import (
    AltinnProblemDetails,
    NotificationOrderChainRequestExt,
    NotificationOrderChainResponseExt,
)
from varsel.api.v2.validation import ChainValidator
from varsel.auth.dependencies import Authenticator
from varsel.auth.keys import DEV_ISSUER, JwksKeys, KeySource, StaticKeys, ensure_dev_key
from varsel.auth.tokens import TokenVerifier, TrustedIssuerKeys
from varsel.clock import Clock, SystemClock
from varsel.console.mount import mount_console
from varsel.db.engine import Database, database_unavailable
from varsel.dispatch.attachments import AttachmentFetcher
from varsel.dispatch.conditions import ConditionChecker
from varsel.dispatch.processor import OrderProcessor
from varsel.dispatch.runner import Workers
from varsel.dispatch.senders import ExpirySweeper, email_sender, sms_sender
from varsel.dispatch.wakeup import PostgresListener, Wakeups
from varsel.hostnames import dns_name
from varsel.http import BodyLimitMiddleware, RouteSpellingMiddleware, TrustedHostMiddleware, problem_responses
from varsel.observability import Telemetry
from varsel.orders.chains import ChainService
from varsel.orders.instant import InstantService
from varsel.orders.service import OrderService
from varsel.outbound import Resolver
from varsel.problems import (
    Problem,
    ProblemDetails,
    ValidationProblemDetails,
    install_problem_handlers,
    problem_response,
)
from varsel.providers import factory
from varsel.providers.base import EmailProvider, SmsProvider
from varsel.providers.guard import ProviderGuard
from varsel.recipients import endpoints as registry_endpoints
from varsel.recipients.endpoints import RegistryRecords
from varsel.recipients.imports import RegistryImporter
from varsel.recipients.lookup import RecipientLookup
from varsel.recipients.registry import ContactRegistry, LocalRegistry
from varsel.reports import endpoints as report_endpoints
from varsel.reports.service import DeliveryReports
from varsel.settings import Settings
from varsel.shipments.service import FeedRetention
from varsel.support.service import UsageService
from varsel.support.status_days import StatusDays
from varsel.webhooks.addresses import WebhookHosts
from varsel.webhooks.delivery import WebhookDelivery, WebhookRetention
from varsel.webhooks.service import WebhookSubscriptions
from varsel.webhooks.wakeup import wake_on_committed_events

log = logging.getLogger(__name__)


@dataclass
class Varsel:
    """Everything a running varsel needs, built once from settings."""

    settings: Settings
    clock: Clock
    database: Database
    http: httpx.AsyncClient
    authenticator: Authenticator
    validator: OrderValidator
    orders: OrderService
    registry_importer: RegistryImporter
    wakeups: Wakeups
    workers: Workers
    telemetry: Telemetry
    reports: DeliveryReports
    chains: ChainService
    chain_validator: ChainValidator
    instant: InstantService
    # The monthly usage summary and its rollup (the metrics API, the console's Usage page, the workers' refresh).
    usage: UsageService
    # The status rollup the console's Overview adds a period's whole days up from (the workers keep it fresh).
    status_days: StatusDays
    # Status webhooks: service owners' subscriptions (the v1 webhooks API, the console's Webhooks page).
    webhooks: WebhookSubscriptions

    async def close(self, grace_seconds: float = 0.0) -> None:
        await self.workers.stop(grace_seconds)
        await self.workers.email_provider.close()
        await self.workers.sms_provider.close()
        await self.http.aclose()
        await self.database.dispose()


def _require_https(url: str) -> str:
    # Keys fetched over plain HTTP could be swapped by anyone on the path, and with them every token forged.
    # Loopback is allowed: nothing crosses a network there (and tests serve their keys on it).
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")):
        return url
    raise ValueError(f"signing keys must be fetched over https, not {url!r}")


def _key_source(pem: str | None, jwks_url: str | None, http: httpx.AsyncClient, cache: int) -> KeySource | None:
    if pem:
        return StaticKeys.from_pem(pem)
    if jwks_url:
        return JwksKeys(_require_https(jwks_url), http, cache_seconds=cache)
    return None


def build_verifier(settings: Settings, http: httpx.AsyncClient) -> TokenVerifier:
    auth = settings.auth
    issuers: list[TrustedIssuerKeys] = []
    for issuer in auth.issuers:
        source = _key_source(issuer.public_key_pem, issuer.jwks_url, http, auth.jwks_cache_seconds)
        if source is None:
            raise ValueError(f"issuer {issuer.issuer!r} needs jwks_url or public_key_pem")
        issuers.append(TrustedIssuerKeys(issuer.issuer, source, issuer.audience))
    platform = _key_source(auth.platform_public_key_pem, auth.platform_jwks_url, http, auth.jwks_cache_seconds)
    if not issuers:
        # Development mode: nothing configured, so trust the key `varsel token` signs with.
        dev_key = StaticKeys([ensure_dev_key(settings.dev_key_path).public_key()])
        issuers.append(TrustedIssuerKeys(DEV_ISSUER, dev_key))
        platform = platform or dev_key
    return TokenVerifier(issuers, platform, auth.leeway_seconds)


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    email_provider: EmailProvider | None = None,
    sms_provider: SmsProvider | None = None,
    registry: ContactRegistry | None = None,
    attachments: AttachmentFetcher | None = None,
    webhook_resolver: Resolver | None = None,
) -> Varsel:
    clock = clock or SystemClock()
    database = database or Database(settings.resolved_database_url())
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
    auth = settings.auth
    # Read as condition hosts are (dns_name), so an entry written in Unicode matches the host it names.
    allowed_hosts = frozenset(dns_name(h) for h in settings.conditions.allowed_hosts)
    # The local copy of the contact registries unless another (a remote registry's client) is given.
    lookup = RecipientLookup(registry or LocalRegistry(database), clock)
    wakeups = Wakeups()
    telemetry = Telemetry()
    dispatch = settings.dispatch
    worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    if email_provider is None or sms_provider is None:
        factory.check_providers(settings)
    # Every provider, chosen or given, is called through a guard: concurrency, rate, 429 pauses, breaker.
    email_guard = ProviderGuard(email_provider or factory.email_provider(settings, clock), settings.email.guard, clock)
    sms_guard = ProviderGuard(sms_provider or factory.sms_provider(settings, clock), settings.sms.guard, clock)
    reports = DeliveryReports(
        database,
        clock,
        telemetry,
        settings.reports.retry_seconds,
        timedelta(minutes=settings.reports.retry_window_minutes),
    )
    conditions = ConditionChecker(http, dispatch.condition_timeout_seconds, allowed_hosts)
    # A composed email's attachments are fetched as it is sent (a test gives a fetcher trusting its loopback store).
    fetcher = attachments or AttachmentFetcher(settings.attachments, lease_seconds=dispatch.lease_seconds)
    listener = PostgresListener(database.url, wakeups) if database.dialect == "postgresql" else None
    usage = UsageService(
        database,
        clock,
        freshness=timedelta(seconds=settings.usage.fresh_seconds),
        # A day's notifications have all ended by their expiry; a day more for late ones and the sweep's pace.
        settle_after=timedelta(hours=dispatch.expiry_hours + 24),
    )
    status_days = StatusDays(
        database,
        clock,
        freshness=timedelta(seconds=settings.usage.fresh_seconds),
        settle_after=timedelta(hours=dispatch.expiry_hours + 24),
    )
    webhook_settings = settings.webhooks
    # The resolver is DNS, the outside world: a test gives one answering what it needs (an internal address, say).
    webhook_hosts = WebhookHosts(webhook_settings.allowed_hosts, webhook_resolver)
    wake_on_committed_events(database.engine, wakeups.webhooks.set)
    webhook_delivery = WebhookDelivery(
        database,
        clock,
        webhook_hosts,
        http,
        worker,
        timeout_seconds=webhook_settings.timeout_seconds,
        lease_seconds=webhook_settings.lease_seconds,
        failure_period=timedelta(hours=webhook_settings.failure_period_hours),
        max_concurrent_endpoints=webhook_settings.max_concurrent_endpoints,
        on_free=wakeups.webhooks.set,
        telemetry=telemetry,
    )
    workers = Workers(
        OrderProcessor(database, clock, lookup, conditions, dispatch, worker, wakeups, telemetry, settings.fallback),
        email_sender(database, clock, email_guard, dispatch, worker, telemetry, fetcher, reports),
        sms_sender(database, clock, sms_guard, dispatch, worker, telemetry, reports),
        ExpirySweeper(database, clock, telemetry),
        reports,
        wakeups,
        clock,
        dispatch.poll_seconds,
        email_guard,
        sms_guard,
        listener,
        FeedRetention(database, clock, dispatch.feed_retention_days),
        usage,
        status_days,
        webhook_delivery,
        WebhookRetention(database, clock, timedelta(days=webhook_settings.retention_days)),
    )
    orders = OrderService(
        database, clock, lookup, telemetry, on_registered=wakeups.orders.set, wake_within=dispatch.poll_seconds
    )
    # Instant orders are sent by the API process itself, through the same guards, under a claimer name of their own.
    instant_holder = f"{worker}:instant"
    instant = InstantService(
        database,
        clock,
        email_sender(database, clock, email_guard, dispatch, instant_holder, telemetry, fetcher, reports),
        sms_sender(database, clock, sms_guard, dispatch, instant_holder, telemetry, reports),
        telemetry,
        holder=instant_holder,
        lease_seconds=dispatch.lease_seconds,
        email_expiry=timedelta(hours=dispatch.expiry_hours),
    )
    return Varsel(
        settings=settings,
        clock=clock,
        database=database,
        http=http,
        authenticator=Authenticator(
            build_verifier(settings, http), auth.create_scope, auth.org_claim, auth.registry_scope
        ),
        validator=OrderValidator(clock, settings.limits, settings.defaults, allowed_hosts),
        orders=orders,
        registry_importer=RegistryImporter(database, clock),
        wakeups=wakeups,
        workers=workers,
        telemetry=telemetry,
        reports=reports,
        chains=ChainService(
            database,
            clock,
            orders.look_up,
            telemetry,
            on_registered=wakeups.orders.set,
            wake_within=dispatch.poll_seconds,
        ),
        chain_validator=ChainValidator(clock, settings.limits, settings.defaults, allowed_hosts),
        instant=instant,
        usage=usage,
        status_days=status_days,
        webhooks=WebhookSubscriptions(
            database,
            clock,
            webhook_hosts,
            timedelta(hours=webhook_settings.secret_grace_hours),
            wake=wakeups.webhooks.set,
            max_per_owner=webhook_settings.max_subscriptions_per_owner,
        ),
    )


_DOCUMENTED_MODELS: list[type[BaseModel]] = [
    NotificationOrderRequest,
    EmailNotificationOrderRequest,
    SmsNotificationOrderRequest,
    NotificationOrderChainRequestExt,
    NotificationOrderChainResponseExt,
    ComposedEmailRequestExt,
    InstantSmsNotificationOrderRequestExt,
    InstantEmailNotificationOrderRequestExt,
    InstantNotificationOrderRequestExt,
    AltinnProblemDetails,
    RegistryRecords,
    ProblemDetails,
    ValidationProblemDetails,
]


_VALIDATION: JsonSchemaMode = "validation"


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title="varsel",
        version=__version__,
        description=(
            "Email and SMS notifications for service owners, wire-compatible with the Altinn Notifications API. "
            "Authenticate with a bearer token carrying the scope altinn:serviceowner/notifications.create and an "
            "urn:altinn:org claim, or with a PlatformAccessToken header. Errors are RFC 9457 problem documents."
        ),
        routes=app.routes,
    )
    _, definitions = models_json_schema(
        [(model, _VALIDATION) for model in _DOCUMENTED_MODELS], ref_template="#/components/schemas/{model}"
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in definitions.get("$defs", {}).items():
        components.setdefault(name, definition)
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "platformAccessToken": {"type": "apiKey", "in": "header", "name": "PlatformAccessToken"},
    }
    schema["security"] = [{"bearer": []}, {"platformAccessToken": []}]
    _document_parameter_problems(schema)
    app.openapi_schema = schema
    return schema


# FastAPI's own answer to a path, query or header parameter that does not validate, which it documents on every
# operation with parameters. varsel never gives it: install_problem_handlers answers those with a 400 problem.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_NOT_A_CONSTRAINT = frozenset({"title", "description", "default", "examples", "example", "deprecated"})


def _takes_any_value(parameter: dict[str, Any]) -> bool:
    """Whether FastAPI accepts every value the parameter can arrive with: a path parameter (present whenever its
    route matched) or an optional one, typed as a string with no constraints."""
    if parameter.get("required") and parameter.get("in") != "path":
        return False  # absent, it fails
    schema = {key: value for key, value in parameter.get("schema", {}).items() if key not in _NOT_A_CONSTRAINT}
    string, null = {"type": "string"}, {"type": "null"}
    return schema == string or (
        set(schema) == {"anyOf"} and sorted(schema["anyOf"], key=str) == sorted([string, null], key=str)
    )


def _document_parameter_problems(schema: dict[str, Any]) -> None:
    """Say what varsel answers when a parameter does not validate: a 400 problem (ValidationProblemDetails), where
    a parameter can fail, instead of FastAPI's 422, which no route answers."""
    bad_request = problem_responses(400)[400]
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses: dict[str, Any] = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", "")):
                del responses["422"]  # FastAPI's, not one a route documents because it answers it
            if not all(_takes_any_value(parameter) for parameter in operation.get("parameters", [])):
                responses.setdefault("400", bad_request)
            operation["responses"] = dict(sorted(responses.items()))
    components = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:  # HTTPValidationError first: it is what refers to ValidationError
        definition = components.pop(name, None)
        if definition is not None and f'"#/components/schemas/{name}"' in json.dumps(schema):
            components[name] = definition  # a route documents it itself: keep it


async def _database_error(request: Request, exc: Exception) -> Response:
    if not database_unavailable(exc):
        # A real bug (e.g. a statement the database refuses): a 500 that says so, not an outage to retry for ever.
        log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(
            request, Problem(500, detail="An unexpected error occurred. Quote the traceId when reporting it.")
        )
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request,
        Problem(
            503, "Service Unavailable", "The database is unavailable; try again shortly.", headers={"Retry-After": "5"}
        ),
    )


def _serve_problems(app: FastAPI, varsel: Varsel) -> None:
    """What every varsel app shares: its services, and RFC 9457 answers for every error, outages included."""
    app.state.varsel = varsel
    install_problem_handlers(app)
    for database_error in (DBAPIError, OSError):
        app.add_exception_handler(database_error, _database_error)


def create_app(varsel: Varsel, *, run_workers: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            varsel.database.start_wal_checkpoints()
            if run_workers:
                varsel.workers.start(varsel.settings.dispatch.kinds)
            yield
        finally:
            await varsel.close(varsel.settings.dispatch.shutdown_grace_seconds)

    # /docs and /redoc are varsel's own (mount_docs): FastAPI's load their scripts from a CDN.
    app = FastAPI(title="varsel", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    _serve_problems(app, varsel)
    mount_docs(app)
    app.include_router(endpoints_v1.router)
    app.include_router(shipment_endpoints.router)
    app.include_router(v2_endpoints.router)
    app.include_router(instant_endpoints.router)
    app.include_router(composed_endpoints.router)
    app.include_router(dashboard_endpoints.router)
    app.include_router(metrics_endpoints.router)
    app.include_router(registry_endpoints.router)
    app.include_router(operations.router)
    app.include_router(report_endpoints.router)
    app.include_router(webhook_endpoints.router)
    # The web console (/console): HTML pages, kept out of the OpenAPI document.
    mount_console(app, varsel)
    app.add_middleware(BodyLimitMiddleware, max_bytes=varsel.settings.limits.max_body_bytes)
    app.add_middleware(RouteSpellingMiddleware)
    # Added last, so it runs first: a request for another host is answered before anything else reads it.
    app.add_middleware(TrustedHostMiddleware, hosts=varsel.settings.answered_hosts())
    if varsel.settings.access_log:
        # Outside even that, so that its refusals are logged too.
        app.add_middleware(AccessLogMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def create_operations_app(varsel: Varsel) -> FastAPI:
    """Metrics and health only: what a worker process serves (it takes no orders)."""
    app = FastAPI(title="varsel worker", version=__version__, openapi_url=None, docs_url=None, redoc_url=None)
    _serve_problems(app, varsel)
    app.include_router(operations.router)
    return app
