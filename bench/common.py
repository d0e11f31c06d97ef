"""Shared pieces of the benchmark harness: processes, ports, CPU accounting and statistics.

Every benchmark figure is a rate or a latency measured with the real clock, side by side with a baseline in the
same run. CPU shares are read from /proc (Linux): seconds of CPU a process used per second of wall time, so 1.0
is one core busy.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
VARSEL = str(Path(PYTHON).parent / "varsel")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def http_json(url: str, timeout: float = 5.0) -> Any:
    status, body = http_get(url, timeout)
    if status != 200:
        raise RuntimeError(f"GET {url}: {status} {body[:200]!r}")
    return json.loads(body)


def wait_http_ok(url: str, process: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode} before it came up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")
        time.sleep(0.05)


@dataclass
class Process:
    """A child process whose output goes to a log file in the results folder."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    # Where a varsel worker serves /metrics, when it is one.
    metrics_port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        return int(self.popen.returncode)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(name: str, args: Sequence[str], env: Mapping[str, str], logs: Path) -> Process:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    handle = open(log, "ab")  # noqa: SIM115  (kept open by the child)
    popen = subprocess.Popen(list(args), env=dict(env), stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    handle.close()
    return Process(name, popen, log)


# ---------------------------------------------------------------- CPU accounting


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process (its threads included), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name may contain spaces: fields start after its closing parenthesis.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                if f.read().strip() == b"postgres":
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat", "rb") as f:
        first = f.readline().split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuSnapshot:
    at: float
    per_role: dict[str, float]
    machine_busy: float
    # PostgreSQL's backends come and go: kept per process, so one that ended does not make the sum go down.
    postgres: dict[int, float] = field(default_factory=dict)


@dataclass
class CpuMeter:
    """CPU seconds of named roles (each a set of pids; "postgres" is every postgres process) between two snapshots."""

    roles: dict[str, list[int]] = field(default_factory=dict)
    include_postgres: bool = False

    def snapshot(self) -> CpuSnapshot:
        per_role: dict[str, float] = {}
        for role, pids in self.roles.items():
            per_role[role] = sum(process_cpu_seconds(pid) or 0.0 for pid in pids)
        postgres: dict[int, float] = {}
        if self.include_postgres:
            for pid in postgres_pids():
                seconds = process_cpu_seconds(pid)
                if seconds is not None:
                    postgres[pid] = seconds
        busy, _ = machine_busy_seconds()
        return CpuSnapshot(time.time(), per_role, busy, postgres)

    @staticmethod
    def shares(first: CpuSnapshot, last: CpuSnapshot) -> dict[str, float]:
        """Cores used by each role over the interval (1.0 = one core busy), and by the whole machine."""
        wall = max(last.at - first.at, 1e-9)
        out = {role: round((last.per_role[role] - first.per_role.get(role, 0.0)) / wall, 3) for role in last.per_role}
        if last.postgres or first.postgres:
            # Backends that ended in between are missed (an undercount); new ones count from zero.
            used = sum(seconds - first.postgres.get(pid, 0.0) for pid, seconds in last.postgres.items())
            out["postgres"] = round(used / wall, 3)
        out["machine"] = round((last.machine_busy - first.machine_busy) / wall, 3)
        # What the processes measured here do not explain: other work on the machine (or the kernel, or the
        # processes a role does not list, such as a load generator reporting its own share).
        out["unaccounted"] = round(max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine")), 3)
        return out


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank of values sorted ascending; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize_ms(values_seconds: Iterable[float]) -> dict[str, float]:
    """p50/p90/p99/max (and count) of durations in seconds, answered in milliseconds."""
    ordered = sorted(values_seconds)
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p90_ms": round(percentile(ordered, 90) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        "max_ms": round((ordered[-1] if ordered else math.nan) * 1000, 2),
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0 or math.isnan(value) or math.isnan(baseline):
        return None
    return round(value / baseline, 3)


def histogram_means(port: int, name: str, label: str) -> dict[str, tuple[float, float]]:
    """(count, mean) per `label` value of a Prometheus histogram `name` served on /metrics at `port`."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics on {port}: {status}")
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in body.decode().splitlines():
        for suffix, into in (("_sum{", sums), ("_count{", counts)):
            if line.startswith(name + suffix):
                labels, value = line[len(name) + len(suffix) :].split("} ")
                key = dict(part.split("=", 1) for part in labels.split(","))[label].strip('"')
                into[key] = into.get(key, 0.0) + float(value)
    return {key: (counts[key], sums.get(key, 0.0) / counts[key]) for key in counts if counts[key]}
