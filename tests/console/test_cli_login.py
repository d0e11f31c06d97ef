"""`varsel console login`: the one-time link it prints signs in, once, as whom it names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from varsel.app import build, create_app
from varsel.cli import cli
from varsel.console.sessions import SESSION_COOKIE
from varsel.settings import Settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("VARSEL_DATA_DIR", str(folder))
    monkeypatch.delenv("VARSEL_DATABASE_URL", raising=False)
    monkeypatch.setenv("VARSEL_PUBLIC_URL", "https://varsel.example.org")
    monkeypatch.setenv("COLUMNS", "250")
    return folder


async def _use(link: str, data_dir: Path) -> httpx.Response:
    services = build(Settings(data_dir=data_dir, public_url="https://varsel.example.org"))
    app = create_app(services)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://varsel.example.org"
        ) as http:
            answer = await http.post(link.removeprefix("https://varsel.example.org"))
            if answer.status_code == 303:
                assert SESSION_COOKIE in answer.cookies
                home = await http.get("/console")  # the client keeps the (Secure) cookie: the URL is https
                assert home.status_code == 200
                answer.extensions["principal"] = home.text.split('title="Signed in as">', 1)[1].split("<", 1)[0]
            return answer
    finally:
        await services.close()


@pytest.mark.usefixtures("data_dir")
def test_the_printed_link_signs_in_once(data_dir: Path) -> None:
    done = CliRunner().invoke(cli, ["console", "login", "--org", "digdir"])
    assert done.exit_code == 0, done.output
    (link,) = [line for line in done.stdout.splitlines() if line.startswith("https://")]
    assert link.startswith("https://varsel.example.org/console/sign-in/link/")
    signed_in = asyncio.run(_use(link, data_dir))
    assert signed_in.status_code == 303
    assert signed_in.extensions["principal"] == "digdir"
    assert asyncio.run(_use(link, data_dir)).status_code == 403

    admin = CliRunner().invoke(cli, ["console", "login", "--admin"])
    (admin_link,) = [line for line in admin.stdout.splitlines() if line.startswith("https://")]
    assert asyncio.run(_use(admin_link, data_dir)).extensions["principal"] == "admin"


@pytest.mark.usefixtures("data_dir")
@pytest.mark.parametrize("arguments", [[], ["--org", "ttd", "--admin"], ["--org", "not an org!"]])
def test_whom_to_sign_in_must_be_clear(arguments: list[str]) -> None:
    done = CliRunner().invoke(cli, ["console", "login", *arguments])
    assert done.exit_code == 2
    assert "/console/sign-in/link/" not in done.output
