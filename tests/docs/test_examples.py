"""Every shell example of the README and docs/ runs as a reader would run it, and prints what the page shows.

Each page gets a varsel of its own (`varsel serve`, as `make run` starts it, with the data folder ./var of a fresh
working folder holding `.venv` and `samples` as the repository does, on a free port given as VARSEL_PORT); its
examples run in order in one bash, so a variable one sets (TOKEN, ORDER) is there for the next, as in the reader's
terminal. An example must end with exit status 0 and, where the page shows its output, print that output.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.docs.examples import ROOT, Example, examples, output_matches, pages

VENV = Path(sys.executable).parent.parent
# How long one page's examples may take in all: they wait for the workers (outbox files, a Completed order) with
# loops of their own, which a broken example could keep waiting for ever.
PAGE_TIMEOUT_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    base: str
    workdir: Path
    env: dict[str, str]
    log: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A fresh `varsel serve` as a reader starts it: defaults everywhere (SQLite and the outbox in ./var) but the
    port, chosen as the docs say, with VARSEL_PORT."""
    workdir = tmp_path / "varsel"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(VENV)
    (workdir / "samples").symlink_to(ROOT / "samples")
    port = _free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        # The reader's defaults, not the test run's; and no proxy between curl and loopback.
        if not name.startswith("VARSEL_") and "proxy" not in name.lower()
    }
    env.update(VARSEL_PORT=str(port), HOME=str(workdir))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(VENV / "bin" / "varsel"), "serve"], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"varsel serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    try:
        yield Served(base, workdir, env, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()


@dataclass
class Ran:
    example: Example
    output: str
    status: int


def run_examples(page_examples: list[Example], served: Served) -> tuple[list[Ran], str]:
    """Run the examples in one bash, in order: what each printed and its exit status, and the whole stderr."""
    separator = f"--- example done {uuid.uuid4().hex} ---"
    script = ["set -o pipefail"]
    for example in page_examples:
        script += [example.source, f"printf '\\n{separator} %d\\n' \"$?\""]
    finished = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=served.workdir,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_SECONDS,
        stdin=subprocess.DEVNULL,
    )
    # What example i printed follows separator i-1; separator i carries its exit status.
    pieces = finished.stdout.split(f"\n{separator} ")
    outputs = [pieces[0]] + [piece.partition("\n")[2] for piece in pieces[1:]]
    statuses = [int(piece.partition("\n")[0]) for piece in pieces[1:]]
    # An example the bash never finished (an `exit`, a signal) has no status: it counts as failed.
    ran = [
        Ran(example, outputs[index] if index < len(outputs) else "", statuses[index] if index < len(statuses) else -1)
        for index, example in enumerate(page_examples)
    ]
    return ran, finished.stderr


RUNNABLE = [page for page in pages() if any(example.run for example in examples(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(page.relative_to(ROOT)) for page in RUNNABLE])
def test_the_page_s_examples_run_and_print_what_it_shows(page: Path, served: Served) -> None:
    page_examples = [example for example in examples(page) if example.run]
    ran, stderr = run_examples(page_examples, served)
    for result in ran:
        example = result.example
        context = (
            f"\n--- the example ---\n{example.source}\n--- what it printed ---\n{result.output}"
            f"\n--- the page's stderr ---\n{stderr}"
        )
        assert result.status == 0, f"{example.where()}: exit status {result.status}{context}{_log(served)}"
        if example.expected:
            expected = "".join(example.expected)
            assert output_matches(expected, result.output, served.base), (
                f"{example.where()}: printed other than the page shows{context}\n--- the page shows ---\n{expected}"
            )


def _log(served: Served) -> str:
    return f"\n--- varsel serve's log (last lines) ---\n{''.join(served.log.read_text().splitlines(True)[-30:])}"


def test_every_curl_example_is_run() -> None:
    every = [example for page in pages() for example in examples(page)]
    with_curl = [example.where() for example in every if not example.run and "curl" in example.source]
    assert not with_curl, f"examples calling curl must run (no <!-- norun -->): {with_curl}"
    # The pages do show examples to run: none found would make the test above pass on nothing.
    assert len([example for example in every if example.run]) >= 10


def test_output_matching() -> None:
    base = "http://127.0.0.1:4711"
    shown = '{"orderId":"…",\n "links": {"self": "http://127.0.0.1:8080/orders/…"}}'
    assert output_matches(shown, '{"orderId":"01a2","links":{"self":"http://127.0.0.1:4711/orders/01a2"}}', base)
    assert not output_matches(shown, '{"orderId":"01a2","links":{"self":"http://127.0.0.1:8080/x/01a2"}}', base)
    # The whole output is compared: more than the page shows is a mismatch unless an ellipsis says so.
    assert not output_matches('{"status":"Completed"}', '{"status":"Completed"}{"extra":1}', base)
    assert output_matches("HTTP/1.1 202 Accepted\n…\n{}", "HTTP/1.1 202 Accepted\r\ndate: x\r\n\r\n{}", base)
    # An id or a time shown stands for any id or time, but not for other text.
    shown = '{"id":"01a2431f-092f-7276-87c4-151913ab0177","lastUpdate":"2026-12-04T22:13:57.203465Z"}'
    assert output_matches(
        shown, '{"id":"01a24322-8943-7a76-a473-96ce0b8074c9","lastUpdate":"2026-12-05T01:02:03Z"}', base
    )
    assert not output_matches(shown, '{"id":"not-an-id","lastUpdate":"2026-12-05T01:02:03Z"}', base)
