"""Configuration: every setting is an environment variable with the VARSEL_ prefix.

Nested areas use a double underscore, e.g. ``VARSEL_AUTH__ISSUERS`` or ``VARSEL_LIMITS__MAX_RECIPIENTS``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from varsel.console.config import ConsoleSettings
from varsel.dispatch.window import DaytimeWindow
from varsel.providers.acs import AcsSettings
from varsel.providers.guard import GuardSettings
from varsel.providers.linkmobility import LinkMobilitySettings
from varsel.providers.smtp import SmtpSettings


class TrustedIssuer(BaseModel):
    """An issuer of bearer tokens (e.g. Maskinporten) and where its signing keys are found."""

    issuer: str
    jwks_url: str | None = None
    public_key_pem: str | None = None
    audience: str | None = None


class AuthSettings(BaseModel):
    # JSON list of {"issuer", "jwks_url" | "public_key_pem", "audience"?}. When empty, varsel trusts its own
    # development signing key (created in the data folder), which `varsel token` signs with.
    issuers: list[TrustedIssuer] = Field(default_factory=list)
    # Keys that sign PlatformAccessToken headers (Altinn apps); the token's issuer is the creating org.
    platform_public_key_pem: str | None = None
    platform_jwks_url: str | None = None
    # Tolerated clock difference between varsel and token issuers, in seconds.
    leeway_seconds: int = 30
    jwks_cache_seconds: int = 3600
    create_scope: str = "altinn:serviceowner/notifications.create"
    # The preview shows registry contact details without sending anything: a scope of its own, not every sender's.
    preview_scope: str = "varsel:notifications.preview"
    # Writing the registries redirects where people's notifications go: a scope of its own, too.
    registry_scope: str = "varsel:registry.write"
    # Composed email (attachments fetched from the caller's storage) has a scope of its own, as in the reference; the
    # create scope does not grant it, and a platform access token is no alternative.
    composed_email_scope: str = "altinn:serviceowner/notifications.composedemail.create"
    # The support dashboard (reference 6) reads every service owner's notifications to a person: a scope of its own.
    support_scope: str = "altinn:notifications.support.admin"
    org_claim: str = "urn:altinn:org"


class OrderDefaults(BaseModel):
    email_from_address: str = "noreply@varsel.local"
    sms_sender: str = "Varsel"


class Limits(BaseModel):
    """Upper bounds on what one request may carry; each refusal names the field and the limit."""

    max_body_bytes: int = 2 * 1024 * 1024
    max_recipients: int = 10_000
    max_subject_chars: int = 500
    max_email_body_chars: int = 500_000
    max_sms_body_chars: int = 2_000
    max_senders_reference_chars: int = 200
    max_resource_id_chars: int = 255
    max_url_chars: int = 2_000
    max_orders_listed: int = 1_000


class ConditionSettings(BaseModel):
    # Hosts a condition endpoint may name even though they are IP literals, single-label names or local:
    # for operators whose condition services live on internal names, and for tests on loopback.
    allowed_hosts: list[str] = Field(default_factory=list)


class AttachmentSettings(BaseModel):
    # Hosts a composed email's attachment URLs may name besides Azure Blob Storage (*.blob.core.windows.net, always
    # allowed, as in the reference): names, or "*." suffixes. A name listed exactly is trusted even where it resolves
    # to an internal address (an object store inside the operator's network, a test's loopback peer); a host matched
    # only by a suffix must resolve to public addresses, as every condition endpoint must.
    allowed_hosts: list[str] = Field(default_factory=list)
    # What one email's attachments may weigh together; reading stops as soon as it is passed. 10 MB is what ACS takes.
    max_bytes_per_email: int = Field(default=10 * 1024 * 1024, ge=1)
    # How long fetching one email's attachments may take in all; at most half the senders' lease
    # (dispatch.lease_seconds), so that no other worker takes the email over while it is fetched.
    timeout_seconds: float = Field(default=60.0, gt=0)
    # How many emails with attachments one process holds at once (fetched, encoded, being handed over): each may
    # weigh max_bytes_per_email, and more in a provider's encoding (base64 in ACS's JSON), so a sender's full
    # concurrency of them (50) could hold gigabytes. Emails without attachments are not counted.
    max_concurrent_emails: int = Field(default=8, ge=1)


WorkKind = Literal["orders", "email", "sms", "expiry", "reports", "webhooks"]
ALL_WORK_KINDS: tuple[WorkKind, ...] = ("orders", "email", "sms", "expiry", "reports", "webhooks")


class WebhookSettings(BaseModel):
    """Status webhooks (docs/webhooks.md): where service owners' endpoints may be, and how events are delivered."""

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts a webhook URL may name although they are not public, and the only hosts plain http is accepted "
            "for: exact names, or '*.' suffixes. A name listed exactly may be any host (an internal name, an IP "
            "literal, loopback for tests) and is delivered to without the public-address check; a host matched only "
            "by a suffix may use plain http, but must still be a public DNS name resolving to public addresses. "
            "Taking a host off the list refuses plain http to it from the next delivery on."
        ),
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long one delivery (DNS, connect, request, answer) may take."
    )
    failure_period_hours: float = Field(
        default=72.0,
        gt=0,
        description=(
            "An endpoint that has failed every attempt for this long (since its first failure after a success) is "
            "disabled; its events wait until the owner enables it again."
        ),
    )
    retention_days: float = Field(
        default=7.0, gt=0, description="Delivered events (and their attempts) older than this are purged."
    )
    max_concurrent_endpoints: int = Field(
        default=50, ge=1, description="Endpoints one worker process delivers to at once (each one event at a time)."
    )
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How long a worker holds an endpoint before another may take it over (renewed before every attempt; "
            "must exceed timeout_seconds)."
        ),
    )
    secret_grace_hours: float = Field(
        default=24.0, ge=0, description="After a secret rotation, how long the previous secret still signs."
    )
    max_subscriptions_per_owner: int = Field(
        default=10,
        ge=1,
        description=(
            "Webhook subscriptions one service owner may have: each status change writes an event for each of its "
            "subscriptions, in the transaction that makes the change."
        ),
    )


