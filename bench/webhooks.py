"""Webhook delivery throughput (issue #18): events delivered per second by varsel's delivery worker to a loopback
receiver, beside a bare client posting the same signed bodies to the same receiver with the same concurrency, in the
same run.

    python -m bench --only webhooks [--db sqlite,postgres] [--quick]

Three processes of their own: the receiver (an asyncio HTTP/1.1 server answering 204 to every POST, counting them),
varsel's side (the real WebhookDelivery on the bench database: claim an endpoint, renew its hold, POST, record the
attempt and the event's state, one transaction each, endpoints in parallel up to the cap) and the bare client (one
httpx client, the same number of endpoints posted to in parallel, each its events one after another, signed the
same way, no database). The events are written beforehand through the outbox (fan_out), one row per event and
endpoint, and are not timed. Each side's CPU comes from /proc; PostgreSQL's backends are counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import PYTHON, CpuMeter, free_port, start

ENDPOINTS = 20
QUICK_DELIVERIES = 4_000
FULL_DELIVERIES = 40_000
ORG = "bench"


def _payload(n: int) -> dict[str, Any]:
    """A notification.status_changed event's body, of the size the real ones have."""
    return {
        "type": "notification.status_changed",
        "timestamp": datetime(2026, 3, 2, 10, 0, tzinfo=UTC).isoformat(),
        "data": {
            "shipmentId": str(uuid.UUID(int=n)),
            "sendersReference": f"case-{n}",
            "notificationId": str(uuid.UUID(int=n + 1)),
            "channel": "Sms",
            "status": "SMS_Delivered",
            "previousStatus": "SMS_Accepted",
            "destination": "+4799999999",
            "lastUpdate": "2026-03-02T10:00:00Z",
            "type": "Person",
            "nationalIdentityNumber": "07837399275",
        },
    }


# ---------------------------------------------------------------- the receiver


class _Receiver(asyncio.Protocol):
    count = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            assert self.transport is not None
            if head.startswith(b"get /_stats"):
                body = json.dumps({"received": _Receiver.count}).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            else:
                _Receiver.count += 1
                self.transport.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")


async def _receive(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Receiver, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------- varsel's side


async def _varsel(database_url: str, port: int, deliveries: int, endpoints: int, data_dir: Path) -> dict[str, Any]:
    from varsel.app import build
    from varsel.settings import Settings
    from varsel.webhooks.outbox import Event, fan_out

    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        # One service owner with all the endpoints (its limit raised to fit them), all delivered to at once.
        webhooks={
            "allowed_hosts": ["127.0.0.1"],
            "max_concurrent_endpoints": endpoints,
            "max_subscriptions_per_owner": endpoints,
        },
    )
    varsel = build(settings)
    try:
        for index in range(endpoints):
            await varsel.webhooks.create(ORG, f"http://127.0.0.1:{port}/hooks/{index}", ["notification.status_changed"])
        events = deliveries // endpoints
        now = datetime.now(UTC) - timedelta(seconds=1)
        for first in range(0, events, 200):
            batch = [
                Event(ORG, "notification.status_changed", now, _payload(n))
                for n in range(first, min(first + 200, events))
            ]
            async with varsel.database.transaction() as conn:
                await fan_out(conn, batch)
        delivery = varsel.workers.webhooks
        assert delivery is not None
        cpu, began = time.process_time(), time.perf_counter()
        made = await delivery.deliver_due()
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        return {
            "deliveries": made,
            "seconds": round(seconds, 3),
            "per_s": round(made / seconds, 1),
            "cpu_ms_per_delivery": round(cpu * 1000 / max(made, 1), 3),
        }
    finally:
        await varsel.workers.stop()
        await varsel.http.aclose()
        await varsel.database.dispose()


# ---------------------------------------------------------------- the bare client


