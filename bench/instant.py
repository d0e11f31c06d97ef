"""The instant step (issue #16): v2 instant SMS orders (POST /future/orders/instant/sms), which the API process
hands to the SMS provider while the caller waits, against the loopback LINK Mobility peer with 0 and 100 ms of
added latency.

For each peer latency, in one run with one peer process and one API process, one after the other:

* the peer alone: the load generator's raw keep-alive connections posting LINK Mobility's JSON straight to the
  peer at the offered rate (what the peer and loopback add: the peer's own latency);
* a bare client: the HTTP client library varsel's adapter uses, with a pool as large as the adapter's, posting the
  same JSON to the same peer at the same rate (bench.paced_client): what a caller calling the provider directly
  would see;
* varsel: instant SMS orders at the same rate through the API (each with an idempotencyId of its own), open loop,
  so the latency counts from when a request was due (no coordinated omission);
* the bare client and varsel again at LOWER_RATES, to show how varsel's latency grows with the rate;
* varsel's maximum: the same orders in a closed loop (each connection sends its next order when the last is
  answered), with enough connections that the peer's latency does not bound it.

The issue's goal: at 200 orders/s, varsel's p99 within 10 ms of the bare client's p99. The guard's max_concurrency
(VARSEL_SMS__GUARD__MAX_CONCURRENCY, 50 by default) is set to GUARD_CONCURRENCY so it is not the limit: at 200/s and
100 ms about 20 calls are under way, more in a burst.

This module's top imports nothing heavy: bench.report reads its rows and targets from here.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.common import CpuMeter
    from bench.run import Ctx

RATE = 200
GOAL_MS = 10.0
PEER_LATENCIES_MS = (0.0, 100.0)
# Also measured, varsel and the bare client each, to show how the latency grows with the rate.
LOWER_RATES = (50, 100)
# The guard's cap on calls under way (and so the adapter's connection pool): far above the ~20 the offered rate
# keeps under way at 100 ms, and above what the closed loop keeps under way.
GUARD_CONCURRENCY = 200
# Load generator connections at the fixed rate: each holds one request at a time; 128 cover 200/s at 640 ms each.
OPEN_CONNECTIONS = 128
# Closed loop: with no peer latency the API's CPU bounds it long before 32 connections do; with 100 ms, 200
# connections allow up to 2,000 orders/s, far above what one API process does.
CLOSED_CONNECTIONS = {0.0: 32, 100.0: 200}
PHONE = "+4799999999"
TTL_SECONDS = 300
# PostgreSQL only: raw durable commits per second made beside varsel's window (bench.commit_prober), and the latency
# from which a commit of the prober's, or a request of varsel's (beyond the peer's added latency), counts as slow.
PROBE_RATE = 20
SLOW_MS = 20.0
SMS_TEXT = "Your code is 123456"
PATH = "/notifications/api/v1/future/orders/instant/sms"


def order_body(marker: str) -> str:
    return json.dumps({"idempotencyId": f"bench-{marker}",
                       "recipientSms": {"phoneNumber": PHONE, "timeToLiveInSeconds": TTL_SECONDS,
                                        "smsSettings": {"body": SMS_TEXT}}})  # fmt: skip


def paced(ctx: Ctx, config: dict[str, Any], meter: CpuMeter) -> dict[str, Any]:
    """The bare client in its own process at the fixed rate; the peer's CPU over its measured window."""
    from bench.common import PYTHON, ROOT, CpuMeter
    from bench.run import child_env

    path = ctx.tmp / "paced_client.json"
    path.write_text(json.dumps(config))
    client = subprocess.Popen([PYTHON, "-m", "bench.paced_client", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=ROOT, env=child_env(ctx))  # fmt: skip
    assert client.stdout is not None
    first = json.loads(client.stdout.readline() or b"{}")
    cpu: dict[str, float] = {}
    if "window_start" in first:
        time.sleep(max(0.0, first["window_start"] - time.time()))
        before = meter.snapshot()
        time.sleep(max(0.0, first["window_start"] + first["window_s"] - time.time()))
        cpu = CpuMeter.shares(before, meter.snapshot())
    out, err = client.communicate(timeout=120)
    if client.returncode != 0:
        raise RuntimeError(f"paced client failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    cpu.pop("server", None)  # the API is idle meanwhile
    cpu["client"] = result["cpu_share"]
    result["cpu"] = cpu
    return result


def probe(port: int, bearer: str) -> tuple[int, str]:
    """One instant order, to see that the endpoint answers 201 before measuring anything."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{PATH}", data=order_body(f"probe-{uuid.uuid4()}").encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")


def bench_instant(ctx: Ctx, db_kind: str, url: str) -> dict[str, Any]:
    from bench.run import sms_client_library

    results: dict[str, Any] = {"log_level": ctx.log_level, "rate_per_s": RATE, "lower_rates": LOWER_RATES,
                               "window_s": ctx.sizes.instant_s, "warmup_s": ctx.sizes.warmup_s,
                               "guard_max_concurrency": GUARD_CONCURRENCY,
                               "connections_fixed_rate": OPEN_CONNECTIONS, "goal_p99_over_bare_ms": GOAL_MS,
                               "sms_client_library": sms_client_library()}  # fmt: skip
    for latency in PEER_LATENCIES_MS:
        results[f"peer_{int(latency)}ms"] = _with_peer(ctx, db_kind, url, latency, results["sms_client_library"])
    return results


def _clean(url: str) -> None:
    """Let the orders in flight finish, then empty the tables for the next run."""
    import asyncio

    from bench.data import BenchDb
    from bench.run import _on_bench_db, _settle

    asyncio.run(_settle(url))
    asyncio.run(_on_bench_db(url, BenchDb.truncate))


def _with_peer(ctx: Ctx, db_kind: str, url: str, latency: float, library: str) -> dict[str, Any]:
    """Every measurement with one peer (holding its answers back by `latency`) and one API process."""
    from bench.common import VARSEL, CpuMeter, free_port, start, wait_http_ok
    from bench.run import UNIQUE_MARKER, load, profile_during, provider_env, start_peer, token, varsel_env

    window = ctx.sizes.instant_s
    run: dict[str, Any] = {"peer_latency_ms": latency}
    bodies = [order_body(UNIQUE_MARKER)]
    peer_body = json.dumps(dict(_peer_json(), refId="00000000-0000-0000-0000-000000000000"))
    peer_headers = {"Content-Type": "application/json", "Authorization": "Basic YmVuY2g6YmVuY2g="}
    peer = start_peer(ctx, latency, f"{db_kind}-peer-instant-{int(latency)}ms")
    api = None
    try:
        env = varsel_env(ctx, url, **provider_env(peer.http_port, peer.smtp_port),
                         VARSEL_SMS__GUARD__MAX_CONCURRENCY=str(GUARD_CONCURRENCY))  # fmt: skip
        bearer = token(ctx, env)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
        port = free_port()
        # `varsel api` as an operator runs it: it builds the configured providers, since it sends instant orders.
        api = start(f"{db_kind}-api-instant-{int(latency)}ms", [VARSEL, "api", "--port", str(port)], env, ctx.logs)
        wait_http_ok(f"http://127.0.0.1:{port}/health/ready", api.popen)
        _clean(url)
        status, answer = probe(port, bearer)
        at_peer = peer.stats()["sms"]
        if status != 201 or at_peer != 1:
            raise RuntimeError(
                f"the probe order: {status} {answer[:300]!r}, {at_peer} SMS at the peer (want 201 and 1)"
            )
        meter = CpuMeter({"server": [api.pid], "peer": [peer.process.pid]}, include_postgres=db_kind == "postgres")
        varsel = functools.partial(load, ctx, port, PATH, headers, bodies, meter, connections=OPEN_CONNECTIONS,
                                   duration=window, unique=UNIQUE_MARKER)  # fmt: skip

        ctx.say(f"{db_kind} instant, peer +{latency:g} ms: the peer alone (raw client) at {RATE}/s")
        raw = load(ctx, peer.http_port, "/sms/send", peer_headers, [peer_body], meter, mode="open", rate=RATE,
                   connections=OPEN_CONNECTIONS, duration=window)  # fmt: skip
        raw["cpu"].pop("server", None)
        run["peer_alone"] = raw

        def at_rate(rate: int) -> tuple[dict[str, Any], dict[str, Any]]:
            """The bare client, then varsel, at `rate`; with varsel's, what it stored and what reached the peer."""
            ctx.say(f"{db_kind} instant, peer +{latency:g} ms: a bare {library} client at {rate}/s")
            bare = paced(ctx, {"base_url": f"http://127.0.0.1:{peer.http_port}", "rate": rate,
                               "warmup": ctx.sizes.warmup_s, "duration": window, "connections": GUARD_CONCURRENCY,
                               "text": SMS_TEXT, "validity_ms": TTL_SECONDS * 1000, "library": library},
                         meter)  # fmt: skip
            ctx.say(f"{db_kind} instant, peer +{latency:g} ms: varsel at {rate} orders/s (open loop)")
            _clean(url)
            before = peer.stats()["sms"]
            prober = _start_prober(ctx, url, rate) if db_kind == "postgres" else None
            # Slow: SLOW_MS beyond what the peer itself takes.
            fixed = varsel(mode="open", rate=rate, slow_ms=SLOW_MS + latency)
            if prober is not None:
                fixed["commit_probe"] = _attribute(fixed, _prober_result(prober))
            else:
                fixed["slow_requests"] = len(fixed.pop("slow", []))
            fixed.update(_stored(url))
            arrivals = sorted(t for _, t in peer.dump()["sms"][before:])
            fixed["sms_at_peer"] = len(arrivals)
            # What the generator calls throughput counts the answers to requests due in its window, however late;
            # the rate the provider calls went out at, first to last, says whether varsel kept up.
            if len(arrivals) > 1:
                fixed["achieved_per_s"] = round((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 1)
            return bare, fixed

        run["bare_client"], run["varsel"] = at_rate(RATE)
        run["p99_over_bare_ms"] = _diff(run["varsel"], run["bare_client"])
        run["p99_over_peer_alone_ms"] = _diff(run["varsel"], raw)
        # Below the goal's rate: how the latency grows with the rate (what queueing in the API adds).
        run["lower_rates"] = {}
        for rate in LOWER_RATES:
            bare, fixed = at_rate(rate)
            run["lower_rates"][str(rate)] = {"bare_client": bare, "varsel": fixed,
                                             "p99_over_bare_ms": _diff(fixed, bare)}  # fmt: skip

        connections = CLOSED_CONNECTIONS[latency]
        ctx.say(f"{db_kind} instant, peer +{latency:g} ms: varsel's maximum (closed loop, {connections} conn.)")
        _clean(url)
        run["varsel_max"] = varsel(mode="closed", connections=connections)
        if ctx.profile:
            _clean(url)
            ctx.say(f"{db_kind} instant, peer +{latency:g} ms: profiling the API at {RATE}/s with py-spy")
            work = functools.partial(varsel, mode="open", rate=RATE)
            run["profile"] = profile_during(ctx, api, f"{db_kind}-instant-{int(latency)}ms", work)
        _clean(url)
    finally:
        if api is not None:
            api.stop()
        peer.process.stop()
    return run


def _start_prober(ctx: Ctx, url: str, rate: int) -> subprocess.Popen[bytes]:
    """bench.commit_prober beside varsel for the load generator's warm-up and window (and a second more)."""
    from bench.common import PYTHON, ROOT
    from bench.run import child_env

    config = {"dsn": url.replace("postgresql+asyncpg://", "postgresql://"), "rate": PROBE_RATE,
              "duration": ctx.sizes.warmup_s + ctx.sizes.instant_s + 1.0, "slow_ms": SLOW_MS}  # fmt: skip
    path = ctx.tmp / f"commit_prober_{rate}.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen([PYTHON, "-m", "bench.commit_prober", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=child_env(ctx))  # fmt: skip


def _prober_result(prober: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = prober.communicate(timeout=120)
    if prober.returncode != 0:
        return {"error": err.decode()[-500:]}
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def _attribute(run: dict[str, Any], probe: dict[str, Any]) -> dict[str, Any]:
    """How many of varsel's slow requests were under way while a raw commit of the prober's was slow too (the
    database's flush stalled): each request and each slow commit is a span of wall-clock time; overlapping spans
    count. The load generator's list of slow requests is replaced by the counts."""
    slow = run.pop("slow", [])
    stalls = probe.get("stalls", [])
    during = sum(1 for due, ms in slow if any(at < due + ms / 1000 and due < at + took / 1000 for at, took in stalls))
    probe.update(slow_requests=len(slow), slow_requests_during_stalls=during, stall_count=len(stalls),
                 stalls=stalls[:50])  # fmt: skip
    return probe


def _stored(url: str) -> dict[str, Any]:
    """What a run stored (chains, orders by type) and the SMS notifications' statuses, once it settled."""
    import asyncio

    from bench.data import BenchDb
    from bench.run import _on_bench_db, _settle

    asyncio.run(_settle(url))
    return {"stored": asyncio.run(_on_bench_db(url, BenchDb.stored)),
            "sms_statuses": asyncio.run(_on_bench_db(url, lambda b: b.statuses("sms")))}  # fmt: skip


def _peer_json() -> dict[str, Any]:
    from bench.paced_client import sms_body

    return sms_body(SMS_TEXT, TTL_SECONDS * 1000)


def _diff(run: dict[str, Any], baseline: dict[str, Any]) -> float | None:
    a = run.get("latency", {}).get("p99_ms")
    b = baseline.get("latency", {}).get("p99_ms")
    if a is None or b is None or a != a or b != b:  # NaN when nothing was measured
        return None
    return round(float(a) - float(b), 2)


# ---------------------------------------------------------------- the report's rows and targets


def _lat(run: dict[str, Any]) -> str:
    latency = run.get("latency") or {}
    return f"p50 {latency.get('p50_ms', '-')} ms, p99 {latency.get('p99_ms', '-')} ms"


def _cpu(cpu: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in (cpu or {}).items())


def _bad(run: dict[str, Any]) -> str:
    bad = sum(n for status, n in run.get("statuses", {}).items() if not status.startswith("2"))
    bad += run.get("unanswered", 0) + run.get("lost_connections", 0) + sum(run.get("errors", {}).values())
    return f", {bad} errors" if bad else ""


def instant_rows(db: str, step: dict[str, Any]) -> Iterator[list[str]]:
    """Rows of the results table: varsel at the fixed rate beside the bare client and the peer alone; the maximum."""
    if "error" in step:
        yield [db, "instant SMS", "failed: " + step["error"][:80], "", "", "", ""]
    for latency in PEER_LATENCIES_MS:
        run = step.get(f"peer_{int(latency)}ms")
        if not isinstance(run, dict) or "varsel" not in run:
            continue
        varsel, bare, raw = run["varsel"], run.get("bare_client", {}), run.get("peer_alone", {})
        rate = step.get("rate_per_s", RATE)
        done = varsel.get("throughput_per_s")
        cost = _cost(varsel)
        cap = step.get("guard_max_concurrency")
        achieved = varsel.get("achieved_per_s")
        kept = f"{achieved:,.0f}/s at the peer" if achieved else f"{done:,.0f}/s done"
        yield [db, f"instant SMS, peer +{latency:g} ms, {rate}/s offered (guard cap {cap})",
               f"{_lat(varsel)}, max {varsel['latency'].get('max_ms')} ms ({kept}){cost}{_bad(varsel)}",
               f"bare {bare.get('library', '')} client {_lat(bare)}{_bad(bare)}; peer alone (raw) {_lat(raw)}"
               + _probe(varsel),
               f"p99 {_signed(run.get('p99_over_bare_ms'))} ms vs bare",
               f"p99 <= bare p99 + {step.get('goal_p99_over_bare_ms', GOAL_MS):g} ms",
               _cpu(varsel.get("cpu"))]  # fmt: skip
        for lower, pair in (run.get("lower_rates") or {}).items():
            low, low_bare = pair["varsel"], pair["bare_client"]
            achieved = low.get("achieved_per_s")
            yield [db, f"instant SMS, peer +{latency:g} ms, {lower}/s offered",
                   f"{_lat(low)}, max {low['latency'].get('max_ms')} ms"
                   + (f" ({achieved:,.0f}/s at the peer)" if achieved else "") + _cost(low) + _bad(low),
                   f"bare {low_bare.get('library', '')} client {_lat(low_bare)}{_bad(low_bare)}" + _probe(low),
                   f"p99 {_signed(pair.get('p99_over_bare_ms'))} ms vs bare", "", _cpu(low.get("cpu"))]  # fmt: skip
        top = run.get("varsel_max")
        if isinstance(top, dict):
            done = top.get("throughput_per_s")
            cost = _cost(top)
            yield [db, f"instant SMS, peer +{latency:g} ms, maximum (closed loop, {top['connections']} conn.)",
                   f"{done:,.0f} orders/s{cost}, {_lat(top)}{_bad(top)}", "", "", "", _cpu(top.get("cpu"))]  # fmt: skip


def _probe(run: dict[str, Any]) -> str:
    """The raw commits made beside varsel's window, and how many of its slow requests fell on a slow one."""
    probe = run.get("commit_probe")
    if not isinstance(probe, dict) or "latency" not in probe:
        return ""
    limit = f"{probe.get('slow_ms', SLOW_MS):g}"
    return (f"; raw commits beside it ({probe['rate']:g}/s): {_lat(probe)}, max {probe['latency'].get('max_ms')} ms,"
            f" {probe['stall_count']} over {limit} ms; {probe['slow_requests_during_stalls']} of varsel's"
            f" {probe['slow_requests']} requests over {limit} ms (beyond the peer's latency) were under way"
            " during one")  # fmt: skip


def _cost(run: dict[str, Any]) -> str:
    """The API's CPU per order over the measured window. At a fixed rate the generator's throughput counts every
    answer to a request due in the window, however late; when varsel fell behind, the orders it got through in the
    window are fewer, so the rate the provider calls went out at is used when it is lower."""
    server = (run.get("cpu") or {}).get("server")
    done = run.get("throughput_per_s")
    achieved = run.get("achieved_per_s")
    if achieved and done:
        done = min(done, achieved)
    return f" ({1000 * server / done:.2f} ms API CPU each)" if server and done else ""


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def instant_targets(db: str, step: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for latency in PEER_LATENCIES_MS:
        run = step.get(f"peer_{int(latency)}ms")
        if not isinstance(run, dict) or "varsel" not in run:
            continue
        value = run.get("p99_over_bare_ms")
        goal = step.get("goal_p99_over_bare_ms", GOAL_MS)
        out.append({"db": db, "target": f"instant SMS p99 - bare client p99 at {step.get('rate_per_s', RATE)}/s, "
                    f"peer +{latency:g} ms (ms)", "value": value, "goal": f"<= {goal:g}",
                    "met": None if value is None else value <= goal})  # fmt: skip
    return out
