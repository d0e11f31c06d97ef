"""Review (#17) of the usage metrics API's key: a configured key with characters beyond ASCII matches the same key
sent as UTF-8 in X-API-Key (its header bytes were compared as if they were text decoded from UTF-8, so it never did),
and still refuses a near miss."""

from __future__ import annotations

from pathlib import Path

import httpx

from varsel.app import build, create_app
from varsel.clock import FrozenClock
from varsel.db.engine import Database
from varsel.settings import Settings

KEY = "nøkkel-til-målinger-0123456789-æå"


async def test_a_key_beyond_ascii_is_accepted_as_sent(tmp_path: Path, database: Database, clock: FrozenClock) -> None:
    settings = Settings(data_dir=tmp_path / "var", conditions={"allowed_hosts": []}, metrics={"api_key": KEY})
    services = build(settings, clock=clock, database=database)
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            right = await http.post("/notifications/api/v1/metrics/sms", headers={b"X-API-Key": KEY.encode()})
            near = await http.post("/notifications/api/v1/metrics/sms", headers={b"X-API-Key": KEY[:-1].encode()})
    finally:
        await services.http.aclose()
    assert right.status_code == 200, right.text
    assert right.headers["x-total-filetransfer-count"] == "0"
    assert near.status_code == 401
    assert near.json() == {"error": "Invalid API key"}