class DispatchSettings(BaseModel):
    """How the workers take and hand on work."""

    # Work claimed at once, and how long a claim holds before another worker may take the work over.
    order_batch_size: int = 100
    notification_batch_size: int = 500
    lease_seconds: int = 120
    # Workers are woken when work is committed; this is the longest they sleep when nobody wakes them.
    poll_seconds: float = 2.0
    # Notifications not confirmed delivered this long after their send time fail with Failed_TTL.
    expiry_hours: int = 48
    # Backoff for transient provider errors: first delay, doubled per attempt up to the maximum.
    retry_first_seconds: float = 5.0
    retry_max_seconds: float = 900.0
    # A send that raises an exception no provider adapter expects (a bug, or a message the adapter cannot handle)
    # is the message's own failure: tried this many times in all, with the same backoff, then the notification
    # fails with the exception as its reason (never counted against the provider).
    unexpected_error_attempts: int = Field(default=3, ge=1)
    # Send conditions: timeout of the check, delay before the one retry of a failed check, and what to do when
    # the retry fails too: "send" (as the reference does) or "skip" (the order ends SendConditionNotMet).
    condition_timeout_seconds: float = 10.0
    condition_retry_seconds: float = 60.0
    condition_failure_policy: Literal["send", "skip"] = "send"
    # On SIGTERM, how long rounds under way may take to finish before they are cut off (what a cut-off sender
    # has not handed over is released at once; what it had in flight is retried when its lease runs out).
    shutdown_grace_seconds: float = 20.0
    # The kinds of work this process's workers do (`varsel worker`, `varsel serve`): all by default; a deployment
    # may, say, run SMS senders apart from the rest.
    kinds: list[WorkKind] = Field(default_factory=lambda: list(ALL_WORK_KINDS))
    # When Daytime SMS may go out (every v1 order is Daytime): 09:00-17:00 Europe/Oslo, as the reference. OPENS and
    # CLOSES both 00:00 send at any hour.
    sms_daytime: DaytimeWindow = Field(default_factory=DaytimeWindow)
    # v2 status feed entries older than this are deleted by the expiry worker, in small batches (the reference: 90).
    feed_retention_days: int = Field(default=90, ge=1)


