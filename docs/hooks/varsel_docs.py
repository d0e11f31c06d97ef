"""The documentation site's hook (mkdocs.yml `hooks:`): what the pages cannot keep true by hand.

- The configuration page's tables of every ``VARSEL_`` setting are written at build time from varsel's settings model
  (``varsel.settings.Settings``): names, types and defaults come from the model, so they cannot drift; what each
  setting means comes from the field's ``description`` in the model or, failing that, from ``settings.toml`` beside
  this file. A setting with neither, or an entry there that names no setting, stops the build.
- The benchmark files under ``bench/published/`` are published with the site, and the pages' links to them, written
  ``../bench/published/…`` so that they work when the Markdown is read in the repository too, are pointed at them.

Run as a script, it prints the configuration tables (``python docs/hooks/varsel_docs.py``).
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTIONS = Path(__file__).with_name("settings.toml")
SETTINGS_MARKER = "<!-- settings-tables -->"
PUBLISHED = "bench/published"


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, the area (nested model) it belongs to, its kind and default as the
    model has them, and what it means."""

    name: str
    area: str
    kind: str
    default: str
    description: str | None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _kind(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        kinds = [_kind(arg) for arg in get_args(annotation) if arg is not NoneType]
        return " or ".join(kinds)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation) or (str,)
        if _is_model(item):
            return "JSON list of objects"
        if get_origin(item) is Literal:
            return "JSON list of " + ", ".join(f"`{value}`" for value in get_args(item))
        return "list (JSON)"
    if annotation is SecretStr:
        return "secret text"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{member.value}`" for member in annotation)
    names = {
        bool: "true or false",
        int: "integer",
        float: "number",
        str: "text",
        Path: "path",
        datetime.time: "time (HH:MM)",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, datetime.time):
        return f"`{value:%H:%M}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    if isinstance(value, Enum):
        return f"`{value.value}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if value == "":
        return "empty"
    return f"`{value}`"


def _descriptions() -> dict[str, dict[str, str]]:
    with DESCRIPTIONS.open("rb") as file:
        return tomllib.load(file)


def _described(name: str, descriptions: dict[str, dict[str, str]]) -> dict[str, str]:
    if name in descriptions:
        return descriptions[name]
    # A pattern ("VARSEL_*__GUARD__BURST") describes a setting that several areas share.
    for key, entry in descriptions.items():
        if "*" in key and fnmatch.fnmatchcase(name, key):
            return entry
    return {}


def settings() -> list[Setting]:
    """Every setting of varsel's settings model, in the model's order."""
    from varsel.settings import Settings

    descriptions = _descriptions()
    found: list[Setting] = []

    def walk(model: type[BaseModel], prefix: str, area: str) -> None:
        for field_name, field in model.model_fields.items():
            name = f"{prefix}{field_name.upper()}"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{name}__", area or name)
                continue
            entry = _described(name, descriptions)
            found.append(
                Setting(
                    name=name,
                    area=area,
                    kind=_kind(field.annotation),
                    default=entry.get("default") or _default(field),
                    description=field.description or entry.get("description"),
                )
            )

    walk(Settings, "VARSEL_", "")
    return found


def problems(found: list[Setting] | None = None) -> list[str]:
    """What keeps the tables true: every setting described, every description naming a setting."""
    found = settings() if found is None else found
    names = [setting.name for setting in found]
    missing = [f"{setting.name} has no description" for setting in found if not (setting.description or "").strip()]
    stale = [
        f"{DESCRIPTIONS.name} describes {key}, which is no setting"
        for key in _descriptions()
        if not any(name == key or ("*" in key and fnmatch.fnmatchcase(name, key)) for name in names)
    ]
    return missing + stale


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def tables(found: list[Setting] | None = None) -> str:
    """The settings as Markdown: one table per area, in the model's order."""
    found = settings() if found is None else found
    areas: dict[str, list[Setting]] = {}
    for setting in found:
        areas.setdefault(setting.area, []).append(setting)
    out: list[str] = []
    for area, members in areas.items():
        title = f"`{area}__…`" if area else "General"
        out += [f"### {title}", "", "| Variable | Default | Kind | Meaning |", "|---|---|---|---|"]
        for setting in members:
            out.append(
                f"| `{setting.name}` | {_cell(setting.default)} | {_cell(setting.kind)} | "
                f"{_cell(setting.description or '')} |"
            )
        out.append("")
    return "\n".join(out)


def _build_error(message: str) -> Exception:
    try:
        from mkdocs.exceptions import PluginError
    except ImportError:  # the tests import the hook without the docs extra installed
        return RuntimeError(message)
    # mkdocs reports a PluginError as the build's error, in one line, and exits 1.
    return PluginError(message)


# mkdocs hooks -----------------------------------------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if SETTINGS_MARKER in markdown:
        found = settings()
        wrong = problems(found)
        if wrong:
            raise _build_error("the configuration page cannot be written: " + "; ".join(wrong))
        markdown = markdown.replace(SETTINGS_MARKER, tables(found))
    # Links written for the repository (docs/x.md -> ../bench/published/…) point at the copies published with the site.
    return re.sub(r"\]\(\.\./(bench/published/[^)]*)\)", r"](\1)", markdown)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for path in sorted((ROOT / PUBLISHED).rglob("*")):
        if path.is_file():
            files.append(
                File(
                    str(path.relative_to(ROOT)),
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files


if __name__ == "__main__":
    for problem in problems():
        print("problem:", problem)
    print(tables())
