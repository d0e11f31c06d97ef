"""Fetching a composed email's attachments from a loopback HTTPS store: the allow-list, the address guard (with an
injected resolver: DNS is the outside world), redirects, the size cap (reading stops at it) and the timeout, and how
each failure ends the email (permanent, transient) without the SAS signature in any message."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.tls import CHUNK, HttpsStore, TlsFiles, make_tls
from varsel.dispatch.attachments import AttachmentFetcher
from varsel.notifications.statuses import EmailStatus
from varsel.providers.base import PermanentEmailError, TransientProviderError
from varsel.settings import AttachmentSettings

SAS = "?sv=2024-11-04&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=S3CRET-SIGNATURE%3D"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40
XLSX = b"PK\x03\x04" + b"\x00\xff" * 3000


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def store(tls: TlsFiles) -> AsyncIterator[HttpsStore]:
    async with HttpsStore(tls) as running:
        running.files |= {"report.pdf": PDF, "figures.xlsx": XLSX}
        yield running


class Resolver:
    """A DNS of the test's own: names to addresses, and the names asked for."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def fetcher(tls: TlsFiles, resolver: Resolver | None = None, **settings: Any) -> AttachmentFetcher:
    values: dict[str, Any] = {"allowed_hosts": ["localhost", "*.store.example"], "timeout_seconds": 5}
    return AttachmentFetcher(
        AttachmentSettings(**(values | settings)), resolver=resolver or Resolver(), verify=tls.client_context()
    )


def spec(url: str, filename: str = "report.pdf", mime_type: str = "application/pdf") -> dict[str, str]:
    return {"filename": filename, "mimeType": mime_type, "url": url}


async def refused(fetch: AttachmentFetcher, *specs: dict[str, str]) -> PermanentEmailError:
    with pytest.raises(PermanentEmailError) as raised:
        await fetch.fetch(specs)
    assert "S3CRET" not in str(raised.value)
    assert "sig=" not in str(raised.value)
    return raised.value


async def test_attachments_are_fetched_in_their_order_with_their_names_and_types(
    tls: TlsFiles, store: HttpsStore
) -> None:
    fetched = await fetcher(tls).fetch(
        [
            spec(store.url(f"/files/report.pdf{SAS}")),
            spec(store.url(f"/files/figures.xlsx{SAS}"), "Tal for 2025, Ørsta.xlsx", "application/vnd.ms-excel"),
        ]
    )
    assert [(a.filename, a.mime_type, a.content) for a in fetched] == [
        ("report.pdf", "application/pdf", PDF),
        ("Tal for 2025, Ørsta.xlsx", "application/vnd.ms-excel", XLSX),
    ]
    # The whole URL reached the store, query (the SAS) and all, under the name it was given.
    assert sorted(store.requests) == sorted(
        [
            (f"/files/report.pdf{SAS}", f"localhost:{store.port}"),
            (f"/files/figures.xlsx{SAS}", f"localhost:{store.port}"),
        ]
    )


async def test_no_attachments_fetch_nothing(tls: TlsFiles, store: HttpsStore) -> None:
    assert await fetcher(tls).fetch(None) == ()
    assert await fetcher(tls).fetch([]) == ()
    assert store.requests == []


@pytest.mark.parametrize("status", [400, 403, 404, 410])
async def test_a_4xx_from_the_store_is_an_invalid_sas_url(tls: TlsFiles, store: HttpsStore, status: int) -> None:
    error = await refused(
        fetcher(tls), spec(store.url(f"/files/report.pdf{SAS}")), spec(store.url(f"/status/{status}{SAS}"), "gone.pdf")
    )
    assert error.status is EmailStatus.FAILED_INVALID_SAS_URL
    assert "'gone.pdf'" in str(error)
    assert f"HTTP {status}" in str(error)
    assert f"/status/{status}" in str(error)


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, 7.0), (429, 7.0), (408, None)])
async def test_5xx_429_and_408_are_transient(
    tls: TlsFiles, store: HttpsStore, status: int, retry_after: float | None
) -> None:
    with pytest.raises(TransientProviderError) as raised:
        await fetcher(tls).fetch([spec(store.url(f"/status/{status}{SAS}"))])
    assert f"HTTP {status}" in str(raised.value)
    assert "S3CRET" not in str(raised.value)
    assert raised.value.retry_after == retry_after


async def test_a_body_over_the_cap_stops_the_reading(tls: TlsFiles, store: HttpsStore) -> None:
    # No Content-Length: 64 MiB offered, 256 KiB allowed. The store's writes block once the socket buffers are full,
    # so it gets to write the whole body only if the client reads on.
    error = await refused(fetcher(tls, max_bytes_per_email=4 * CHUNK), spec(store.url(f"/stream{SAS}")))
    assert error.status is EmailStatus.FAILED_PAYLOAD_TOO_LARGE
    assert "'report.pdf'" in str(error)
    assert store.stream_written < store.stream_chunks


