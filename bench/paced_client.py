"""A bare client calling the SMS peer at a fixed rate, in a process of its own: `python -m bench.paced_client CONFIG`.

The baseline of the instant step: what a caller that talks to LINK Mobility directly would see at the same rate,
with the HTTP client library varsel's adapter uses (aiohttp since varsel.providers.http; `"library"` in the config)
and a connection pool as large as the adapter's (the guard's max_concurrency), posting the same JSON with basic
auth. No database, no guard, no API in front.

Open loop, as the load generator's open mode: request i is due at start + i / rate whatever the peer does, gets a
task of its own then, and its latency counts from when it was due, so a slow answer shows as latency and never as
fewer requests (no coordinated omission). Requests due in the warm-up are sent but not counted.

Standard output: first a line with the measured window's wall-clock start (so the caller can read other processes'
CPU over it), then the result as JSON: throughput, latency percentiles, statuses, the client's own CPU share.
"""

from __future__ import annotations

import asyncio
import collections
import json
import resource
import sys
import time
import uuid
from typing import Any

from bench.common import summarize_ms
from bench.data import MOBILE


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sms_body(text: str, validity_ms: int) -> dict[str, Any]:
    """LINK Mobility's JSON as varsel's adapter posts it (varsel.providers.linkmobility)."""
    return {
        "source": "Varsel",
        "sourceTON": "ALPHANUMERIC",
        "destination": MOBILE,
        "destinationTON": "MSISDN",
        "userData": text,
        "dcs": "TEXT",
        "platformId": "bench",
        "platformPartnerId": "bench",
        "refId": str(uuid.uuid4()),
        "relativeValidityTime": validity_ms,
        "ignoreResponse": False,
        "useDeliveryReport": False,
    }


class _Paced:
    def __init__(self, config: dict[str, Any]) -> None:
        self.url: str = config["base_url"] + "/sms/send"
        self.rate: float = config["rate"]
        self.warmup: float = config["warmup"]
        self.duration: float = config["duration"]
        self.connections: int = config["connections"]
        self.text: str = config["text"]
        self.validity_ms: int = config["validity_ms"]
        self.library: str = config.get("library") or "aiohttp"
        self.loop = asyncio.get_running_loop()
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.record_from = 0.0
        self.record_until = 0.0

    def _record(self, intended: float, status: int | None, error: str | None = None) -> None:
        now = self.loop.time()
        if self.record_from <= intended < self.record_until:
            if status is not None:
                self.statuses[status] += 1
                if 200 <= status < 300:
                    self.latencies.append(now - intended)
            if error is not None:
                self.errors[error] += 1

    async def run(self) -> dict[str, Any]:
        if self.library == "aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.connections)
            auth = aiohttp.BasicAuth("bench", "bench")
            async with aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=30)) as session:  # fmt: skip

                async def one(intended: float) -> None:
                    try:
                        async with session.post(self.url, json=sms_body(self.text, self.validity_ms),
                                                auth=auth) as response:  # fmt: skip
                            await response.read()
                            self._record(intended, response.status)
                    except Exception as error:  # counted, never raised: one failure must not end the run
                        self._record(intended, None, type(error).__name__)

                return await self._pace(one)
        import httpx

        limits = httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as client:
            basic = httpx.BasicAuth("bench", "bench")

            async def one_httpx(intended: float) -> None:
                try:
                    response = await client.post(self.url, json=sms_body(self.text, self.validity_ms), auth=basic)
                    self._record(intended, response.status_code)
                except Exception as error:
                    self._record(intended, None, type(error).__name__)

            return await self._pace(one_httpx)

    async def _pace(self, one: Any) -> dict[str, Any]:
        start = self.loop.time() + 0.2
        self.record_from = start + self.warmup
        self.record_until = self.record_from + self.duration
        window_start = time.time() + (self.record_from - self.loop.time())
        sys.stdout.write(json.dumps({"window_start": window_start, "window_s": self.duration}) + "\n")
        sys.stdout.flush()
        total = int(self.rate * (self.warmup + self.duration))
        tasks: set[asyncio.Task[None]] = set()
        cpu_at_start: float | None = None
        for i in range(total):
            intended = start + i / self.rate
            delay = intended - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if cpu_at_start is None and intended >= self.record_from:
                cpu_at_start = _cpu()
            task = self.loop.create_task(one(intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        used = _cpu() - (cpu_at_start if cpu_at_start is not None else _cpu())
        ok = len(self.latencies)
        return {
            "library": self.library,
            "mode": "open",
            "rate": self.rate,
            "connections": self.connections,
            "duration_s": self.duration,
            "ok": ok,
            "throughput_per_s": round(ok / self.duration, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "unanswered": len(tasks),
            "latency": summarize_ms(self.latencies),
            "cpu_seconds": round(used, 3),
            "cpu_share": round(used / self.duration, 3),
        }


async def _main(config: dict[str, Any]) -> dict[str, Any]:
    return await _Paced(config).run()


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    result = asyncio.run(_main(config))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
