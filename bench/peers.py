"""Lean loopback peers in a process of their own: `python -m bench.peers --http-port P --smtp-port Q [--latency-ms L]`.

* An HTTP/1.1 server that answers LINK Mobility's `POST /sms/send` as the real API does (200 with a messageId),
  keyed by the request's refId (varsel's notification id).
* An SMTP server that speaks just enough ESMTP for one message per transaction (EHLO, MAIL, RCPT, DATA, RSET,
  NOOP, QUIT), keyed by the message's Message-ID (`<notification id@varsel>`).

Both are asyncio protocols with no per-message framework work, so they stay far from being the bottleneck, and
both can hold every answer back by a fixed latency (a slow provider) without holding anything else up. Each
message is counted with the wall-clock time it arrived. The HTTP server also serves the peer's own control
endpoints: `GET /_stats` (counts), `GET /_dump` (every id with its arrival time), `POST /_reset`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time
from typing import Any

_REF_ID = re.compile(rb'"refId"\s*:\s*"([^"]+)"')
_MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*<([^>@]+)")


class Records:
    def __init__(self) -> None:
        self.sms: list[tuple[str, float]] = []
        self.email: list[tuple[str, float]] = []
        self.http_requests = 0
        self.smtp_sessions = 0


def _http_answer(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


class HttpPeer(asyncio.Protocol):
    def __init__(self, records: Records, latency: float) -> None:
        self.records = records
        self.latency = latency
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            lowered = head.lower()
            length = 0
            at = lowered.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lowered.find(b"\r\n", at + 2)
                length = int(lowered[at + 17 : stop if stop >= 0 else len(lowered)])
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.handle(head.split(b" ", 2), body)

    def handle(self, request_line: list[bytes], body: bytes) -> None:
        assert self.transport is not None
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else b"/"
        self.records.http_requests += 1
        if method == b"POST" and path.endswith(b"/sms/send"):
            match = _REF_ID.search(body)
            ref = match.group(1).decode() if match else ""
            self.records.sms.append((ref, time.time()))
            answer = _http_answer(
                "200 OK", b'{"messageId":"m-%s","resultCode":1005,"description":"Queued"}' % ref.encode()
            )
            if self.latency > 0:
                self.loop.call_later(self.latency, self._write, answer)
            else:
                self.transport.write(answer)
            return
        if path == b"/_stats":
            stats = {"sms": len(self.records.sms), "email": len(self.records.email)}
            self.transport.write(_http_answer("200 OK", json.dumps(stats).encode()))
        elif path == b"/_dump":
            self.transport.write(
                _http_answer("200 OK", json.dumps({"sms": self.records.sms, "email": self.records.email}).encode())
            )
        elif method == b"POST" and path == b"/_reset":
            self.records.sms.clear()
            self.records.email.clear()
            self.transport.write(_http_answer("200 OK", b"{}"))
        else:
            self.transport.write(_http_answer("404 Not Found", b'{"error":"no such path"}'))

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


class SmtpPeer(asyncio.Protocol):
    def __init__(self, records: Records, latency: float) -> None:
        self.records = records
        self.latency = latency
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_data = False
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.records.smtp_sessions += 1
        transport.write(b"220 peer.bench ESMTP ready\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while True:
            if self.in_data:
                # The message ends with a line holding only a dot; the 354 reply put us right at its start.
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                message = bytes(self.buffer[:end])
                del self.buffer[: end + 5]
                self.in_data = False
                match = _MESSAGE_ID.search(message)
                self.records.email.append((match.group(1).decode() if match else "", time.time()))
                if self.latency > 0:
                    self.loop.call_later(self.latency, self._write, b"250 2.0.0 queued\r\n")
                else:
                    self.transport.write(b"250 2.0.0 queued\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.transport.write(b"250-peer.bench\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n")
            elif verb == b"HELO":
                self.transport.write(b"250 peer.bench\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.transport.write(b"250 2.0.0 OK\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 2.0.0 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"502 5.5.2 command not implemented\r\n")

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def serve(http_port: int, smtp_port: int, latency: float) -> None:
    loop = asyncio.get_running_loop()
    records = Records()
    http = await loop.create_server(lambda: HttpPeer(records, latency), "127.0.0.1", http_port, backlog=1024)
    smtp = await loop.create_server(lambda: SmtpPeer(records, latency), "127.0.0.1", smtp_port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    http.close()
    smtp.close()


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.http_port, args.smtp_port, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