class EmailSettings(BaseModel):
    # Where email goes: "outbox" (files in the data folder: development), "smtp" (a relay) or "acs" (Azure
    # Communication Services). Each has its own settings below, e.g. VARSEL_EMAIL__SMTP__HOST.
    provider: Literal["outbox", "smtp", "acs"] = "outbox"
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    acs: AcsSettings = Field(default_factory=AcsSettings)
    # Calls under way at once (per process), a rate limit, and when to stop calling a failing provider for a while.
    guard: GuardSettings = Field(default_factory=GuardSettings)


class SmsSettings(BaseModel):
    # Where SMS goes: "outbox" (a JSON-lines file in the data folder: development) or "linkmobility".
    provider: Literal["outbox", "linkmobility"] = "outbox"
    linkmobility: LinkMobilitySettings = Field(default_factory=LinkMobilitySettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)


class ReportSettings(BaseModel):
    """Delivery reports that match no notification yet are retried this often, for this long, then kept dead."""

    retry_seconds: float = 5.0
    retry_window_minutes: float = 10.0
    # A provider's report request larger than this is refused (413) before it is read whole.
    max_body_bytes: int = 1024 * 1024
    # And one carrying more reports than this (413 too). LINK Mobility posts one report a request; Event Grid as
    # many as its subscription's "max events per batch" (1 by default, 5,000 at most), which must not exceed this.
    max_reports_per_request: int = Field(default=1_000, ge=1)


class MetricsSettings(BaseModel):
    """Usage metrics (reference 7): the daily Parquet exports need this key in X-API-Key; unset, they answer 401."""

    api_key: SecretStr | None = None
    # Named in the export's file name and X-Environment header, as Altinn's hosting environment (ASP.NET's default).
    environment: str = Field(default="Production", pattern=r"^[A-Za-z0-9_-]{1,40}$")


class UsageSettings(BaseModel):
    """The usage rollup under the monthly summary: how old a count of a day that can still change may be before it
    is counted again (the workers' refresh runs this often; a page asking counts what is older)."""

    fresh_seconds: float = Field(default=60.0, gt=0)


_HOST_ENTRY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _variable(prefix: str, item: str) -> str:
    # Adapters name a missing field, perhaps with why: "connection_string (no accesskey)".
    name, _, why = item.partition(" ")
    return f"{prefix}{name.upper()}" + (f" {why}" if why else "")


# The bounds of an order's fallbackAfterMinutes, and of the default window: at least a minute, at most the 48 hours a
# notification lives by default (a longer window would only ever end as the notification's Failed_TTL).
FALLBACK_WINDOW_MINUTES = (1, 2880)


