"""The shell examples of the README and docs/*.md, read as the reader sees them, so that a test can run them.

A ```bash block is an example to run unless the line before its fence is ``<!-- norun -->`` (for commands that start
a server or take minutes, such as ``make run`` or ``make bench``); a block that calls curl may not be left out. A fenced
block whose preceding line is ``<!-- output -->`` is what the last example before it prints. It is compared with
what the example really prints with white space ignored (JSON is shown wrapped in the docs, printed on one line by
curl), ``…`` standing for any text (headers not shown, long lists), an id (UUID) or a time (ISO 8601) for any id or
time, and ``http://127.0.0.1:8080`` for the base address the test's varsel listens on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NORUN = "<!-- norun -->"
OUTPUT = "<!-- output -->"
# The address the docs show (the default port); the test's varsel listens on a free port of its own.
DOCUMENTED_BASE = "http://127.0.0.1:8080"

# A fence at the start of a line (code blocks in list items are not examples), its info string, its text.
_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)


@dataclass
class Example:
    """A bash block of a page: where it is, its text, and what it prints when the docs say so."""

    page: str
    line: int
    source: str
    run: bool
    expected: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(path for path in (ROOT / "docs").rglob("*.md"))]


def _marker_before(text: str, start: int) -> str:
    before = text[:start].rstrip("\n").rsplit("\n", 1)[-1]
    return before.strip()


def examples(path: Path) -> list[Example]:
    """The page's bash blocks in order, each with the output blocks that follow it."""
    text = path.read_text(encoding="utf-8")
    page = str(path.relative_to(ROOT))
    found: list[Example] = []
    for match in _FENCE.finditer(text):
        marker = _marker_before(text, match.start())
        line = text.count("\n", 0, match.start()) + 1
        language = match.group("info").strip().split(" ")[0].lstrip("{.").rstrip("}")
        if marker == OUTPUT:
            if not found or not found[-1].run:
                raise ValueError(f"{page}:{line}: an output block with no example to run before it")
            found[-1].expected.append(match.group("body"))
        elif language in ("bash", "sh"):
            found.append(Example(page, line, match.group("body"), run=marker != NORUN))
    return found


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


# Ids and times differ in every run: one shown stands for any.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)"
_VARYING = re.compile(f"{_UUID}|{_TIME}")


def _pattern(piece: str) -> str:
    fixed = _VARYING.split(piece)
    varying = [_UUID if re.fullmatch(_UUID, found) else _TIME for found in _VARYING.findall(piece)]
    out = re.escape(fixed[0])
    for pattern, text in zip(varying, fixed[1:], strict=True):
        out += pattern + re.escape(text)
    return out


def output_matches(expected: str, actual: str, base: str) -> bool:
    """Whether `actual` is what `expected` shows: white space ignored, `…` any text, an id or a time any id or time,
    the documented base address standing for `base`."""
    pieces = [_pattern(_squeeze(piece.replace(DOCUMENTED_BASE, base))) for piece in expected.split("…")]
    return re.fullmatch(".*?".join(pieces), _squeeze(actual), re.S) is not None
