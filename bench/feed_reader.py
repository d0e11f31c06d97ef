"""A status feed reader that runs in a process of its own: `python -m bench.feed_reader CONFIG.json`.

It does what a client following the feed does: GET /future/shipment/feed?seq=S&pageSize=P over one keep-alive
connection, S the last sequenceNumber of the page before, until a page comes back empty; then again from seq 0,
whole passes until the window has passed. Against the bare ASGI app (the HTTP ceiling), which answers the same page
to every request, a pass is `pages_per_pass` pages.

The last sequenceNumber and the entries of a page are found in its bytes (the client's JSON parsing is not what is
measured, and it runs in this process, not the server's). The first line on standard output says when the window
starts (so the caller can read the server's CPU over it); the last is the answer as JSON: entries and pages read,
entries per second, page latency percentiles, and the reader's own CPU.
"""

from __future__ import annotations

import http.client
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import summarize_ms

_SEQ = b'"sequenceNumber":'


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _last_seq(body: bytes) -> int:
    at = body.rfind(_SEQ) + len(_SEQ)
    end = at
    while body[end : end + 1].isdigit() or body[end : end + 1] == b" ":
        end += 1
    return int(body[at:end])


def run(config: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", config["port"], timeout=60)
    headers: dict[str, str] = config.get("headers", {})
    page_size: int = config.get("page_size", 500)
    per_pass: int | None = config.get("pages_per_pass")

    def get(seq: int) -> bytes:
        conn.request("GET", f"{config['path']}?seq={seq}&pageSize={page_size}", headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET feed seq={seq}: {response.status} {body[:300]!r}")
        return body

    if config.get("save_page"):
        # One page as varsel answers it, for the bare app to serve (the ceiling of the same bytes).
        Path(config["save_page"]).write_bytes(get(0))
    # Warm-up: one pass (or a few pages), not measured.
    for _ in range(3):
        get(0)
    duration: float = config["duration"]
    began = time.time()
    sys.stdout.write(json.dumps({"window_start": began, "window_s": duration}) + "\n")
    sys.stdout.flush()
    cpu_at_start = _cpu_seconds()
    latencies: list[float] = []
    entries = pages = passes = 0
    while True:
        seq = 0
        read = 0
        while True:
            sent = time.perf_counter()
            body = get(seq)
            latencies.append(time.perf_counter() - sent)
            pages += 1
            found = body.count(_SEQ)
            if found == 0:
                break
            entries += found
            read += 1
            seq = _last_seq(body)
            if per_pass is not None and read >= per_pass:
                break
        passes += 1
        if time.time() - began >= duration:
            break
    elapsed = time.time() - began
    cpu = _cpu_seconds() - cpu_at_start
    conn.close()
    return {
        "page_size": page_size,
        "entries": entries,
        "pages": pages,
        "passes": passes,
        "elapsed_s": round(elapsed, 3),
        "entries_per_s": round(entries / elapsed, 1),
        "throughput_per_s": round(entries / elapsed, 1),
        "page_latency": summarize_ms(latencies),
        "cpu_seconds": round(cpu, 3),
        "cpu_share": round(cpu / elapsed, 3),
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    json.dump(run(config), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
