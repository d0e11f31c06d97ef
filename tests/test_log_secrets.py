"""No log line carries an attachment's SAS signature, at any VARSEL_LOG_LEVEL: httpx logs each request's full URL,
query and all, so it and httpcore stay at WARNING even when everything else logs at DEBUG."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.tls import HttpsStore, make_tls
from varsel.cli import configure_logging
from varsel.dispatch.attachments import AttachmentFetcher
from varsel.settings import AttachmentSettings

SECRET = "S3CRET-SIGNATURE"
LOGGERS = ["uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "httpx", "httpcore"]
# The store's loggers: it is the test's peer in this process, not varsel, and its access log has the URL by design.
STORE_LOGGERS = ["aiohttp.access", "aiohttp.server", "aiohttp.web"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging rewires process-wide state: put it back for the tests after this one."""
    root = logging.getLogger()
    saved_root = (root.level, root.handlers[:])
    saved = {}
    for name in LOGGERS + STORE_LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = (lg.level, lg.handlers[:], lg.propagate, lg.disabled)
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, (level, handlers, propagate, disabled) in saved.items():
            lg = logging.getLogger(name)
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate = propagate
            lg.disabled = disabled


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("level", ["trace", "debug", "info"])
async def test_fetching_an_attachment_logs_no_signature(tmp_path: Path, level: str) -> None:
    written = io.StringIO()
    configure_logging(level, written)
    for name in STORE_LOGGERS:
        logging.getLogger(name).disabled = True
    tls = make_tls(tmp_path)
    fetcher = AttachmentFetcher(
        AttachmentSettings(allowed_hosts=["localhost"], timeout_seconds=5), verify=tls.client_context()
    )
    async with HttpsStore(tls) as store:
        store.files["report.pdf"] = b"%PDF-1.7\n"
        direct = store.url(f"/files/report.pdf?sv=2024-11-04&sr=b&sp=r&sig={SECRET}")
        # A redirect whose target carries the signature as well: each hop is a request httpx would log.
        redirected = store.url("/redirect?to=" + quote(f"/files/report.pdf?sp=r&sig={SECRET}-2", safe=""))
        fetched = await fetcher.fetch(
            [
                {"filename": "a.pdf", "mimeType": "application/pdf", "url": direct},
                {"filename": "b.pdf", "mimeType": "application/pdf", "url": redirected},
            ]
        )
    assert [a.content for a in fetched] == [b"%PDF-1.7\n"] * 2
    assert len(store.requests) == 3
    logging.getLogger("varsel.tests").info("the handler writes at %s", level)
    output = written.getvalue()
    assert f"the handler writes at {level}" in output  # the configured handler is the one read here
    assert SECRET not in output, output
