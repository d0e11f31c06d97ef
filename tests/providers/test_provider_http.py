"""The provider HTTP client (aiohttp) against a raw loopback HTTP server that counts its connections."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from varsel.providers.http import (
    ProviderConnectionError,
    ProviderHttp,
    ProviderTimeout,
    basic_authorization,
    json_body,
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# Given a request, what the server does: write bytes and return True to keep the connection open, False to close it.
Behaviour = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


def answer(status: int = 200, body: bytes = b"", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def ok(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(200, b'{"messageId":"abc"}', "Content-Type: application/json"))
    return True


async def silent(request: Request, writer: asyncio.StreamWriter) -> bool:
    await asyncio.Event().wait()  # until the server stops
    return False


async def hang_up(request: Request, writer: asyncio.StreamWriter) -> bool:
    return False


async def hang_up_mid_answer(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(200, b"x" * 100)[:-90])
    await writer.drain()
    return False


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 written on asyncio streams: keep-alive, Content-Length bodies only."""

    def __init__(self, behaviour: Behaviour = ok) -> None:
        self.behaviour = behaviour
        self.requests: list[Request] = []
        self.accepted = 0
        self.ended = 0  # connections the client closed (EOF read)
        self.ended_event = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.ended += 1
                    self.ended_event.set()
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                keep_open = await self.behaviour(request, writer)
                await writer.drain()
                if not keep_open:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            writer.close()


@pytest.fixture
async def client() -> AsyncIterator[ProviderHttp]:
    http = ProviderHttp()
    yield http
    await http.aclose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# ---------------------------------------------------------------- answers and requests


async def test_the_answer_is_complete_and_reads_like_httpx(client: ProviderHttp) -> None:
    async def created(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            answer(
                201,
                '{"navn":"Ærlig"}'.encode(),
                "Content-Type: application/json; charset=utf-8",
                "X-Ms-Error-Code: Nope",
            )
        )
        return True

    async with RawServer(created) as server:
        got = await client.request("GET", server.url + "/x", timeout_seconds=5)

    assert got.status_code == 201
    assert got.is_success
    assert got.headers["x-ms-error-code"] == got.headers["X-MS-ERROR-CODE"] == "Nope"
    assert got.content == '{"navn":"Ærlig"}'.encode()
    assert got.text == '{"navn":"Ærlig"}'
    assert got.json() == {"navn": "Ærlig"}


async def test_a_body_that_is_not_json_raises_value_error(client: ProviderHttp) -> None:
    async def html(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(200, b"<html>queued</html>"))
        return True

    async with RawServer(html) as server:
        got = await client.request("GET", server.url + "/", timeout_seconds=5)

    with pytest.raises(ValueError, match="expected value"):
        got.json()


async def test_post_json_sends_the_document_once_serialised_as_httpx_would(client: ProviderHttp) -> None:
    document = {"userData": "blåbærsyltetøy", "relativeValidityTime": 1000, "ignoreResponse": False}
    auth = basic_authorization("varsel", "pæssord")

    async with RawServer() as server:
        await client.post_json(server.url + "/sms/send", document, headers={"Authorization": auth}, timeout_seconds=5)

    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/sms/send")
    assert request.headers["content-type"] == "application/json"
    compact = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    assert request.body == json_body(document) == compact
    assert request.headers["authorization"] == "Basic " + base64.b64encode("varsel:pæssord".encode()).decode()


async def test_redirects_are_not_followed(client: ProviderHttp) -> None:
    async def moved(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(302, b"", "Location: /elsewhere"))
        return True

    async with RawServer(moved) as server:
        got = await client.post_json(server.url + "/sms/send", {}, timeout_seconds=5)

    assert got.status_code == 302
    assert got.headers["location"] == "/elsewhere"
    assert [request.path for request in server.requests] == ["/sms/send"]


# ---------------------------------------------------------------- failures


async def test_no_answer_in_time_is_a_timeout(client: ProviderHttp) -> None:
    async with RawServer(silent) as server:
        with pytest.raises(ProviderTimeout):
            await client.post_json(server.url + "/sms/send", {}, timeout_seconds=0.2)


async def test_a_refused_connection_is_a_connection_error(client: ProviderHttp) -> None:
    with pytest.raises(ProviderConnectionError, match="ClientConnectorError"):
        await client.post_json(f"http://127.0.0.1:{free_port()}/sms/send", {}, timeout_seconds=5)


@pytest.mark.parametrize("behaviour", [hang_up, hang_up_mid_answer], ids=["before-answering", "mid-answer"])
async def test_a_server_that_hangs_up_is_a_connection_error(client: ProviderHttp, behaviour: Behaviour) -> None:
    async with RawServer(behaviour) as server:
        with pytest.raises(ProviderConnectionError):
            await client.post_json(server.url + "/sms/send", {}, timeout_seconds=5)


async def test_a_url_that_is_not_one_is_a_connection_error(client: ProviderHttp) -> None:
    with pytest.raises(ProviderConnectionError):
        await client.post_json("n-eu.linkmobility.io/sms/send", {}, timeout_seconds=5)


# ---------------------------------------------------------------- the pool


async def test_sequential_calls_reuse_one_connection(client: ProviderHttp) -> None:
    async with RawServer() as server:
        for _ in range(20):
            assert (await client.post_json(server.url + "/sms/send", {}, timeout_seconds=5)).status_code == 200

    assert len(server.requests) == 20
    assert server.accepted == 1


async def test_every_path_gives_the_connection_back() -> None:
    """With a pool of one connection, a call that kept its connection would leave the next one waiting forever."""

    async def by_path(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path == "/silent":
            return await silent(request, writer)
        if request.path == "/hang-up":
            return await hang_up_mid_answer(request, writer)
        if request.path == "/error":
            # Larger than aiohttp buffers: unread, it would keep the connection busy.
            writer.write(answer(500, b"x" * 1_000_000))
            return True
        if request.path == "/empty":
            writer.write(answer(204))
            return True
        return await ok(request, writer)

    http = ProviderHttp(limit=1)
    try:
        async with RawServer(by_path) as server:
            for path in ["/error", "/empty", "/silent", "/hang-up", "/error", "/ok"]:
                with contextlib.suppress(ProviderTimeout, ProviderConnectionError):
                    await http.post_json(server.url + path, {}, timeout_seconds=0.5 if path == "/silent" else 5)
            got = await http.post_json(server.url + "/ok", {}, timeout_seconds=5)
    finally:
        await http.aclose()

    assert got.status_code == 200
    assert [request.path for request in server.requests] == [
        "/error",
        "/empty",
        "/silent",
        "/hang-up",
        "/error",
        "/ok",
        "/ok",
    ]


# ---------------------------------------------------------------- closing


async def test_close_closes_the_session_and_its_connections() -> None:
    http = ProviderHttp()
    async with RawServer() as server:
        await http.post_json(server.url + "/sms/send", {}, timeout_seconds=5)
        assert not http.closed

        await http.aclose()

        assert http.closed
        # The server reads the end of the kept-alive connection.
        await asyncio.wait_for(server.ended_event.wait(), timeout=10)
        assert server.ended == 1
        with pytest.raises(RuntimeError, match="closed"):
            await http.post_json(server.url + "/sms/send", {}, timeout_seconds=5)
    assert len(server.requests) == 1


async def test_closing_an_unused_client_or_closing_twice_is_harmless() -> None:
    http = ProviderHttp()
    await http.aclose()
    await http.close()
    assert http.closed
