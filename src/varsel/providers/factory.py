"""Builds the email and SMS providers the settings choose."""

from __future__ import annotations

from varsel.clock import Clock
from varsel.providers.acs import AcsEmailProvider
from varsel.providers.base import EmailProvider, SmsProvider
from varsel.providers.linkmobility import LinkMobilitySmsProvider
from varsel.providers.outbox import OutboxEmailProvider, OutboxSmsProvider
from varsel.providers.smtp import SmtpEmailProvider
from varsel.settings import Settings


class ProviderNotConfigured(ValueError):
    """A chosen provider lacks settings it needs: varsel refuses to start rather than fail every message."""


def check_providers(settings: Settings) -> None:
    missing = settings.provider_problems()
    if missing:
        raise ProviderNotConfigured(
            f"email provider {settings.email.provider!r} / SMS provider {settings.sms.provider!r} need: "
            + ", ".join(missing)
        )


def email_provider(settings: Settings, clock: Clock) -> EmailProvider:
    chosen = settings.email.provider
    if chosen == "smtp":
        return SmtpEmailProvider(settings.email.smtp)
    if chosen == "acs":
        # As many connections as the guard lets calls through: no call waits for a connection inside its timeout.
        return AcsEmailProvider(settings.email.acs, clock, connections=settings.email.guard.max_concurrency)
    return OutboxEmailProvider(settings.data_dir / "outbox")


def sms_provider(settings: Settings, clock: Clock) -> SmsProvider:
    if settings.sms.provider == "linkmobility":
        return LinkMobilitySmsProvider(settings.sms.linkmobility, clock, connections=settings.sms.guard.max_concurrency)
    return OutboxSmsProvider(settings.data_dir / "outbox")
