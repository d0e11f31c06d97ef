"""The HTTP ceiling: a bare ASGI callable that reads and parses the same JSON body and answers 202 as varsel does,
served by uvicorn with the settings `varsel api` uses. `python -m bench.bare_asgi --port P [--log-level L]`."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import uvicorn

_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    json.loads(body)
    order_id = str(uuid.uuid4())
    answer = json.dumps({"orderId": order_id, "recipientLookup": {"status": "Success"}}).encode()
    location = f"http://127.0.0.1/notifications/api/v1/orders/{order_id}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [*_HEADERS, (b"location", location), (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    # As `varsel api` runs uvicorn (varsel.cli._serve_http): defaults otherwise, so the same loop and HTTP parser.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