async def test_a_declared_length_over_the_cap_is_refused_before_the_body(tls: TlsFiles, store: HttpsStore) -> None:
    # The store sends its headers and then nothing: reading any of the body would end in the timeout instead.
    limit = 10 * 1024 * 1024
    error = await refused(fetcher(tls, max_bytes_per_email=limit), spec(store.url(f"/declared/{limit + 1}{SAS}")))
    assert error.status is EmailStatus.FAILED_PAYLOAD_TOO_LARGE


async def test_the_cap_is_for_all_attachments_of_the_email_together(tls: TlsFiles, store: HttpsStore) -> None:
    urls = [store.url(f"/files/report.pdf{SAS}"), store.url(f"/files/figures.xlsx{SAS}")]
    fits = fetcher(tls, max_bytes_per_email=len(PDF) + len(XLSX))
    assert len(await fits.fetch([spec(url) for url in urls])) == 2
    error = await refused(fetcher(tls, max_bytes_per_email=len(PDF) + len(XLSX) - 1), *[spec(url) for url in urls])
    assert error.status is EmailStatus.FAILED_PAYLOAD_TOO_LARGE


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("files.store.example", "10.1.2.3"),
        ("files.store.example", "127.0.0.1"),
        ("files.store.example", "169.254.169.254"),
        ("account.blob.core.windows.net", "192.168.0.10"),
        ("account.blob.core.windows.net", "::1"),
    ],
)
async def test_a_host_allowed_by_suffix_that_resolves_inside_is_refused(
    tls: TlsFiles, store: HttpsStore, host: str, address: str
) -> None:
    resolver = Resolver({host: ["93.184.215.14", address]})
    error = await refused(fetcher(tls, resolver), spec(store.url(f"/files/report.pdf{SAS}", host=host)))
    assert error.status is EmailStatus.FAILED_INVALID_SAS_URL
    assert "not public" in str(error)
    assert resolver.asked == [host]
    assert store.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/files/report.pdf",
        "https://127.0.0.1:{port}/files/report.pdf",  # the store's address, but not its allow-listed name
        "https://blob.core.windows.net.evil.example/x.pdf",
        "http://localhost:{port}/files/report.pdf",  # allowed host, but not HTTPS
    ],
)
async def test_a_host_not_allowed_is_refused_without_a_lookup(tls: TlsFiles, store: HttpsStore, url: str) -> None:
    resolver = Resolver()
    error = await refused(fetcher(tls, resolver), spec(url.format(port=store.port) + SAS))
    assert error.status is EmailStatus.FAILED_INVALID_SAS_URL
    assert resolver.asked == []
    assert store.requests == []


async def test_redirects_within_the_allow_list_are_followed(tls: TlsFiles, store: HttpsStore) -> None:
    url = store.url("/redirect?to=" + quote("/files/report.pdf?sp=r&sig=abc", safe=""))
    [fetched] = await fetcher(tls).fetch([spec(url)])
    assert fetched.content == PDF
    assert [path for path, _ in store.requests][1] == "/files/report.pdf?sp=r&sig=abc"


@pytest.mark.parametrize(
    "target",
    [
        "https://files.store.example/x.pdf",  # allowed by suffix, resolves to 10.0.0.7
        "https://evil.example.com/x.pdf",  # not allowed
        "https://169.254.169.254/latest/meta-data",
    ],
)
async def test_a_redirect_out_of_bounds_is_refused(tls: TlsFiles, store: HttpsStore, target: str) -> None:
    resolver = Resolver({"files.store.example": ["10.0.0.7"], "evil.example.com": ["93.184.215.14"]})
    error = await refused(fetcher(tls, resolver), spec(store.url(f"/redirect?to={target}")))
    assert error.status is EmailStatus.FAILED_INVALID_SAS_URL
    assert len(store.requests) == 1  # the allow-listed hop only
    assert "evil.example.com" not in resolver.asked


async def test_more_than_three_redirects_are_refused(tls: TlsFiles, store: HttpsStore) -> None:
    error = await refused(fetcher(tls), spec(store.url(f"/loop{SAS}")))
    assert error.status is EmailStatus.FAILED_INVALID_SAS_URL
    assert "redirects" in str(error)
    assert len(store.requests) == 4


async def test_a_name_that_does_not_resolve_is_transient(tls: TlsFiles) -> None:
    with pytest.raises(TransientProviderError) as raised:
        await fetcher(tls).fetch([spec(f"https://gone.blob.core.windows.net/c/report.pdf{SAS}")])
    assert "does not resolve" in str(raised.value)
    assert "S3CRET" not in str(raised.value)


async def test_a_store_that_does_not_answer_in_time_is_transient(tls: TlsFiles, store: HttpsStore) -> None:
    with pytest.raises(TransientProviderError) as raised:
        await fetcher(tls, timeout_seconds=0.3).fetch([spec(store.url(f"/slow{SAS}"))])
    assert "S3CRET" not in str(raised.value)


async def test_a_certificate_the_client_does_not_trust_is_transient(store: HttpsStore, tmp_path: Path) -> None:
    other = make_tls(tmp_path)  # another CA: the store's certificate is not signed by it
    with pytest.raises(TransientProviderError):
        await fetcher(other).fetch([spec(store.url(f"/files/report.pdf{SAS}"))])
