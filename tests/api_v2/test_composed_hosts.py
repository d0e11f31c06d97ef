"""Attachment hosts the operator allows (settings.attachments.allowed_hosts) beside Azure Blob Storage: exact names
and `*.` suffixes, without the SAS rules, which are Azure's; the refusal names the allowed hosts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.api_v2.composed_helpers import Auth, attachment, composed, post_composed, sas_url
from varsel.settings import Settings

A0 = "Recipient.Settings.Attachments[0]"
F = "Attachment 'contract.pdf'"


def _one(url: str) -> dict[str, object]:
    return composed(attachments=[attachment(sasUrl=url)])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        conditions={"allowed_hosts": []},
        attachments={"allowed_hosts": ["files.internal", "*.s3.example.com", "127.0.0.1"]},
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://files.internal/letters/a.pdf",  # no SAS parameters: the operator's store signs its own way
        "https://FILES.internal./a.pdf",
        "https://bucket.s3.example.com/a.pdf?X-Amz-Signature=abc",
        "https://127.0.0.1:8443/a.pdf",
        sas_url(),  # Azure still
    ],
)
async def test_the_operator_s_hosts_are_allowed_without_sas_parameters(
    client: httpx.AsyncClient, auth: Auth, url: str
) -> None:
    response = await post_composed(client, auth, _one(url))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "url",
    [
        "https://s3.example.com/a.pdf",  # the suffix itself is not a host under it
        "https://files.internal.example/a.pdf",
        "https://127.0.0.2/a.pdf",
        "http://files.internal/a.pdf",
    ],
)
async def test_other_hosts_are_refused_naming_the_allowed_ones(client: httpx.AsyncClient, auth: Auth, url: str) -> None:
    response = await post_composed(client, auth, _one(url))
    assert response.status_code == 400, response.text
    expected = (
        f"{F}: sasUrl must be an absolute HTTPS URI."
        if url.startswith("http:")
        else f"{F}: sasUrl host must be within Azure Blob Storage (*.blob.core.windows.net) or one of the allowed "
        "hosts (files.internal, *.s3.example.com, 127.0.0.1)."
    )
    assert response.json()["errors"] == {f"{A0}.SasUrl": [expected]}


async def test_azure_urls_keep_their_sas_rules_when_the_operator_adds_hosts(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    response = await post_composed(client, auth, _one(sas_url(sr="c")))
    assert response.json()["errors"] == {
        f"{A0}.SasUrl": [f"{F}: sasUrl is missing required SAS parameters (se, sig, sp, sr)."]
    }
