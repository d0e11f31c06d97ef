"""TLS for loopback peers: a private CA and a server certificate it signed, and an HTTPS object store on loopback.

    files = make_tls(tmp_path)                       # CA, certificate for localhost and 127.0.0.1, key
    async with HttpsStore(files) as store:           # serves https://localhost:<port>/ with that certificate
        store.files["report.pdf"] = b"%PDF-..."
        url = store.url("/files/report.pdf?sv=2024&sig=SECRET")

The store (aiohttp, in the test's own event loop) serves:

- ``/files/{name}``: the bytes in ``files[name]`` with a Content-Length, 404 when there are none. While
  ``fail_first[name]`` is above zero, a request is answered ``fail_status`` (503) and the count goes down.
- ``/status/{code}``: that status, with ``Retry-After: 7`` on 429 and 503.
- ``/redirect?to=<url>``: 302 to the URL (a relative one too); ``/loop``: 302 to itself.
- ``/stream``: a body without Content-Length, ``stream_chunks`` chunks of 64 KiB; ``stream_written`` counts the chunks
  written before the client stopped reading (or all of them).
- ``/declared/{length}``: headers saying Content-Length ``length``, then no body until the client goes away.
- ``/slow``: no answer for 30 s.

``requests`` lists every request as (path with query, Host header).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from types import TracebackType

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CHUNK = 64 * 1024


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts the private CA only (and verifies names, as any client)."""
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls(folder: Path) -> TlsFiles:
    """A private CA and a server certificate it signed, for localhost and 127.0.0.1, written to `folder`."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "varsel test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


class HttpsStore:
    """An object store on https://localhost:<port> (see the module's documentation)."""

    def __init__(self, tls: TlsFiles) -> None:
        self._tls = tls
        self.files: dict[str, bytes] = {}
        self.fail_first: dict[str, int] = {}
        self.fail_status = 503
        self.stream_chunks = 1024  # 64 MiB
        self.stream_written = 0
        self.requests: list[tuple[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path_qs, request.headers.get("Host", "")))
        path = request.path
        if path.startswith("/files/"):
            name = path.removeprefix("/files/")
            if self.fail_first.get(name, 0) > 0:
                self.fail_first[name] -= 1
                return web.Response(status=self.fail_status)
            if name not in self.files:
                return web.Response(status=404, text="BlobNotFound")
            return web.Response(body=self.files[name], content_type="application/octet-stream")
        if path.startswith("/status/"):
            status = int(path.removeprefix("/status/"))
            headers = {"Retry-After": "7"} if status in (429, 503) else {}
            return web.Response(status=status, headers=headers)
        if path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/stream":
            response = web.StreamResponse()
            await response.prepare(request)
            chunk = b"x" * CHUNK
            try:
                for _ in range(self.stream_chunks):
                    await response.write(chunk)
                    self.stream_written += 1
            except (ConnectionError, RuntimeError):
                return response  # the client stopped reading and went away
            await response.write_eof()
            return response
        if path.startswith("/declared/"):
            response = web.StreamResponse(headers={"Content-Length": path.removeprefix("/declared/")})
            await response.prepare(request)
            await asyncio.sleep(30)
            return response
        if path == "/slow":
            await asyncio.sleep(30)
        return web.Response(status=404)

    async def __aenter__(self) -> HttpsStore:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls.server_context())
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
