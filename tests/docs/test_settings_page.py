"""The configuration page lists every VARSEL_ setting of the settings model, each with what it means.

The tables are written by the docs hook (docs/hooks/varsel_docs.py) from varsel's settings model when the site is
built; these tests hold the hook to the model: a setting added without a description, or a description left behind
by a setting that is gone, fails here before it fails `make docs`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings

from tests.docs.examples import ROOT
from varsel.settings import Settings

PAGE = ROOT / "docs" / "configuration.md"


def _hook() -> ModuleType:
    path = ROOT / "docs" / "hooks" / "varsel_docs.py"
    spec = importlib.util.spec_from_file_location("varsel_docs_hook", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


hook = _hook()


def _environment_names(model: type[BaseModel], prefix: str) -> list[str]:
    """Every leaf setting of a model as its environment variable, found independently of the hook's walk."""
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _environment_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_has_a_description() -> None:
    assert hook.problems() == []


def test_the_page_lists_every_setting_of_the_model() -> None:
    assert hook.SETTINGS_MARKER in PAGE.read_text(encoding="utf-8")
    written = hook.on_page_markdown(PAGE.read_text(encoding="utf-8"), page=None, config=None, files=None)
    names = _environment_names(Settings, "VARSEL_")
    assert len(names) > 100
    missing = [name for name in names if f"| `{name}` |" not in written]
    assert missing == []


def test_each_name_is_one_the_settings_model_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name on the page must really set the setting: set each documented integer and see the model read it.
    for setting in hook.settings():
        if setting.kind != "integer":
            continue
        for name in list(os.environ):
            if name.startswith("VARSEL_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv(setting.name, "4711")
        loaded: Any = Settings().model_dump()
        for key in setting.name.removeprefix("VARSEL_").lower().split("__"):
            loaded = loaded[key]
        assert loaded == 4711, setting.name


def test_a_setting_without_a_description_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    class Undocumented(BaseSettings):
        brand_new_knob: int = 3
        described: int = Field(default=1, description="Described in the model itself.")

    monkeypatch.setattr("varsel.settings.Settings", Undocumented)
    found = hook.settings()
    assert [setting.name for setting in found] == ["VARSEL_BRAND_NEW_KNOB", "VARSEL_DESCRIBED"]
    wrong = hook.problems(found)
    assert "VARSEL_BRAND_NEW_KNOB has no description" in wrong
    assert not any("VARSEL_DESCRIBED" in problem for problem in wrong)
    # And settings.toml's entries now name no setting: each is reported, so a removed setting's text goes too.
    assert any("VARSEL_DATA_DIR, which is no setting" in problem for problem in wrong)
    # PluginError when mkdocs builds (the docs extra), RuntimeError where the tests run without it.
    with pytest.raises(Exception, match="VARSEL_BRAND_NEW_KNOB has no description"):
        hook.on_page_markdown(PAGE.read_text(encoding="utf-8"), page=None, config=None, files=None)


def test_the_tables_show_the_model_s_defaults() -> None:
    written = hook.tables()
    assert "| `VARSEL_PORT` | `8080` | integer |" in written
    assert "| `VARSEL_DISPATCH__SMS_DAYTIME__OPENS` | `09:00` |" in written
    assert "| `VARSEL_EMAIL__GUARD__MAX_CONCURRENCY` | `50` |" in written
    assert "| `VARSEL_SMS__GUARD__MAX_CONCURRENCY` | `50` |" in written


def test_the_hook_is_the_one_mkdocs_runs() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "docs/hooks/varsel_docs.py" in config
    assert hook.__file__ is not None
    assert Path(hook.__file__).resolve() == (ROOT / "docs" / "hooks" / "varsel_docs.py").resolve()
