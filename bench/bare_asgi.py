"""The HTTP ceiling: a bare ASGI callable that reads and parses the same JSON body and answers 202 as varsel does,
served by uvicorn with the settings `varsel api` uses. `python -m bench.bare_asgi --port P [--log-level L]
[--page FILE]`.

With --page, a GET is answered with the JSON of that file (a page of the status feed as varsel answered it), loaded
once and serialised again for every request: the ceiling of a feed reader, HTTP and JSON encoding of the same page."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import uvicorn

_HEADERS = [(b"content-type", b"application/json")]
_PAGE: list[Any] | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "GET" and _PAGE is not None:
        page = json.dumps(_PAGE, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_HEADERS, (b"content-length", str(len(page)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": page})
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
    parser.add_argument("--page", help="a JSON file answered (serialised anew) to every GET")
    args = parser.parse_args()
    if args.page:
        global _PAGE
        with open(args.page, encoding="utf-8") as f:
            _PAGE = json.load(f)
    # As `varsel api` runs uvicorn (varsel.cli._serve_http): defaults otherwise, so the same loop and HTTP parser.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
