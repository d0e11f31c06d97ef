"""The command line's errors that say what to do (#20, items 5 and 6): a port in use, a file the registry import
cannot read, an order's id given to `notifications history`, a token of no lifetime; and tables that keep their
columns when piped. Run as a user runs them (the `varsel` script) where the exit and the output are the point."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from varsel.app import build
from varsel.cli import cli
from varsel.clock import SystemClock
from varsel.db.engine import Database
from varsel.db.migrate import migrate
from varsel.orders.drafts import EmailTemplateSpec, OrderDraft, RecipientSpec
from varsel.orders.vocabulary import EmailContentType, NotificationChannel
from varsel.settings import Settings

VARSEL = str(Path(sys.executable).parent / "varsel")
SAMPLE_REGISTRY = Path(__file__).parent.parent / "samples" / "registry.jsonl"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = {**os.environ, "VARSEL_DATA_DIR": str(tmp_path / "data")}
    for name in ("VARSEL_DATABASE_URL", "VARSEL_PORT", "VARSEL_HOST", "COLUMNS"):
        environment.pop(name, None)
    return environment


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize("command", ["serve", "api"])
@pytest.mark.parametrize("how", ["option", "setting"])
def test_a_port_in_use_ends_with_one_line_saying_how_to_choose_another(
    env: dict[str, str], taken_port: int, command: str, how: str
) -> None:
    if how == "setting":
        env["VARSEL_PORT"] = str(taken_port)
        arguments = [VARSEL, command]
    else:
        arguments = [VARSEL, command, "--port", str(taken_port)]
    done = subprocess.run(arguments, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    [line] = _lines(done)  # one line: no traceback, no start-up lines before it
    assert f"127.0.0.1:{taken_port} is already in use" in line
    assert f"VARSEL_PORT={taken_port + 1}" in line
    assert f"--port {taken_port + 1}" in line


def test_registry_import_of_a_missing_file_is_one_line_and_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file.jsonl"
    done = subprocess.run(
        [VARSEL, "registry", "import", str(SAMPLE_REGISTRY), str(missing)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    [line] = _lines(done)
    assert line == f"varsel registry import: cannot read {missing}: No such file or directory"
    # Nothing was imported: not even the readable file named before it (no database was made).
    assert not (tmp_path / "data" / "varsel.db").exists()


def test_registry_import_of_an_unreadable_file_is_one_line_and_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    done = subprocess.run([VARSEL, "registry", "import", str(folder)], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    [line] = _lines(done)
    assert line == f"varsel registry import: cannot read {folder}: Is a directory"


@pytest.mark.parametrize("minutes", ["0", "-5"])
def test_a_token_of_no_lifetime_is_refused(env: dict[str, str], minutes: str) -> None:
    done = subprocess.run(
        [VARSEL, "token", "--org", "ttd", "--minutes", minutes], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stdout == ""  # no token printed
    said = " ".join(done.stderr.replace("│", " ").split())
    assert "--minutes" in said
    assert "greater than or equal to 1" in said


def test_the_token_help_says_the_default_lifetime(env: dict[str, str]) -> None:
    done = subprocess.run(
        [VARSEL, "token", "--help"], env={**env, "COLUMNS": "200"}, capture_output=True, text=True, check=True
    )
    assert "an hour unless given" in done.stdout
    assert "default: 60" in done.stdout


# ---------------------------------------------------------------- notifications history, given an order's id


async def _order_with_notifications(settings: Settings) -> tuple[str, list[str]]:
    """An email order to two addresses, sent through the outbox: its id and its notifications' ids."""
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
        recipients=(RecipientSpec(email_address="ola@example.com"), RecipientSpec(email_address="kari@example.com")),
        email_template=EmailTemplateSpec("noreply@example.com", "Hei", "Hallo", EmailContentType.PLAIN),
        sms_template=None,
    )
    from varsel.recipients.lookup import Medium

    order_id, _ = await varsel.orders.register("ttd", draft)
    await varsel.workers.drain()
    _, rows = await varsel.orders.notifications("ttd", order_id, Medium.EMAIL)
    await varsel.close()
    return str(order_id), [str(row.id) for row in rows]


def test_history_given_an_order_id_says_so_and_lists_its_notifications(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VARSEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("VARSEL_DATABASE_URL", raising=False)
    order_id, notification_ids = asyncio.run(_order_with_notifications(Settings()))
    assert len(notification_ids) == 2

    result = CliRunner().invoke(cli, ["notifications", "history", order_id])
    assert result.exit_code == 1, result.output
    assert f"{order_id} is an order, not a notification" in result.output
    for notification_id in notification_ids:
        row = next(line for line in result.output.splitlines() if notification_id in line)
        assert "email" in row
        assert "Delivered" in row  # the outbox delivers at once
    assert "ola@example.com" in result.output
    assert "kari@example.com" in result.output

    # Each listed id is one the command takes.
    one = CliRunner().invoke(cli, ["notifications", "history", notification_ids[0]])
    assert one.exit_code == 0, one.output
    assert "outbox" in one.output


def test_history_tables_keep_their_columns_when_piped(tmp_path: Path, env: dict[str, str]) -> None:
    """Piped (not a terminal), a table takes the width it needs: ids and timestamps whole, no column cut to "…"."""
    settings = Settings(data_dir=tmp_path / "data")
    order_id, notification_ids = asyncio.run(_order_with_notifications(settings))
    done = subprocess.run(
        [VARSEL, "notifications", "history", notification_ids[0]], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout, done.stdout
    header = next(line for line in done.stdout.splitlines() if "attempt" in line)
    for column in ("started", "finished", "provider", "outcome", "status", "provider ref", "detail"):
        assert column in header, header
    row = next(line for line in done.stdout.splitlines() if "outbox" in line)
    started = datetime.fromisoformat(row.split("│")[2].strip())  # whole, to the millisecond
    assert started.tzinfo is not None
    listed = subprocess.run([VARSEL, "notifications", "history", order_id], env=env, capture_output=True, text=True)
    assert "…" not in listed.stdout, listed.stdout
    assert all(notification_id in listed.stdout for notification_id in notification_ids)


# ---------------------------------------------------------------- make run


def _planned(target: str, venv: Path) -> list[str]:
    """The commands `make TARGET` would run on a fresh checkout (nothing installed yet), without running them."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        ["make", "-n", "-C", str(root), target, f"VENV={venv}"], capture_output=True, text=True, check=True
    )
    return [line for line in done.stdout.splitlines() if "pip install" in line]


def test_make_run_installs_what_running_needs_and_make_test_the_dev_extra(tmp_path: Path) -> None:
    run = _planned("run", tmp_path / "venv")
    assert any(line.endswith("pip install --quiet -e .") for line in run), run
    assert not any("dev" in line for line in run), run  # not pytest, ruff, mypy, schemathesis, playwright
    test = _planned("test", tmp_path / "venv")
    assert any(".[dev]" in line for line in test), test


@pytest.mark.parametrize("command", ["serve", "api", "worker"])
def test_a_setting_that_does_not_parse_is_one_line_naming_it(env: dict[str, str], command: str) -> None:
    env["VARSEL_PORT"] = "abc"
    done = subprocess.run([VARSEL, command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    [line] = _lines(done)  # not a traceback naming the model's field
    assert line.startswith("varsel: VARSEL_PORT='abc' is not valid: Input should be a valid integer"), line
