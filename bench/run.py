"""The benchmark runner: `python -m bench [--only intake,chain,feed,instant,dispatch,lag,scaling] [--db sqlite,postgres]
[--quick]`.

Each figure is measured beside its baseline in the same run, on the same machine, minutes apart at most:

* intake: varsel's API (`varsel api`) against a bare ASGI app parsing the same JSON (the HTTP ceiling) and raw
  inserts of the same rows with the same driver (the database ceiling);
* chain: v2 chain intake (POST /future/orders: a person and two reminders, a new idempotencyId per request) beside
  v1 intake by identity number and the HTTP ceiling, in one step: chains/s, orders stored/s, and the cost of a
  stored order in a chain against a v1 order's;
* feed: the status feed filled with entries as the workers write them, paged through by 500 (GET
  /future/shipment/feed) beside the HTTP ceiling (the same page from the bare app) and the repository alone;
* instant: v2 instant SMS orders (the API process calls the provider while the caller waits) at 200 orders/s
  against the SMS peer with 0 and 100 ms of latency, beside a bare client calling the same peer at the same rate
  and the peer alone (bench/instant.py);
* dispatch: varsel's workers (`varsel worker`) against a bare client sending as many messages to the same peers
  with the same concurrency, with and without 100 ms of peer latency;
* scheduling lag: from an order's requested send time to the provider call, for a steady rate and for a burst;
* scaling: dispatch with 1, 2 and 4 worker processes on PostgreSQL;
* webhooks: events delivered per second by the webhook delivery worker to a loopback receiver, beside a bare client
  posting the same signed bodies (bench/webhooks.py).

Every server, worker, peer, load generator and baseline runs in a process of its own; CPU shares come from /proc.
Results go to bench/results/<time>/ (results.json, chart.png, table.md, logs/) and bench/results/latest.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from bench import data, report
from bench.common import (
    PYTHON,
    ROOT,
    VARSEL,
    CpuMeter,
    Process,
    free_port,
    histogram_means,
    http_json,
    ratio,
    start,
    summarize_ms,
    wait_http_ok,
)
from bench.data import BenchDb

T = TypeVar("T")

API = "/notifications/api/v1"
BENCHMARKS = ("intake", "chain", "feed", "instant", "dispatch", "lag", "scaling", "console", "webhooks")
# Where each chain request's own idempotencyId goes (the load generator writes a value as long as this there).
UNIQUE_MARKER = "@@@@@@@@@@@@@@@@@@@@@@@@"
# Orders a chain stores: the main notification and two reminders.
CHAIN_ORDERS = 3
DATABASES = ("sqlite", "postgres")


@dataclass(frozen=True)
class Sizes:
    warmup_s: float
    window_s: float
    rates: tuple[int, ...]
    variants: tuple[str, ...]
    connections: int
    persons: int
    sms: int
    email: int
    sms_slow: int
    email_slow: int
    steady_rate: int
    steady_s: float
    burst: int
    scaling: int
    profile_s: float
    feed_entries: int
    # The instant step's measured window at its fixed rate (200/s: 1,000 orders in quick mode).
    instant_s: float = 5.0


QUICK = Sizes(
    warmup_s=1.0,
    window_s=3.0,
    rates=(100, 500, 1000),
    variants=("email", "nin"),
    connections=32,
    persons=5_000,
    sms=2_000,
    email=1_500,
    sms_slow=1_000,
    email_slow=300,
    steady_rate=50,
    steady_s=8.0,
    burst=2_000,
    scaling=2_000,
    profile_s=5.0,
    feed_entries=20_000,
)
FULL = Sizes(
    warmup_s=2.0,
    window_s=10.0,
    rates=(50, 100, 200, 500, 1000, 2000),
    variants=("email", "sms", "nin"),
    connections=32,
    persons=50_000,
    sms=6_000,
    email=4_000,
    sms_slow=3_000,
    email_slow=600,
    steady_rate=50,
    steady_s=30.0,
    burst=10_000,
    scaling=6_000,
    profile_s=10.0,
    feed_entries=50_000,
    instant_s=20.0,
)


@dataclass
class Ctx:
    out: Path
    tmp: Path
    sizes: Sizes
    log_level: str
    profile: bool
    pythonpath: str | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def say(self, message: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        print(f"[{stamp}] {message}", flush=True)


def varsel_env(ctx: Ctx, url: str, log_level: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        **child_env(ctx),
        "VARSEL_DATABASE_URL": url,
        "VARSEL_DATA_DIR": str(ctx.tmp / "data"),
        "VARSEL_LOG_LEVEL": log_level or ctx.log_level,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def child_env(ctx: Ctx) -> dict[str, str]:
    """The environment of every process the run starts; `--pythonpath` puts packages in front of the venv's (to
    measure what a dependency change would bring without installing anything)."""
    env = dict(os.environ)
    if ctx.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([ctx.pythonpath, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def provider_env(http_port: int, smtp_port: int) -> dict[str, str]:
    return {
        "VARSEL_SMS__PROVIDER": "linkmobility",
        "VARSEL_SMS__LINKMOBILITY__USERNAME": "bench",
        "VARSEL_SMS__LINKMOBILITY__PASSWORD": "bench",
        "VARSEL_SMS__LINKMOBILITY__PLATFORM_ID": "bench",
        "VARSEL_SMS__LINKMOBILITY__PLATFORM_PARTNER_ID": "bench",
        "VARSEL_SMS__LINKMOBILITY__BASE_URL": f"http://127.0.0.1:{http_port}",
        "VARSEL_EMAIL__PROVIDER": "smtp",
        "VARSEL_EMAIL__SMTP__HOST": "127.0.0.1",
        "VARSEL_EMAIL__SMTP__PORT": str(smtp_port),
        "VARSEL_EMAIL__SMTP__SECURITY": "none",
        "VARSEL_EMAIL__SMTP__LOCAL_HOSTNAME": "bench.local",
    }


def run_json(ctx: Ctx, module: str, config: dict[str, Any], name: str) -> dict[str, Any]:
    path = ctx.tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    done = subprocess.run([PYTHON, "-m", module, str(path)], capture_output=True, text=True, cwd=ROOT, check=False,
                          env=child_env(ctx))  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def load(
    ctx: Ctx, port: int, path: str, headers: dict[str, str], bodies: list[str], meter: CpuMeter, **config: Any
) -> dict[str, Any]:
    """Run the load generator in its own process; read the servers' CPU over the generator's measured window."""
    cfg = {"port": port, "path": path, "headers": headers, "bodies": bodies, "warmup": ctx.sizes.warmup_s,
           "duration": ctx.sizes.window_s, **config}  # fmt: skip
    cfg_path = ctx.tmp / "loadgen.json"
    cfg_path.write_text(json.dumps(cfg))
    gen = subprocess.Popen(
        [PYTHON, "-m", "bench.loadgen", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=child_env(ctx),
    )
    assert gen.stdout is not None
    first = json.loads(gen.stdout.readline() or b"{}")
    cpu: dict[str, float] = {}
    if "window_start" in first:
        time.sleep(max(0.0, first["window_start"] - time.time()))
        before = meter.snapshot()
        time.sleep(max(0.0, first["window_start"] + first["window_s"] - time.time()))
        cpu = CpuMeter.shares(before, meter.snapshot())
    out, err = gen.communicate(timeout=120)
    if gen.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    cpu["loadgen"] = result["cpu_share"]
    result["cpu"] = cpu
    return result


# ---------------------------------------------------------------- intake


def intake_bodies(variant: str, numbers: list[str]) -> tuple[str, list[str]]:
    rng = random.Random(7)
    bodies = []
    for i in range(1000):
        reference = f"bench-{variant}-{i}"
        if variant == "email":
            body: dict[str, Any] = {"sendersReference": reference, "subject": data.EMAIL_SUBJECT,
                                    "body": data.EMAIL_BODY, "recipients": [{"emailAddress": data.EMAIL}]}  # fmt: skip
            path = f"{API}/orders/email"
        elif variant == "sms":
            body = {"sendersReference": reference, "body": data.SMS_BODY,
                    "recipients": [{"mobileNumber": data.MOBILE}]}  # fmt: skip
            path = f"{API}/orders/sms"
        else:
            body = {
                "sendersReference": reference,
                "notificationChannel": "EmailPreferred",
                "emailTemplate": {"subject": data.EMAIL_SUBJECT, "body": data.EMAIL_BODY},
                "smsTemplate": {"body": data.SMS_BODY},
                "recipients": [{"nationalIdentityNumber": rng.choice(numbers)}],
            }
            path = f"{API}/orders"
        bodies.append(json.dumps(body))
    return path, bodies


def token(ctx: Ctx, env: dict[str, str]) -> str:
    done = subprocess.run([VARSEL, "token", "--org", "ttd", "--minutes", "600"], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def http_series(
    ctx: Ctx, port: int, path: str, headers: dict[str, str], bodies: list[str], meter: CpuMeter,
    between: Callable[[], None] | None = None, **config: Any,
) -> dict[str, Any]:  # fmt: skip
    """Saturation (closed loop) and each fixed rate (open loop) against one server."""
    out: dict[str, Any] = {}
    out["saturation"] = load(ctx, port, path, headers, bodies, meter, mode="closed", connections=ctx.sizes.connections,
                             **config)  # fmt: skip
    saturation = out["saturation"]["throughput_per_s"]
    for rate in ctx.sizes.rates:
        if rate > 1.25 * saturation:
            # Offered far above what the server can do, the backlog only grows: the latency would measure the
            # length of the window, not the server.
            out[f"rate_{rate}"] = {"skipped": f"offered {rate}/s is above 1.25 x the saturation rate ({saturation}/s)"}
            continue
        if between is not None:
            between()
        out[f"rate_{rate}"] = load(ctx, port, path, headers, bodies, meter, mode="open", rate=rate, connections=64,
                                   **config)  # fmt: skip
    return out


def bench_intake(ctx: Ctx, db_kind: str, url: str, numbers: list[str]) -> dict[str, Any]:
    sizes = ctx.sizes
    results: dict[str, Any] = {"log_level": ctx.log_level, "connections_saturation": sizes.connections,
                               "connections_fixed_rate": 64, "window_s": sizes.window_s}  # fmt: skip
    env = varsel_env(ctx, url)
    bearer = token(ctx, env)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
    port = free_port()
    api = start(f"{db_kind}-api", [VARSEL, "api", "--port", str(port)], env, ctx.logs)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health/ready", api.popen)
        meter = CpuMeter({"server": [api.pid]}, include_postgres=db_kind == "postgres")

        def clean() -> None:
            # Requests the generator left in flight when its window closed are still being written: let them
            # finish, or TRUNCATE and their inserts deadlock each other (PostgreSQL) or wait on the lock (SQLite).
            asyncio.run(_settle(url))
            asyncio.run(_on_bench_db(url, BenchDb.truncate))

        for variant in sizes.variants:
            clean()
            path, bodies = intake_bodies(variant, numbers)
            ctx.say(f"{db_kind} intake {variant}: saturation and fixed rates")
            series = http_series(ctx, port, path, headers, bodies, meter, clean)
            asyncio.run(_settle(url))
            results[variant] = series
        if ctx.profile:
            for variant in ("email", "nin"):
                clean()
                path, bodies = intake_bodies(variant, numbers)
                ctx.say(f"{db_kind} intake {variant}: profiling the API with py-spy")
                work = functools.partial(load, ctx, port, path, headers, bodies, meter, mode="closed",
                                         connections=sizes.connections)  # fmt: skip
                results.setdefault("profiles", {})[variant] = profile_during(ctx, api, f"{db_kind}-intake-{variant}",
                                                                             work)  # fmt: skip
    finally:
        api.stop()
    # The HTTP ceiling: the same requests to a bare ASGI app on uvicorn with the same settings.
    ctx.say(f"{db_kind} intake: HTTP ceiling (bare ASGI app)")
    port = free_port()
    bare = start(f"{db_kind}-bare-asgi", [PYTHON, "-m", "bench.bare_asgi", "--port", str(port), "--log-level",
                                          ctx.log_level], env, ctx.logs)  # fmt: skip
    try:
        wait_http_ok_any(port, bare)
        meter = CpuMeter({"server": [bare.pid]})
        path, bodies = intake_bodies("email", numbers)
        results["http_ceiling"] = http_series(ctx, port, path, headers, bodies, meter)
    finally:
        bare.stop()
    # The database ceiling: the same rows, the same driver, as many at once as the load generator's connections.
    for mode in ("driver_grouped", "sqlalchemy", "sqlalchemy_prebuilt", "driver",
                 *(["sqlalchemy_serialized"] if db_kind == "sqlite" else [])):  # fmt: skip
        asyncio.run(_on_bench_db(url, BenchDb.truncate))
        ctx.say(f"{db_kind} intake: database ceiling ({mode})")
        meter = CpuMeter({}, include_postgres=db_kind == "postgres")
        before = meter.snapshot()
        ceiling = run_json(ctx, "bench.db_ceiling", {"url": url, "mode": mode, "concurrency": sizes.connections,
                                                      "warmup": sizes.warmup_s, "duration": sizes.window_s},
                           "db_ceiling")  # fmt: skip
        shares = CpuMeter.shares(before, meter.snapshot())
        ceiling["cpu"] = {"inserter": ceiling["cpu_share"], **{k: v for k, v in shares.items() if k != "machine"}}
        results[f"db_ceiling_{mode}"] = ceiling
    asyncio.run(_on_bench_db(url, BenchDb.truncate))
    return results


def wait_http_ok_any(port: int, process: Process) -> None:
    """Up when it answers anything on / (the bare app answers every path)."""
    import socket as _socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with _socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited: {process.tail()}") from None
            time.sleep(0.05)
    raise RuntimeError(f"{process.name} did not come up")


async def _on_bench_db(url: str, action: Callable[[BenchDb], Awaitable[T]]) -> T:
    """One action on the benchmark database, through a BenchDb opened for it."""
    bdb = BenchDb(url)
    try:
        return await action(bdb)
    finally:
        await bdb.close()


async def _settle(url: str, quiet_s: float = 0.3, limit_s: float = 30.0) -> None:
    """Wait until the number of stored orders stops changing."""
    bdb = BenchDb(url)
    try:
        deadline = time.monotonic() + limit_s
        last = await bdb.count_orders()
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet_s)
            now = await bdb.count_orders()
            if now == last:
                return
            last = now
    finally:
        await bdb.close()


# ---------------------------------------------------------------- v2 chain intake


def chain_bodies(numbers: list[str]) -> tuple[str, list[str]]:
    """POST /future/orders: a person from the imported registry (EmailPreferred, as v1 intake by identity number)
    and two reminders to the same person by delayDays; the idempotencyId is the marker the load generator replaces
    with a value of its own for every request."""
    rng = random.Random(7)
    bodies = []

    def person(number: str, subject: str) -> dict[str, Any]:
        return {"recipientPerson": {"nationalIdentityNumber": number, "channelSchema": "EmailPreferred",
                                    "emailSettings": {"subject": subject, "body": data.EMAIL_BODY},
                                    "smsSettings": {"body": data.SMS_BODY}}}  # fmt: skip

    for i in range(1000):
        number = rng.choice(numbers)
        body = {
            "idempotencyId": f"bench-{UNIQUE_MARKER}",
            "sendersReference": f"bench-chain-{i}",
            "recipient": person(number, data.EMAIL_SUBJECT),
            "reminders": [
                {"delayDays": days, "sendersReference": f"bench-chain-{i}-r{days}",
                 "recipient": person(number, f"Påminnelse: {data.EMAIL_SUBJECT}")}
                for days in (3, 7)
            ],
        }  # fmt: skip
        bodies.append(json.dumps(body))
    return f"{API}/future/orders", bodies


def bench_chain(ctx: Ctx, db_kind: str, url: str, numbers: list[str]) -> dict[str, Any]:
    """v2 chains beside v1 orders by identity number and the HTTP ceiling, one after the other in one step."""
    sizes = ctx.sizes
    results: dict[str, Any] = {"log_level": ctx.log_level, "connections_saturation": sizes.connections,
                               "connections_fixed_rate": 64, "window_s": sizes.window_s,
                               "orders_per_chain": CHAIN_ORDERS}  # fmt: skip
    env = varsel_env(ctx, url)
    bearer = token(ctx, env)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
    runs: dict[str, tuple[tuple[str, list[str]], dict[str, Any]]] = {
        "nin": (intake_bodies("nin", numbers), {}),
        "chain": (chain_bodies(numbers), {"unique": UNIQUE_MARKER}),
    }
    port = free_port()
    api = start(f"{db_kind}-api-chain", [VARSEL, "api", "--port", str(port)], env, ctx.logs)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health/ready", api.popen)
        meter = CpuMeter({"server": [api.pid]}, include_postgres=db_kind == "postgres")
        for variant, ((path, bodies), extra) in runs.items():
            stored: list[dict[str, int]] = []

            def clean(into: list[dict[str, int]] = stored) -> None:
                # What the run before stored (chains, orders by type), then empty the tables for the next one.
                asyncio.run(_settle(url))
                into.append(asyncio.run(_on_bench_db(url, BenchDb.stored)))
                asyncio.run(_on_bench_db(url, BenchDb.truncate))

            asyncio.run(_settle(url))
            asyncio.run(_on_bench_db(url, BenchDb.truncate))
            ctx.say(f"{db_kind} chain step, {variant}: saturation and fixed rates")
            series = http_series(ctx, port, path, headers, bodies, meter, clean, **extra)
            clean()
            series["stored_after_each_run"] = stored
            results[variant] = series
        if ctx.profile:
            asyncio.run(_settle(url))
            asyncio.run(_on_bench_db(url, BenchDb.truncate))
            (path, bodies), extra = runs["chain"]
            ctx.say(f"{db_kind} chain: profiling the API with py-spy")
            work = functools.partial(load, ctx, port, path, headers, bodies, meter, mode="closed",
                                     connections=sizes.connections, **extra)  # fmt: skip
            results["profile"] = profile_during(ctx, api, f"{db_kind}-chain", work)
    finally:
        api.stop()
    ctx.say(f"{db_kind} chain: HTTP ceiling (bare ASGI app) with the chain's requests")
    port = free_port()
    bare = start(f"{db_kind}-bare-asgi-chain", [PYTHON, "-m", "bench.bare_asgi", "--port", str(port), "--log-level",
                                                ctx.log_level], env, ctx.logs)  # fmt: skip
    try:
        wait_http_ok_any(port, bare)
        meter = CpuMeter({"server": [bare.pid]})
        (path, bodies), extra = runs["chain"]
        results["http_ceiling"] = http_series(ctx, port, path, headers, bodies, meter, **extra)
    finally:
        bare.stop()
    asyncio.run(_settle(url))
    asyncio.run(_on_bench_db(url, BenchDb.truncate))
    results["comparison"] = chain_comparison(results)
    return results


def _server_ms(run: dict[str, Any], roles: tuple[str, ...] = ("server",)) -> float | None:
    """CPU milliseconds of `roles` per answered request in a load run."""
    done = run.get("throughput_per_s")
    cpu = run.get("cpu") or {}
    if not done or any(role not in cpu for role in roles):
        return None
    return float(1000 * sum(cpu[role] for role in roles) / done)


def chain_comparison(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's goal: a chain costs no more than 1.5 times a v1 single-recipient order per stored order. Cost as
    the API process's CPU per stored order (what the machine's load changes least), and as time (throughput)."""
    chain, nin = results["chain"]["saturation"], results["nin"]["saturation"]
    chains_per_s = chain["throughput_per_s"]
    out: dict[str, Any] = {
        "chains_per_s": chains_per_s,
        "orders_stored_per_s": round(chains_per_s * CHAIN_ORDERS, 1),
        "v1_orders_per_s": nin["throughput_per_s"],
        "goal": 1.5,
    }
    chain_ms, nin_ms = _server_ms(chain), _server_ms(nin)
    if chain_ms is not None and nin_ms is not None:
        out["api_cpu_ms_per_chain"] = round(chain_ms, 3)
        out["api_cpu_ms_per_stored_order_chain"] = round(chain_ms / CHAIN_ORDERS, 3)
        out["api_cpu_ms_per_v1_order"] = round(nin_ms, 3)
        out["cost_ratio_cpu"] = ratio(chain_ms / CHAIN_ORDERS, nin_ms)
    both = ("server", "postgres")
    chain_all, nin_all = _server_ms(chain, both), _server_ms(nin, both)
    if chain_all is not None and nin_all is not None:
        out["cost_ratio_cpu_with_postgres"] = ratio(chain_all / CHAIN_ORDERS, nin_all)
    if chains_per_s:
        # Time per stored order: 1 / (orders stored per second).
        out["cost_ratio_time"] = ratio(nin["throughput_per_s"], chains_per_s * CHAIN_ORDERS)
    return out


