"""A raw durable-commit prober, in a process of its own: `python -m bench.commit_prober CONFIG.json`.

The instant step's PostgreSQL runs store each order, and record its outcome, with commits PostgreSQL makes durable
(a WAL flush each) before the caller is answered: the order must survive a crash before the provider is called.
A commit waits for the disk, and this machine's disk sometimes takes tens of milliseconds to flush. This prober
makes small durable commits of its own, with asyncpg and nothing else, at a low fixed rate while varsel is measured,
and says when a commit took long: a slow answer from varsel at the same moment was the database's flush, which any
design storing before sending pays, not varsel's code.

Config: {"dsn": "postgresql://...", "rate": 20, "duration": 25.0, "slow_ms": 15}. Standard output: one JSON line:
the commits' latency percentiles and the slow ones as [wall-clock start, ms].
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.common import summarize_ms

# About what one instant order writes (its key, order, recipient and notification rows, and their index entries).
ROW = "x" * 2000


async def probe(config: dict[str, Any]) -> dict[str, Any]:
    import asyncpg

    connection = await asyncpg.connect(config["dsn"])
    try:
        # Logged, so that each commit waits for its WAL to be flushed as varsel's do.
        await connection.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (id bigserial PRIMARY KEY, body text)")
        rate, slow = float(config["rate"]), float(config.get("slow_ms", 15)) / 1000
        latencies: list[float] = []
        stalls: list[tuple[float, float]] = []
        start = time.perf_counter()
        end = start + float(config["duration"])
        i = 0
        while True:
            due = start + i / rate
            if due > end:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            began, wall = time.perf_counter(), time.time()
            await connection.execute("INSERT INTO bench_commit_probe (body) VALUES ($1)", ROW)
            took = time.perf_counter() - began
            latencies.append(took)
            if took > slow:
                stalls.append((round(wall, 4), round(took * 1000, 1)))
            i += 1
        await connection.execute("DROP TABLE bench_commit_probe")
    finally:
        await connection.close()
    return {"rate": rate, "latency": summarize_ms(latencies), "slow_ms": slow * 1000, "stalls": stalls}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    json.dump(asyncio.run(probe(config)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
