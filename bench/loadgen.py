"""An HTTP/1.1 load generator that runs in a process of its own: `python -m bench.loadgen CONFIG.json`.

Requests are encoded once up front and sent over keep-alive connections by asyncio protocols (no task and no
parsing library per request), so the generator spends little CPU per request and reports how much it spent.

With `"unique": MARKER` in the config, every request gets a value of its own where MARKER stands in its body (a
fixed-length string: a run-random prefix and a counter, as long as MARKER, so Content-Length holds): a v2 chain's
`idempotencyId`, new for every request however many times the bodies are cycled.

* closed loop (`"mode": "closed"`): every connection sends its next request as soon as the answer to the last one
  is in: the server's saturation throughput.
* open loop (`"mode": "open"`): request i is due at start + i / rate whatever the server does. A request that finds
  no idle connection waits in a backlog, and its latency counts from when it was due, not from when it could be
  sent, so a slow server shows as latency instead of as fewer requests (no coordinated omission).

The answer, as JSON on standard output: completed requests in the measured window, throughput, latency
percentiles, answers by status, and the generator's own CPU seconds and share of one core.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import resource
import socket
import sys
import time
from typing import Any

from bench.common import summarize_ms


def encode_requests(
    host: str, port: int, path: str, headers: dict[str, str], bodies: list[str], method: str = "POST"
) -> list[bytes]:
    out = []
    for body in bodies:
        raw = body.encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(raw)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + raw)
    return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Client(asyncio.Protocol):
    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.intended = 0.0
        self.busy = False
        self._expect: tuple[int, int, int] | None = None  # (end of headers, end of message, status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, payload: bytes, intended: float) -> None:
        assert self.transport is not None
        self.intended = intended
        self.busy = True
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self._expect is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).lower()
                status = int(head[9:12])
                length = 0
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                elif b"transfer-encoding: chunked" in head:
                    raise RuntimeError("chunked answers are not supported by this generator")
                self._expect = (end + 4, end + 4 + length, status)
            start, total, status = self._expect
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[start:total]) if status >= 300 else b""
            del self.buffer[:total]
            self._expect = None
            self.busy = False
            self.generator.completed(self, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)


class Generator:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.host: str = config.get("host", "127.0.0.1")
        self.port: int = config["port"]
        self.payloads = encode_requests(
            self.host, self.port, config["path"], config.get("headers", {}), config["bodies"],
            config.get("method", "POST"),
        )  # fmt: skip
        # Payloads cut around the unique marker: (before, after) each, joined per request with a value of its own.
        marker = config.get("unique")
        self.unique_parts: list[tuple[bytes, bytes]] | None = None
        if marker:
            raw = marker.encode()
            self.unique_parts = [(p[: p.index(raw)], p[p.index(raw) + len(raw) :]) for p in self.payloads]
            self.unique_width = len(raw) - 8
            self.unique_prefix = os.urandom(4).hex().encode()
        self.mode: str = config["mode"]
        self.connections: int = config.get("connections", 32)
        self.warmup: float = config.get("warmup", 1.0)
        self.duration: float = config["duration"]
        self.rate: float = config.get("rate", 0.0)
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Client] = []
        self.backlog: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.error_sample: str | None = None
        self.lost_connections = 0
        self.sent = 0
        self.record_from = float("inf")
        self.record_until = float("inf")
        self.end = float("inf")
        self.clients: list[_Client] = []
        # With "slow_ms": the wall-clock time each slower request was due and its latency (to line up with logs).
        self.slow: float | None = config["slow_ms"] / 1000 if config.get("slow_ms") else None
        self.slow_log: list[tuple[float, float]] = []

    def next_payload(self) -> bytes:
        if self.unique_parts is not None:
            before, after = self.unique_parts[self.sent % len(self.unique_parts)]
            self.sent += 1
            return before + self.unique_prefix + f"{self.sent:0{self.unique_width}x}".encode() + after
        payload = self.payloads[self.sent % len(self.payloads)]
        self.sent += 1
        return payload

    def completed(self, client: _Client, status: int, body: bytes) -> None:
        now = self.loop.time()
        if self.record_from <= client.intended and now <= self.record_until:
            took = now - client.intended
            self.latencies.append(took)
            if self.slow is not None and took > self.slow:
                self.slow_log.append((round(time.time() - took, 4), round(1000 * took, 1)))
            self.statuses[status] += 1
            if status >= 300 and self.error_sample is None:
                self.error_sample = f"{status} {body[:300]!r}"
        if self.mode == "closed":
            if now < self.end:
                client.send(self.next_payload(), now)
            else:
                self.idle.append(client)
            return
        if self.backlog:
            client.send(self.next_payload(), self.backlog.popleft())
        else:
            self.idle.append(client)

    def lost(self, client: _Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
        if client.busy:
            self.lost_connections += 1
        if client in self.idle:
            self.idle.remove(client)
        if self.loop.time() < self.end:
            self.loop.create_task(self._replace())

    async def _replace(self) -> None:
        client = await self._connect()
        if self.mode == "closed" and self.loop.time() < self.end:
            client.send(self.next_payload(), self.loop.time())
        elif self.backlog:
            client.send(self.next_payload(), self.backlog.popleft())
        else:
            self.idle.append(client)

    async def _connect(self) -> _Client:
        _, client = await self.loop.create_connection(lambda: _Client(self), self.host, self.port)
        self.clients.append(client)
        return client

    async def run(self) -> dict[str, Any]:
        for _ in range(self.connections):
            self.idle.append(await self._connect())
        start = self.loop.time() + 0.01
        self.record_from = start + self.warmup
        if self.mode == "closed":
            self.record_until = self.end = self.record_from + self.duration
        else:
            # Every request due in the window counts, however late its answer comes.
            self.record_until = self.end = float("inf")
        # Tell the caller when the measured window starts (wall clock), so it can read other processes' CPU over it.
        window_start = time.time() + (self.record_from - self.loop.time())
        sys.stdout.write(json.dumps({"window_start": window_start, "window_s": self.duration}) + "\n")
        sys.stdout.flush()
        cpu_at_start = None
        if self.mode == "closed":
            await asyncio.sleep(max(0.0, start - self.loop.time()))
            while self.idle:
                self.idle.pop().send(self.next_payload(), self.loop.time())
            await asyncio.sleep(max(0.0, self.record_from - self.loop.time()))
            cpu_at_start = _cpu_seconds()
            await asyncio.sleep(max(0.0, self.record_until - self.loop.time()))
            cpu_used = _cpu_seconds() - cpu_at_start
        else:
            total = int(self.rate * (self.warmup + self.duration))
            i = 0
            while i < total:
                now = self.loop.time()
                if cpu_at_start is None and now >= self.record_from:
                    cpu_at_start = _cpu_seconds()
                due = min(total, int((now - start) * self.rate) + 1)
                while i < due:
                    intended = start + i / self.rate
                    if self.idle:
                        self.idle.pop().send(self.next_payload(), intended)
                    else:
                        self.backlog.append(intended)
                    i += 1
                await asyncio.sleep(max(0.0, start + i / self.rate - self.loop.time()))
            # Answers still to come belong to the measurement: wait for them (bounded), then stop the clock.
            drain_until = self.loop.time() + 30.0
            while (self.backlog or any(c.busy for c in self.clients)) and self.loop.time() < drain_until:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            cpu_used = _cpu_seconds() - (cpu_at_start if cpu_at_start is not None else _cpu_seconds())
            self.end = 0.0
        # In closed mode requests in flight at the end are not counted; in open mode, unanswered ones are errors.
        unanswered = len(self.backlog) + sum(1 for c in self.clients if c.busy) if self.mode == "open" else 0
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.close()
        completed = sum(self.statuses.values())
        window = self.duration if self.mode == "closed" else max(self.duration, 1e-9)
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return {
            "mode": self.mode,
            "connections": self.connections,
            "rate": self.rate if self.mode == "open" else None,
            "duration_s": self.duration,
            "completed": completed,
            "ok": ok,
            "throughput_per_s": round(ok / window, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "unanswered": unanswered,
            "lost_connections": self.lost_connections,
            "error_sample": self.error_sample,
            "latency": summarize_ms(self.latencies),
            "cpu_seconds": round(cpu_used, 3),
            "cpu_share": round(cpu_used / window, 3),
            **({"slow": self.slow_log} if self.slow is not None else {}),
        }


async def _main(config: dict[str, Any]) -> dict[str, Any]:
    return await Generator(config).run()


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    result = asyncio.run(_main(config))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
