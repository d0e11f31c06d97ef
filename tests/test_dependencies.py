"""Runtime dependencies that nothing imports directly but whose absence costs on every request."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def test_sniffio_is_declared_and_installed() -> None:
    # httpcore asks sniffio which async library it runs under for each pooled request (condition endpoints, JWKS);
    # without it every such request raises and catches an ImportError.
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert any(d.split(">")[0].split("=")[0].split(";")[0].strip() == "sniffio" for d in dependencies), dependencies
    assert importlib.util.find_spec("sniffio") is not None
