from __future__ import annotations
import httpx, pytest
from tests.api_v2.composed_helpers import attachment, composed, post_composed, sas_url, Auth

@pytest.mark.parametrize("send_time,se", [
    ("9999-12-31T23:55:00Z", "2026-03-03T10:00:00Z"),
    ("9999-12-31T23:55:00+00:00", "9999-12-31T23:59:59Z"),
    ("0001-01-01T00:10:00+01:00", "2026-03-03T10:00:00Z"),
])
async def test_probe_send_time_edges(client: httpx.AsyncClient, auth: Auth, send_time, se) -> None:
    body = composed(requestedSendTime=send_time, attachments=[attachment(sasUrl=sas_url(se=se))])
    r = await post_composed(client, auth, body)
    print(send_time, se, r.status_code, r.text[:400])
    assert r.status_code < 500

@pytest.mark.parametrize("se", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00", "2026-03-03T10:00:00.1234567Z", "2026-03-03"])
async def test_probe_se(client: httpx.AsyncClient, auth: Auth, se) -> None:
    body = composed(attachments=[attachment(sasUrl=sas_url(se=se))])
    r = await post_composed(client, auth, body)
    print(se, r.status_code, r.text[:400])
    assert r.status_code < 500

@pytest.mark.parametrize("url", ["https://caseletters.blob.core.windows.net:99999/x.pdf?se=2026-03-03T10:00:00Z&sp=r&sr=b&sig=x",
    "https://[::1/x", "https://caseletters.blob.core.windows.net./x.pdf?se=2026-03-03T10:00:00Z&sp=r&sr=b&sig=x",
    "https://xn--.blob.core.windows.net/x.pdf?se=2026-03-03T10:00:00Z&sp=r&sr=b&sig=x",
    "https://a..blob.core.windows.net/x.pdf?se=2026-03-03T10:00:00Z&sp=r&sr=b&sig=x",
    "https://caseletters.blob.core.windows.net/x.pdf?se=2026-03-03T10:00:00Z&sp=r&sr=b&sig=%00",
    "https://caseletters.blob.core.windows.net/x.pdf?se=2026-03-03T10:00:00Z&sp=r&sr=b&sig=x\u2028",
    "https://caseletters.blob.core.windows.net/x\udc80.pdf?se=2026-03-03T10:00:00Z&sp=r&sr=b&sig=x",
])
async def test_probe_url(client: httpx.AsyncClient, auth: Auth, url) -> None:
    body = composed(attachments=[attachment(sasUrl=url)])
    try:
        r = await post_composed(client, auth, body)
    except Exception as e:
        print("client error", e); return
    print(url, r.status_code, r.text[:400])
    assert r.status_code < 500

@pytest.mark.parametrize("name", ["a\u2028b.pdf", "x" * 300 + ".pdf", ".pdf", "a\ud800.pdf", "=?utf-8?q?x?=.pdf"])
async def test_probe_filename(client: httpx.AsyncClient, auth: Auth, name) -> None:
    body = composed(attachments=[attachment(filename=name)])
    try:
        r = await post_composed(client, auth, body)
    except Exception as e:
        print("client error", e); return
    print(repr(name[:20]), r.status_code, r.text[:300])
    assert r.status_code < 500