class FallbackSettings(BaseModel):
    """Receipt-driven fallback for EmailPreferred / SmsPreferred orders (docs/pipeline.md)."""

    enabled: bool = Field(
        default=False,
        description=(
            "Send the other channel to the same recipient (if the registry has that address, once) when an "
            "EmailPreferred or SmsPreferred order's notification fails without reaching the person (bounced, "
            "suppressed, undelivered, barred, invalid recipient, expired, TTL) or has no delivery report within "
            "the window. Off: only orders that ask with fallbackAfterMinutes fall back; Altinn's behaviour otherwise."
        ),
    )
    window_minutes: int = Field(
        default=60,
        ge=FALLBACK_WINDOW_MINUTES[0],
        description=(
            "How long after the first notification was handed to the provider a delivery report may take before "
            "the other channel is sent, for orders that give no fallbackAfterMinutes (a window past the "
            "notification's expiry ends as its Failed_TTL, which falls back too)."
        ),
    )
    batch_size: int = Field(default=50, ge=1, description="Fallbacks one worker round looks up and sends at most.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VARSEL_", env_nested_delimiter="__", extra="ignore", case_sensitive=False
    )

    data_dir: Path = Path("var")
    # postgresql+asyncpg://… or sqlite+aiosqlite:///…; empty means SQLite in the data folder.
    database_url: SecretStr | None = None
    # Base of the absolute links in responses (e.g. https://varsel.example.org); empty: taken from the request's
    # Host header, which only trusted_hosts lets through. Production sets it.
    public_url: str | None = None
    # The Host header values the API answers to, comma-separated or a JSON list: names ("varsel.example.org"),
    # wildcards ("*.example.org"), or "*" for any. Unset: any host when public_url is set (links never follow the
    # Host header then), else the loopback names. Another Host gets a 400 problem, so nobody can make varsel write
    # links (Location, links) to a host of their choice.
    trusted_hosts: Annotated[list[str] | None, NoDecode] = None
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    access_log: bool = Field(
        default=False,
        description=(
            "Log one line per HTTP request on the varsel.access logger, at info: method, path (without its query "
            "string, which can carry secrets), status and latency, in logfmt."
        ),
    )

    auth: AuthSettings = Field(default_factory=AuthSettings)
    defaults: OrderDefaults = Field(default_factory=OrderDefaults)
    limits: Limits = Field(default_factory=Limits)
    conditions: ConditionSettings = Field(default_factory=ConditionSettings)
    attachments: AttachmentSettings = Field(default_factory=AttachmentSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    sms: SmsSettings = Field(default_factory=SmsSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)
    # The web console: session key and lifetime, sign-in links, OpenID Connect (VARSEL_CONSOLE__OIDC__ISSUER …).
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    # Status webhooks: VARSEL_WEBHOOKS__ALLOWED_HOSTS, VARSEL_WEBHOOKS__TIMEOUT_SECONDS, …
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    # Receipt-driven fallback: VARSEL_FALLBACK__ENABLED, VARSEL_FALLBACK__WINDOW_MINUTES.
    fallback: FallbackSettings = Field(default_factory=FallbackSettings)

    @field_validator("trusted_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("trusted_hosts", mode="after")
    @classmethod
    def _host_names_only(cls, value: list[str] | None) -> list[str] | None:
        # An entry with a port or a scheme ("varsel.example.no:8443", "https://…") would never match a Host name,
        # and the mistake would show only as every request refused: say so at start instead.
        for entry in value or []:
            name = entry.strip().removeprefix("*.")
            if entry.strip() != "*" and not _HOST_ENTRY.fullmatch(name) and not _is_ipv6(name.strip("[]")):
                raise ValueError(
                    f"trusted_hosts: {entry!r} is not a host name, '*.domain' or '*' (no scheme, port or path)"
                )
        return value

    def answered_hosts(self) -> list[str]:
        """The Host names the API answers to: trusted_hosts when set; otherwise any host once a public URL is set
        (links then never follow the Host header), else only the loopback names (development)."""
        if self.trusted_hosts is not None:
            return list(self.trusted_hosts)
        if self.public_url:
            return ["*"]
        return ["localhost", "127.0.0.1", "::1"]

    def provider_problems(self) -> list[str]:
        """What keeps the chosen providers from working, as environment variables to set; empty when nothing."""
        missing: list[str] = []
        if self.email.provider == "acs":
            missing += [_variable("VARSEL_EMAIL__ACS__", item) for item in self.email.acs.missing()]
        if self.sms.provider == "linkmobility":
            missing += [_variable("VARSEL_SMS__LINKMOBILITY__", item) for item in self.sms.linkmobility.missing()]
        return missing

    def resolved_database_url(self) -> str:
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{(self.data_dir / 'varsel.db').resolve()}"

    @property
    def dev_key_path(self) -> Path:
        return self.data_dir / "dev-signing-key.pem"
