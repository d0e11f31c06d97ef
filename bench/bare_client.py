"""The provider ceiling: a bare client sends the same number of messages to the same peer with the same concurrency
as varsel's sender (no database, no claims, no bookkeeping). In a process of its own:
`python -m bench.bare_client CONFIG.json`, answering JSON on standard output.

SMS: the HTTP client library varsel's LINK Mobility adapter uses (aiohttp since varsel.providers.http,
httpx before; `"library"` in the config) posting LINK Mobility's JSON with basic auth, at most `concurrency`
calls under way (the provider guard's MAX_CONCURRENCY, 50 by default). Email: aiosmtplib over `connections`
reused SMTP sessions (the SMTP provider's pool, 10 by default), one transaction per message.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import uuid
from typing import Any

import aiosmtplib
import httpx

from bench.data import EMAIL, EMAIL_BODY, EMAIL_SUBJECT, MOBILE, SMS_BODY


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sms_body() -> dict[str, Any]:
    return {
        "source": "Varsel",
        "sourceTON": "ALPHANUMERIC",
        "destination": MOBILE,
        "destinationTON": "MSISDN",
        "userData": SMS_BODY,
        "dcs": "TEXT",
        "platformId": "bench",
        "platformPartnerId": "bench",
        "refId": str(uuid.uuid4()),
        "relativeValidityTime": 172_800_000,
        "ignoreResponse": False,
        "useDeliveryReport": False,
    }


async def _sms_aiohttp(base_url: str, count: int, concurrency: int) -> None:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    auth = aiohttp.BasicAuth("bench", "bench")
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one() -> None:
            async with gate, session.post(f"{base_url}/sms/send", json=_sms_body(), auth=auth) as response:
                response.raise_for_status()
                await response.json()

        await asyncio.gather(*(one() for _ in range(count)))


async def _sms(base_url: str, count: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)
    auth = httpx.BasicAuth("bench", "bench")
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:

        async def one() -> None:
            async with gate:
                response = await client.post(f"{base_url}/sms/send", json=_sms_body(), auth=auth)
                response.raise_for_status()
                response.json()

        await asyncio.gather(*(one() for _ in range(count)))


def _email_payload(message_id: str) -> bytes:
    return (
        f"From: noreply@varsel.local\r\nTo: {EMAIL}\r\nSubject: {EMAIL_SUBJECT}\r\n"
        f"Message-ID: <{message_id}@varsel>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{EMAIL_BODY}\r\n"
    ).encode()


async def _email(port: int, count: int, connections: int) -> None:
    remaining = iter(range(count))

    async def session() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=False, start_tls=False,
                                 local_hostname="bench")  # fmt: skip
        await client.connect()
        try:
            for _ in remaining:
                await client.sendmail("noreply@varsel.local", [EMAIL], _email_payload(str(uuid.uuid4())))
        finally:
            await client.quit()

    await asyncio.gather(*(session() for _ in range(connections)))


async def run(config: dict[str, Any]) -> dict[str, Any]:
    count = config["count"]
    cpu, began = _cpu(), time.perf_counter()
    if config["channel"] == "sms" and config.get("library") == "aiohttp":
        await _sms_aiohttp(config["base_url"], count, config["concurrency"])
    elif config["channel"] == "sms":
        await _sms(config["base_url"], count, config["concurrency"])
    else:
        await _email(config["smtp_port"], count, config["concurrency"])
    elapsed = time.perf_counter() - began
    used = _cpu() - cpu
    return {
        "library": (config.get("library") or "httpx") if config["channel"] == "sms" else "aiosmtplib",
        "channel": config["channel"],
        "count": count,
        "concurrency": config["concurrency"],
        "elapsed_s": round(elapsed, 3),
        "throughput_per_s": round(count / elapsed, 1),
        "cpu_share": round(used / elapsed, 3),
    }


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        config = json.load(f)
    json.dump(asyncio.run(run(config)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