async def _bare(port: int, deliveries: int, endpoints: int) -> dict[str, Any]:
    import httpx

    from varsel.webhooks.delivery import body_of
    from varsel.webhooks.signing import new_secret, signed_headers

    events = deliveries // endpoints
    secret = new_secret()
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)

    async def endpoint(index: int) -> int:
        posted = 0
        for n in range(events):
            body = body_of(_payload(n))
            headers = signed_headers(str(uuid.uuid4()), datetime.now(UTC), body, [secret])
            headers["Content-Type"] = "application/json"
            url = f"http://127.0.0.1:{port}/hooks/{index}"
            response = await client.post(url, content=body.encode(), headers=headers)
            posted += 1 if 200 <= response.status_code < 300 else 0
        return posted

    try:
        cpu, began = time.process_time(), time.perf_counter()
        made = sum(await asyncio.gather(*(endpoint(i) for i in range(endpoints))))
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        await client.aclose()
    return {
        "deliveries": made,
        "seconds": round(seconds, 3),
        "per_s": round(made / seconds, 1),
        "cpu_ms_per_delivery": round(cpu * 1000 / max(made, 1), 3),
    }


# ---------------------------------------------------------------- the step


def _run_side(ctx: Any, name: str, args: list[str], env: dict[str, str], meter_roles: dict[str, list[int]],
              include_postgres: bool) -> dict[str, Any]:  # fmt: skip
    """Run one side in a process of its own; its JSON answer, with the CPU shares of the roles meanwhile."""
    out = ctx.tmp / f"{name}.json"
    process = start(name, [PYTHON, "-m", "bench.webhooks", *args, "--out", str(out)], env, ctx.logs)
    # The side's own CPU is what it reports (cpu_ms_per_delivery, from its process_time): it has exited by the
    # second snapshot, so /proc no longer has it.
    meter = CpuMeter(meter_roles, include_postgres=include_postgres)
    before = meter.snapshot()
    code = process.popen.wait(timeout=1800)
    after = meter.snapshot()
    if code != 0:
        raise RuntimeError(f"{name} failed ({code}): {process.tail()}")
    answer: dict[str, Any] = json.loads(out.read_text())
    answer["cpu_cores"] = CpuMeter.shares(before, after)
    return answer


def bench_webhooks(ctx: Any, db_kind: str, url: str) -> dict[str, Any]:
    """The `webhooks` step of `python -m bench`."""
    from bench.run import varsel_env

    quick = ctx.sizes.window_s < 10
    deliveries = QUICK_DELIVERIES if quick else FULL_DELIVERIES
    env = varsel_env(ctx, url)
    port = free_port()
    receiver = start(f"{db_kind}-webhook-receiver", [PYTHON, "-m", "bench.webhooks", "receive", "--port", str(port)],
                     env, ctx.logs)  # fmt: skip
    results: dict[str, Any] = {"endpoints": ENDPOINTS, "deliveries": deliveries}
    try:
        time.sleep(0.5)
        ctx.say(f"{db_kind} webhooks: varsel's delivery worker, {deliveries:,} deliveries to {ENDPOINTS} endpoints")
        sides = ["--port", str(port), "--deliveries", str(deliveries), "--endpoints", str(ENDPOINTS)]
        results["varsel"] = _run_side(
            ctx, f"{db_kind}-webhooks-varsel", ["deliver", "--database-url", url, "--data-dir",
                                                str(ctx.tmp / "webhooks-var"), *sides],
            env, {"receiver": [receiver.pid]}, db_kind == "postgres",
        )  # fmt: skip
        ctx.say(f"{db_kind} webhooks: the bare client posting the same signed bodies")
        results["bare_client"] = _run_side(
            ctx, f"{db_kind}-webhooks-bare", ["bare", *sides], env, {"receiver": [receiver.pid]}, False
        )
        results["varsel_per_bare"] = round(results["varsel"]["per_s"] / max(results["bare_client"]["per_s"], 1e-9), 3)
    finally:
        receiver.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__)
    parser.add_argument("role", choices=["receive", "deliver", "bare"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url")
    parser.add_argument("--data-dir", type=Path, default=Path("var-bench-webhooks"))
    parser.add_argument("--deliveries", type=int, default=QUICK_DELIVERIES)
    parser.add_argument("--endpoints", type=int, default=ENDPOINTS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.role == "receive":
        asyncio.run(_receive(args.port))
        return
    if args.role == "deliver":
        answer = asyncio.run(_varsel(args.database_url, args.port, args.deliveries, args.endpoints, args.data_dir))
    else:
        answer = asyncio.run(_bare(args.port, args.deliveries, args.endpoints))
    text = json.dumps(answer)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