# ---------------------------------------------------------------- reading the status feed

FEED_PAGE = 500


def feed_read(ctx: Ctx, port: int, headers: dict[str, str], meter: CpuMeter, **config: Any) -> dict[str, Any]:
    """Run the feed reader in its own process; read the server's CPU over its measured window."""
    cfg = {"port": port, "path": f"{API}/future/shipment/feed", "headers": headers, "page_size": FEED_PAGE,
           "duration": ctx.sizes.window_s, **config}  # fmt: skip
    cfg_path = ctx.tmp / "feed_reader.json"
    cfg_path.write_text(json.dumps(cfg))
    reader = subprocess.Popen([PYTHON, "-m", "bench.feed_reader", str(cfg_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=ROOT, env=child_env(ctx))  # fmt: skip
    assert reader.stdout is not None
    first = json.loads(reader.stdout.readline() or b"{}")
    before = meter.snapshot() if "window_start" in first else None
    out, err = reader.communicate(timeout=300)
    if reader.returncode != 0:
        raise RuntimeError(f"feed reader failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    cpu = CpuMeter.shares(before, meter.snapshot()) if before is not None else {}
    cpu["reader"] = result["cpu_share"]
    result["cpu"] = cpu
    return result


def bench_feed(ctx: Ctx, db_kind: str, url: str) -> dict[str, Any]:
    """Fill the feed with entries as the workers write them, then page through it by 500: varsel's API, the bare
    ASGI app serving the same page (HTTP ceiling) and the shipments repository alone (below the API)."""
    count = ctx.sizes.feed_entries
    results: dict[str, Any] = {"log_level": ctx.log_level, "entries": count, "page_size": FEED_PAGE,
                               "window_s": ctx.sizes.window_s}  # fmt: skip
    asyncio.run(_on_bench_db(url, BenchDb.truncate))
    ctx.say(f"{db_kind} feed: writing {count:,} entries (completed orders, the shipments repository's writer)")
    took = asyncio.run(_on_bench_db(url, functools.partial(BenchDb.fill_feed, count=count)))
    results["fill"] = {"batch": 100, "seconds": round(took, 3), "entries_per_s": round(count / took, 1)}
    results["stored_entries"] = asyncio.run(_on_bench_db(url, BenchDb.count_feed))
    env = varsel_env(ctx, url)
    bearer = token(ctx, env)
    headers = {"Authorization": f"Bearer {bearer}"}
    page_file = ctx.tmp / "feed_page.json"
    port = free_port()
    api = start(f"{db_kind}-api-feed", [VARSEL, "api", "--port", str(port)], env, ctx.logs)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health/ready", api.popen)
        meter = CpuMeter({"server": [api.pid]}, include_postgres=db_kind == "postgres")
        ctx.say(f"{db_kind} feed: paging through by {FEED_PAGE} (varsel)")
        results["varsel"] = feed_read(ctx, port, headers, meter, save_page=str(page_file))
        if ctx.profile:
            ctx.say(f"{db_kind} feed: profiling the API with py-spy")
            work = functools.partial(feed_read, ctx, port, headers, meter)
            results["profile"] = profile_during(ctx, api, f"{db_kind}-feed", work)
    finally:
        api.stop()
    ctx.say(f"{db_kind} feed: HTTP ceiling (the bare ASGI app serving the same page)")
    port = free_port()
    bare = start(f"{db_kind}-bare-asgi-feed", [PYTHON, "-m", "bench.bare_asgi", "--port", str(port), "--log-level",
                                               ctx.log_level, "--page", str(page_file)], env, ctx.logs)  # fmt: skip
    try:
        wait_http_ok_any(port, bare)
        meter = CpuMeter({"server": [bare.pid]})
        results["http_ceiling"] = feed_read(ctx, port, headers, meter, pages_per_pass=-(-count // FEED_PAGE))
    finally:
        bare.stop()
    ctx.say(f"{db_kind} feed: the shipments repository alone (read_feed, one read transaction per page)")
    meter = CpuMeter({}, include_postgres=db_kind == "postgres")
    before = meter.snapshot()
    through = functools.partial(BenchDb.read_feed_through, page_size=FEED_PAGE, duration_s=ctx.sizes.window_s)
    below: dict[str, Any] = asyncio.run(_on_bench_db(url, through))
    below["cpu"] = CpuMeter.shares(before, meter.snapshot())
    results["repository"] = below
    results["page_bytes"] = page_file.stat().st_size if page_file.exists() else None
    asyncio.run(_on_bench_db(url, BenchDb.truncate))
    return results


# ---------------------------------------------------------------- dispatch


@dataclass
class Peer:
    process: Process
    http_port: int
    smtp_port: int

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = http_json(f"http://127.0.0.1:{self.http_port}/_stats")
        return stats

    def dump(self) -> dict[str, list[tuple[str, float]]]:
        dumped: dict[str, list[tuple[str, float]]] = http_json(f"http://127.0.0.1:{self.http_port}/_dump", 60)
        return dumped


def start_peer(ctx: Ctx, latency_ms: float, name: str) -> Peer:
    http_port, smtp_port = free_port(), free_port()
    process = start(name, [PYTHON, "-m", "bench.peers", "--http-port", str(http_port), "--smtp-port", str(smtp_port),
                           "--latency-ms", str(latency_ms)], child_env(ctx), ctx.logs)  # fmt: skip
    wait_http_ok(f"http://127.0.0.1:{http_port}/_stats", process.popen)
    return Peer(process, http_port, smtp_port)


def start_workers(
    ctx: Ctx, url: str, peer: Peer, kinds: list[str], count: int, name: str, log_level: str | None = None,
) -> list[Process]:  # fmt: skip
    workers = []
    ports = []
    for i in range(count):
        port = free_port()
        env = varsel_env(ctx, url, log_level, VARSEL_DISPATCH__KINDS=json.dumps(kinds),
                         **provider_env(peer.http_port, peer.smtp_port))  # fmt: skip
        worker = start(f"{name}-{i}", [VARSEL, "worker", "--metrics-port", str(port)], env, ctx.logs)
        worker.metrics_port = port
        workers.append(worker)
        ports.append(port)
    for worker, port in zip(workers, ports, strict=True):
        wait_http_ok(f"http://127.0.0.1:{port}/health/ready", worker.popen)
    return workers


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


def dispatch_run(
    ctx: Ctx, url: str, channel: str, count: int, latency_ms: float, workers: int = 1, log_level: str | None = None,
    label: str = "", profile: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Preload `count` notifications, start the peer and the workers, release the work, time it until all is
    recorded: throughput from the first provider call to the moment the database shows nothing New or Sending."""
    db_kind = "sqlite" if url.startswith("sqlite") else "postgres"
    bdb = BenchDb(url)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(bdb.truncate())
        loop.run_until_complete(bdb.preload_notifications(channel, count, data.now() + timedelta(days=1)))
        peer = start_peer(ctx, latency_ms, f"{db_kind}-peer-{label or channel}")
        procs: list[Process] = []
        try:
            procs = start_workers(ctx, url, peer, [channel], workers, f"{db_kind}-worker-{label or channel}", log_level)
            meter = CpuMeter({"workers": [p.pid for p in procs], "peer": [peer.process.pid]},
                             include_postgres=db_kind == "postgres")  # fmt: skip
            spy = start_profiler(ctx, procs[0], f"{db_kind}-dispatch-{channel}") if profile else None
            released = loop.run_until_complete(bdb.release(channel))
            wait_for(lambda: peer.stats()[channel] > 0, 30, "the first provider call", 0.005)
            before = meter.snapshot()
            wait_for(lambda: peer.stats()[channel] >= count, 600, f"{count} messages at the peer", 0.02)
            wait_for(lambda: loop.run_until_complete(bdb.pending(channel)) == 0, 120, "all outcomes recorded", 0.02)
            done = time.time()
            shares = CpuMeter.shares(before, meter.snapshot())
            profile_out = stop_profiler(ctx, spy) if spy is not None else None
            dumped = peer.dump()[channel]
            statuses = loop.run_until_complete(bdb.statuses(channel))
            groups = outcome_groups(procs, channel)
        finally:
            for p in procs:
                p.stop()
            peer.process.stop()
        log_lines = sum(p.log.read_text(errors="replace").count("transition") for p in procs)
    finally:
        loop.run_until_complete(bdb.close())
        loop.close()
    times = sorted(t for _, t in dumped)
    first, last = times[0], times[-1]
    # Provider calls per second of the run: a stall (a lock, a slow commit, the machine busy) shows as a dip.
    timeline = [0] * (int(last - first) + 1)
    for t in times:
        timeline[int(t - first)] += 1
    result: dict[str, Any] = {
        "channel": channel,
        "count": count,
        "workers": workers,
        "peer_latency_ms": latency_ms,
        "log_level": log_level or ctx.log_level,
        "throughput_per_s": round(count / (done - first), 1),
        "peer_rate_per_s": round((len(times) - 1) / max(last - first, 1e-9), 1),
        "elapsed_s": round(done - first, 3),
        "first_call_after_release_s": round(first - released.timestamp(), 3),
        "messages_at_peer": len(dumped),
        "distinct_at_peer": len({ref for ref, _ in dumped}),
        "statuses": statuses,
        "transition_log_lines": log_lines,
        "outcome_groups": groups,
        "calls_per_second": timeline,
        "cpu": shares,
    }
    if profile_out is not None:
        result["profile"] = profile_out
    return result


def outcome_groups(workers: list[Process], channel: str) -> dict[str, float]:
    """How the workers wrote send outcomes: groups, their mean size and mean write time (from their metrics)."""
    groups = size = seconds = 0.0
    for worker in workers:
        assert worker.metrics_port is not None
        sizes = histogram_means(worker.metrics_port, "varsel_outcome_group_size", "channel").get(channel)
        times = histogram_means(worker.metrics_port, "varsel_outcome_write_seconds", "channel").get(channel)
        if sizes and times:
            groups += sizes[0]
            size += sizes[0] * sizes[1]
            seconds += times[0] * times[1]
    if not groups:
        return {"groups": 0}
    return {"groups": groups, "mean_size": round(size / groups, 1), "mean_write_ms": round(1000 * seconds / groups, 2)}


def sms_client_library() -> str:
    """The HTTP client library varsel's LINK Mobility adapter calls with: the bare client uses the same one."""
    source = ROOT / "src" / "varsel" / "providers" / "linkmobility.py"
    return "aiohttp" if "varsel.providers.http" in source.read_text() else "httpx"


def code_state() -> dict[str, Any]:
    """The code being measured: the commit, and a digest of uncommitted changes to src/ and pyproject.toml (others
    may be changing the work tree while a run goes on: a step whose state differs from the run's start says so)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False).stdout

    diff = git("diff", "HEAD", "--", "src", "pyproject.toml")
    untracked = sorted(git("ls-files", "--others", "--exclude-standard", "src").split())
    digest = hashlib.sha256(diff.encode())
    for name in untracked:
        digest.update(name.encode())
        digest.update((ROOT / name).read_bytes())
    changed = digest.hexdigest()[:12] if diff or untracked else None
    return {"commit": git("rev-parse", "--short=10", "HEAD").strip(), "uncommitted": changed}


def bare_run(ctx: Ctx, channel: str, count: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    peer = start_peer(ctx, latency_ms, f"bare-peer-{channel}")
    try:
        meter = CpuMeter({"peer": [peer.process.pid]})
        before = meter.snapshot()
        config = {"channel": channel, "count": count, "concurrency": concurrency, "library": sms_client_library(),
                  "base_url": f"http://127.0.0.1:{peer.http_port}", "smtp_port": peer.smtp_port}  # fmt: skip
        result = run_json(ctx, "bench.bare_client", config, "bare_client")
        shares = CpuMeter.shares(before, meter.snapshot())
        result["cpu"] = {"client": result["cpu_share"], "peer": shares["peer"]}
        result["messages_at_peer"] = peer.stats()[channel]
        result["peer_latency_ms"] = latency_ms
    finally:
        peer.process.stop()
    return result


def raw_sms_run(ctx: Ctx, latency_ms: float, concurrency: int) -> dict[str, Any]:
    peer = start_peer(ctx, latency_ms, "raw-peer-sms")
    try:
        meter = CpuMeter({"peer": [peer.process.pid]})
        body = json.dumps({"source": "Varsel", "sourceTON": "ALPHANUMERIC", "destination": data.MOBILE,
                           "destinationTON": "MSISDN", "userData": data.SMS_BODY, "dcs": "TEXT", "platformId": "bench",
                           "platformPartnerId": "bench", "refId": "00000000-0000-0000-0000-000000000000",
                           "relativeValidityTime": 172800000, "ignoreResponse": False,
                           "useDeliveryReport": False})  # fmt: skip
        headers = {"Content-Type": "application/json", "Authorization": "Basic YmVuY2g6YmVuY2g="}
        result = load(ctx, peer.http_port, "/sms/send", headers, [body], meter, mode="closed", connections=concurrency)
    finally:
        peer.process.stop()
    return {"throughput_per_s": result["throughput_per_s"], "connections": concurrency, "cpu": result["cpu"],
            "latency": result["latency"]}  # fmt: skip


def bench_dispatch(ctx: Ctx, url: str, db_kind: str) -> dict[str, Any]:
    sizes = ctx.sizes
    results: dict[str, Any] = {"log_level": ctx.log_level}
    plan = [("sms", sizes.sms, 0.0, 50), ("email", sizes.email, 0.0, 10), ("sms", sizes.sms_slow, 100.0, 50),
            ("email", sizes.email_slow, 100.0, 10)]  # fmt: skip
    for channel, count, latency, concurrency in plan:
        key = f"{channel}_{int(latency)}ms"
        ctx.say(f"{db_kind} dispatch {channel}, {count} messages, peer latency {latency:g} ms")
        varsel = dispatch_run(ctx, url, channel, count, latency, label=key)
        bare = bare_run(ctx, channel, count, latency, concurrency)
        varsel["bare_client"] = bare
        varsel["ratio_to_bare"] = ratio(varsel["throughput_per_s"], bare["throughput_per_s"])
        if channel == "sms":
            # Below httpx: the load generator's raw keep-alive connections posting the same JSON to the same peer,
            # as many at once: what the peer and loopback can take, so what the HTTP client library costs shows.
            varsel["raw_http_client"] = raw_sms_run(ctx, latency, concurrency)
        if latency > 0:
            varsel["concurrency"] = concurrency
            varsel["concurrency_bound_per_s"] = round(concurrency / (latency / 1000), 1)
        results[key] = varsel
    if ctx.log_level != "info":
        ctx.say(f"{db_kind} dispatch sms at log level info (the cost of writing the transition log)")
        results["sms_0ms_info"] = dispatch_run(ctx, url, "sms", sizes.sms, 0.0, log_level="info", label="sms-info")
    if ctx.profile:
        for channel, count in (("sms", sizes.sms), ("email", sizes.email)):
            ctx.say(f"{db_kind} dispatch {channel}: profiling the worker with py-spy")
            run = dispatch_run(ctx, url, channel, count, 0.0, label=f"{channel}-profile", profile=True)
            results.setdefault("profiles", {})[channel] = run.get("profile")
    return results


# ---------------------------------------------------------------- scheduling lag


def lag_run(ctx: Ctx, url: str, label: str, offsets: list[float], profile: bool = False) -> dict[str, Any]:
    """Orders due at `offsets` seconds after a moment a few seconds ahead; lag = peer arrival - requested time."""
    db_kind = "sqlite" if url.startswith("sqlite") else "postgres"
    bdb = BenchDb(url)
    loop = asyncio.new_event_loop()
    count = len(offsets)
    try:
        loop.run_until_complete(bdb.truncate())
        peer = start_peer(ctx, 0.0, f"{db_kind}-peer-lag-{label}")
        procs: list[Process] = []
        try:
            procs = start_workers(ctx, url, peer, ["orders", "sms", "email", "expiry", "reports"], 1,
                                  f"{db_kind}-worker-lag-{label}")  # fmt: skip
            meter = CpuMeter({"workers": [p.pid for p in procs], "peer": [peer.process.pid]},
                             include_postgres=db_kind == "postgres")  # fmt: skip
            spy = start_profiler(ctx, procs[0], f"{db_kind}-lag-{label}") if profile else None
            # Far enough ahead that the rows are committed and the worker has seen them (it polls every 2 s at most
            # on SQLite, where nothing wakes it across processes) before the first is due.
            t0 = data.now() + timedelta(seconds=4.0 + count / 4000)
            loop.run_until_complete(bdb.preload_orders("sms", [t0 + timedelta(seconds=o) for o in offsets]))
            inserted = data.now()
            if db_kind == "postgres":
                loop.run_until_complete(_notify(bdb, "varsel_orders"))
            margin = (t0 - inserted).total_seconds()
            time.sleep(max(0.0, margin - 0.05))
            before = meter.snapshot()
            wait_for(lambda: peer.stats()["sms"] >= count, 600, f"{count} SMS at the peer", 0.05)
            wait_for(lambda: loop.run_until_complete(bdb.pending("sms")) == 0, 120, "all outcomes recorded", 0.05)
            shares = CpuMeter.shares(before, meter.snapshot())
            profile_out = stop_profiler(ctx, spy) if spy is not None else None
            dumped = peer.dump()["sms"]
            requested = loop.run_until_complete(bdb.requested_send_times("sms"))
            orders = loop.run_until_complete(bdb.order_counts())
        finally:
            for p in procs:
                p.stop()
            peer.process.stop()
    finally:
        loop.run_until_complete(bdb.close())
        loop.close()
    lags = [t - requested[ref].timestamp() for ref, t in dumped if ref in requested]
    extra = {"profile": profile_out} if profile_out is not None else {}
    return {
        **extra,
        "orders": count,
        "due_over_s": round(max(offsets) - min(offsets), 3),
        "inserted_ahead_s": round(margin, 3),
        "lag": summarize_ms(lags),
        "min_lag_ms": round(min(lags) * 1000, 2) if lags else None,
        "messages_at_peer": len(dumped),
        "matched": len(lags),
        "orders_by_status": orders,
        "cpu": shares,
    }


async def _notify(bdb: BenchDb, channel: str) -> None:
    from sqlalchemy import func, select

    async with bdb.db.transaction() as conn:
        await conn.execute(select(func.pg_notify(channel, "")))


def bench_lag(ctx: Ctx, url: str, db_kind: str) -> dict[str, Any]:
    sizes = ctx.sizes
    steady_count = int(sizes.steady_rate * sizes.steady_s)
    ctx.say(f"{db_kind} scheduling lag: {steady_count} orders due at {sizes.steady_rate}/s")
    steady = lag_run(ctx, url, "steady", [i / sizes.steady_rate for i in range(steady_count)], profile=ctx.profile)
    steady["rate_per_s"] = sizes.steady_rate
    ctx.say(f"{db_kind} scheduling lag: a burst of {sizes.burst} orders due at one moment")
    burst = lag_run(ctx, url, "burst", [0.0] * sizes.burst)
    lag_s = burst["lag"]["max_ms"] / 1000
    burst["orders_per_s_through"] = round(sizes.burst / lag_s, 1) if lag_s > 0 else None
    out: dict[str, Any] = {"log_level": ctx.log_level, "channel": "sms", "steady": steady, "burst": burst}
    if ctx.profile:
        ctx.say(f"{db_kind} scheduling lag: profiling the worker through a burst with py-spy")
        burst_size = min(sizes.burst, 2_000)
        out["profile_burst"] = lag_run(ctx, url, "burst-profile", [0.0] * burst_size, profile=True).get("profile")
    return out


# ---------------------------------------------------------------- scaling


def bench_scaling(ctx: Ctx, url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"log_level": ctx.log_level, "channel": "sms", "count": ctx.sizes.scaling}
    for workers in (1, 2, 4):
        ctx.say(f"postgres scaling: {ctx.sizes.scaling} SMS with {workers} worker process(es)")
        out[f"workers_{workers}"] = dispatch_run(ctx, url, "sms", ctx.sizes.scaling, 0.0, workers=workers,
                                                 label=f"scale{workers}")  # fmt: skip
    one = out["workers_1"]["throughput_per_s"]
    out["ratio_2_to_1"] = ratio(out["workers_2"]["throughput_per_s"], one)
    out["ratio_4_to_2"] = ratio(out["workers_4"]["throughput_per_s"], out["workers_2"]["throughput_per_s"])
    return out


# ---------------------------------------------------------------- profiling (py-spy)


def start_profiler(ctx: Ctx, target: Process, name: str) -> tuple[subprocess.Popen[bytes], Path, str]:
    profiles = ctx.out / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    output = profiles / f"{name}.txt"
    spy = subprocess.Popen(
        [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(target.pid), "--rate", "200", "--format", "raw",
         "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)
    return spy, output, name


def stop_profiler(ctx: Ctx, spy: tuple[subprocess.Popen[bytes], Path, str]) -> dict[str, Any]:
    from bench.profile import summarize

    process, output, _ = spy
    process.send_signal(2)  # SIGINT: py-spy writes what it has and exits
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    if not output.exists():
        return {"error": "py-spy wrote nothing", "stderr": (process.stderr.read() if process.stderr else b"").decode()}
    return {"file": str(output.relative_to(ctx.out)), **summarize(output)}


def profile_during(ctx: Ctx, target: Process, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    spy = start_profiler(ctx, target, name)
    measured = work()
    out = stop_profiler(ctx, spy)
    out["throughput_under_profiler_per_s"] = measured.get("throughput_per_s")
    return out


# ---------------------------------------------------------------- the run


def machine_facts(databases: list[str]) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
        return done.stdout.strip()

    models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")]  # fmt: skip
    facts: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": models[0] if models else None,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_files": [line[3:] for line in git("status", "--porcelain").splitlines() if line],
    }
    import sqlite3

    import sqlalchemy
    import uvicorn

    facts["sqlite"] = sqlite3.sqlite_version
    facts["sqlalchemy"] = sqlalchemy.__version__
    facts["uvicorn"] = uvicorn.__version__
    for module in ("uvloop", "httptools"):
        try:
            __import__(module)
            facts[module] = True
        except ImportError:
            facts[module] = False
    if "postgres" in databases:
        done = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        facts["postgres"] = done.stdout.strip() or None
    return facts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated: " + ",".join(BENCHMARKS))
    parser.add_argument("--db", default=",".join(DATABASES), help="comma-separated: sqlite,postgres")
    parser.add_argument("--quick", action="store_true", help="small sizes and short windows (a minute or two)")
    parser.add_argument("--log-level", default="warning", help="VARSEL_LOG_LEVEL of the varsel processes")
    parser.add_argument("--profile", action="store_true", help="also profile the API and a worker with py-spy")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--pythonpath", help="a folder of packages put in front of the venv's in every process")
    args = parser.parse_args(argv)
    args.only = [b for b in args.only.split(",") if b]
    args.db = [d for d in args.db.split(",") if d]
    for name in args.only:
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name!r}")
    for name in args.db:
        if name not in DATABASES:
            parser.error(f"unknown database {name!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.console import bench_console
    from bench.instant import bench_instant  # it imports this module's helpers
    from bench.webhooks import bench_webhooks

    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / stamp
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="varsel-bench-"))
    ctx = Ctx(out, tmp, QUICK if args.quick else FULL, args.log_level, args.profile, args.pythonpath)
    began = time.time()
    ctx.results["meta"] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "benchmarks": args.only,
        "databases": args.db,
        "log_level": args.log_level,
        "pythonpath": args.pythonpath,
        "load_average_at_start": os.getloadavg(),
        "sizes": ctx.sizes.__dict__,
        "machine": machine_facts(args.db),
        "code": code_state(),
        "sms_client_library": sms_client_library(),
    }
    ctx.say(f"results in {out}")
    created: list[str] = []
    failed = False
    try:
        if "postgres" in args.db:
            leftovers = asyncio.run(data.drop_leftover_databases())
            if leftovers:
                ctx.say(f"dropped databases left by an earlier run: {', '.join(leftovers)}")
        for db_kind in args.db:
            per_db: dict[str, Any] = ctx.results.setdefault(db_kind, {})
            url = asyncio.run(data.create_database(db_kind, f"{stamp.lower()}_{os.getpid()}", tmp / "db"))
            created.append(url)
            env = varsel_env(ctx, url)
            subprocess.run([VARSEL, "migrate"], env=env, check=True, capture_output=True)
            numbers: list[str] = []
            if "intake" in args.only or "chain" in args.only:
                ctx.say(f"{db_kind}: importing {ctx.sizes.persons} persons into the registry")
                registry = tmp / "registry.jsonl"
                numbers = data.write_registry(registry, ctx.sizes.persons)
                subprocess.run([VARSEL, "registry", "import", str(registry)], env=env, check=True, capture_output=True)
                asyncio.run(_on_bench_db(url, BenchDb.analyze_registry))
            steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("intake", functools.partial(bench_intake, ctx, db_kind, url, numbers)),
                ("chain", functools.partial(bench_chain, ctx, db_kind, url, numbers)),
                ("feed", functools.partial(bench_feed, ctx, db_kind, url)),
                ("instant", functools.partial(bench_instant, ctx, db_kind, url)),
                ("dispatch", functools.partial(bench_dispatch, ctx, url, db_kind)),
                ("lag", functools.partial(bench_lag, ctx, url, db_kind)),
                ("console", functools.partial(bench_console, ctx, db_kind, url)),
                ("webhooks", functools.partial(bench_webhooks, ctx, db_kind, url)),
            ]
            if db_kind == "postgres":
                steps.append(("scaling", functools.partial(bench_scaling, ctx, url)))
            for name, step in steps:
                if name not in args.only:
                    continue
                step_began = time.time()
                state = code_state()
                try:
                    per_db[name] = step()
                except Exception as error:  # one failed benchmark must not lose the others' figures
                    failed = True
                    ctx.say(f"{db_kind} {name} FAILED: {error!r}")
                    per_db[name] = {"error": repr(error)}
                per_db[name]["duration_s"] = round(time.time() - step_began, 1)
                per_db[name]["code"] = state
                if code_state() != state:
                    per_db[name]["code_changed_during_step"] = code_state()
                    ctx.say(f"{db_kind} {name}: the code changed while it ran (others work in this tree)")
    finally:
        for url in created:
            try:
                asyncio.run(data.drop_database(url))
            except Exception as error:
                ctx.say(f"could not drop {url}: {error!r}")
        data.remove_folder(tmp)
        ctx.results["meta"]["duration_s"] = round(time.time() - began, 1)
        report.write(ctx.results, out)
        latest = args.out / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    print(report.table(ctx.results))
    ctx.say(f"wrote {out / 'results.json'}, {out / 'chart.png'} and {out / 'table.md'}")
    return 1 if failed else 0
