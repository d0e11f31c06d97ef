"""The long-running commands give the root logger a handler at VARSEL_LOG_LEVEL, so the transition log (INFO on
`varsel.transitions`) is really written, in one format with uvicorn's lines."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
import typer

from tests.test_processes import _start, _stop, _wait_until_up
from tests.test_serve import VARSEL, _free_port
from varsel.cli import configure_logging
from varsel.observability import Telemetry


def _line(level: str, logger: str, message: str) -> str:
    """The pattern of one log line: time, level, logger name, message."""
    return rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} {level} {re.escape(logger)}: {message}"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging rewires process-wide state: put it back for the tests after this one."""
    root = logging.getLogger()
    saved_root = (root.level, root.handlers[:])
    others = ["uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "httpx"]
    saved = {}
    for name in others:
        lg = logging.getLogger(name)
        saved[name] = (lg.level, lg.handlers[:], lg.propagate, lg.disabled)
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, (level, handlers, propagate, disabled) in saved.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.disabled = disabled


@pytest.mark.usefixtures("restore_logging")
def test_transitions_reach_the_handler_at_info_and_not_at_warning() -> None:
    telemetry = Telemetry()
    order = uuid4()
    # As an in-process uvicorn.Config or a logging dictConfig elsewhere in the process may have left them.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").disabled = True

    quiet = io.StringIO()
    configure_logging("warning", quiet)
    telemetry.transition("order", order, None, "Registered", creator="ttd")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    assert quiet.getvalue() == ""

    written = io.StringIO()
    configure_logging("INFO", written)
    telemetry.transition("order", order, None, "Registered", creator="ttd")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    lines = written.getvalue().splitlines()
    transition = f"transition entity=order id={order} from=- to=Registered creator=ttd"
    assert len(lines) == 2, lines  # one handler: nothing written twice
    assert re.fullmatch(_line("INFO", "varsel.transitions", transition), lines[0])
    assert re.fullmatch(_line("INFO", "uvicorn.error", r"Application startup complete\."), lines[1])


@pytest.mark.usefixtures("restore_logging")
def test_an_unknown_log_level_stops_the_command() -> None:
    with pytest.raises(typer.Exit) as stopped:
        configure_logging("chatty", io.StringIO())
    assert stopped.value.exit_code == 2


def test_varsel_api_writes_the_transition_log_at_info(tmp_path: Path) -> None:
    env = {**os.environ, "VARSEL_DATA_DIR": str(tmp_path / "data"), "VARSEL_LOG_LEVEL": "info"}
    env.pop("VARSEL_DATABASE_URL", None)  # SQLite in the data folder: logging does not depend on the database
    port = _free_port()
    api = _start(["api", "--port", str(port)], env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/health/ready", api)
        token = subprocess.run(
            [VARSEL, "token", "--org", "ttd"], env=env, capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        body = {"subject": "Hei", "body": "Hallo", "recipients": [{"emailAddress": "ola@example.com"}]}
        created = httpx.post(
            f"{base}/notifications/api/v1/orders/email", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 202, created.text
    finally:
        code = _stop(api)
    output = api.stdout.read().decode() if api.stdout else ""
    assert code == 0, output
    transition = r"transition entity=order id=[0-9a-f-]{36} from=- to=Registered creator=ttd"
    assert re.search(_line("INFO", "varsel.transitions", transition), output), output
    # uvicorn's lines go through the same handler, in the same format.
    assert re.search(_line("INFO", "uvicorn.error", "Application startup"), output)


def test_the_commands_take_the_level_from_varsel_log_level(tmp_path: Path) -> None:
    env = {**os.environ, "VARSEL_DATA_DIR": str(tmp_path / "data"), "VARSEL_LOG_LEVEL": "chatty"}
    for command in (["api"], ["worker"], ["serve"]):
        stopped = subprocess.run([VARSEL, *command], env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 2, stopped.stderr
        assert "VARSEL_LOG_LEVEL='chatty'" in stopped.stderr


def test_the_long_running_commands_freeze_what_they_built_out_of_the_collectors_sight() -> None:
    import gc

    from varsel.cli import _settle_memory

    before = gc.get_threshold()
    try:
        _settle_memory()
        # Everything alive now is frozen (a full collection then has far less to walk), and young collections are
        # rarer than the default 700 allocations.
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] >= 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
