"""The operator commands: a refusal to start with a provider half configured, a notification's history, and dead
delivery reports listed and retried. Run as a user runs them, against a SQLite data folder."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from varsel.app import build
from varsel.cli import cli
from varsel.clock import FrozenClock, SystemClock
from varsel.db.engine import Database
from varsel.db.migrate import migrate
from varsel.notifications.statuses import SmsStatus
from varsel.orders.drafts import EmailTemplateSpec, OrderDraft, RecipientSpec
from varsel.orders.vocabulary import EmailContentType, NotificationChannel
from varsel.providers.base import DeliveryReport
from varsel.recipients.lookup import Medium
from varsel.settings import Settings

VARSEL = str(Path(sys.executable).parent / "varsel")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("VARSEL_DATA_DIR", str(folder))
    monkeypatch.delenv("VARSEL_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich fits its tables to the terminal: make it wide
    return folder


def test_serve_refuses_to_start_with_a_provider_half_configured(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VARSEL_DATA_DIR": str(tmp_path / "data"),
        "VARSEL_SMS__PROVIDER": "linkmobility",
        "VARSEL_SMS__LINKMOBILITY__USERNAME": "varsel",
    }
    env.pop("VARSEL_DATABASE_URL", None)
    done = subprocess.run([VARSEL, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "cannot start" in message
    assert "VARSEL_SMS__LINKMOBILITY__PASSWORD" in message
    assert "VARSEL_SMS__LINKMOBILITY__PLATFORM_ID" in message
    assert "VARSEL_SMS__LINKMOBILITY__USERNAME" not in message  # that one is set


async def _sent_notification(settings: Settings) -> str:
    """An email order sent through the outbox; answers the notification's id."""
    database = Database(settings.resolved_database_url())
    await migrate(database)
    varsel = build(settings, clock=SystemClock(), database=database)
    draft = OrderDraft(
        channel=NotificationChannel.EMAIL,
        requested_send_time=datetime.now(UTC),
        senders_reference=None,
        condition_endpoint=None,
        ignore_reservation=None,
        resource_id=None,
        resource_action=None,
        recipients=(RecipientSpec(email_address="ola@example.com"),),
        email_template=EmailTemplateSpec("noreply@example.com", "Hei", "Hallo", EmailContentType.PLAIN),
        sms_template=None,
    )
    order_id, _ = await varsel.orders.register("ttd", draft)
    await varsel.workers.drain()
    _, rows = await varsel.orders.notifications("ttd", order_id, Medium.EMAIL)
    await varsel.close()
    return str(rows[0].id)


def test_history_shows_each_hand_over_to_the_provider(data_dir: Path) -> None:
    notification_id = asyncio.run(_sent_notification(Settings()))
    result = CliRunner().invoke(cli, ["notifications", "history", notification_id], terminal_width=200)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "outbox" in line)
    assert "accepted" in row
    assert "Succeeded" in row

    unknown = CliRunner().invoke(cli, ["notifications", "history", "01900000-0000-7000-8000-000000000000"])
    assert unknown.exit_code == 1
    assert "nothing recorded" in unknown.output


async def _dead_report(settings: Settings) -> None:
    """A report for an id nobody knows, received an hour ago and retried until its window closed."""
    database = Database(settings.resolved_database_url())
    await migrate(database)
    clock = FrozenClock(datetime.now(UTC) - timedelta(hours=1))
    varsel = build(settings, clock=clock, database=database)
    report = DeliveryReport("no-such-notification", SmsStatus.DELIVERED, provider_reference="gw-1")
    assert [s.value for s in await varsel.reports.receive("sms", "linkmobility", [report])] == ["pending"]
    clock.advance(timedelta(minutes=settings.reports.retry_window_minutes, seconds=1))
    assert await varsel.reports.run_once() == 1
    await varsel.close()


def test_dead_reports_are_listed_and_retried(data_dir: Path) -> None:
    asyncio.run(_dead_report(Settings()))
    listed = CliRunner().invoke(cli, ["reports", "dead"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "no-such-notification" in listed.output
    assert "gw-1" in listed.output
    assert "1 dead reports" in listed.output

    refused = CliRunner().invoke(cli, ["reports", "retry"])
    assert refused.exit_code == 2

    retried = CliRunner().invoke(cli, ["reports", "retry", "--all"])
    assert retried.exit_code == 0, retried.output
    assert "1 reports pending again" in retried.output
    # Tried at once, still unmatched, but pending for another window rather than dead.
    assert "0 dead reports" in CliRunner().invoke(cli, ["reports", "dead"]).output
