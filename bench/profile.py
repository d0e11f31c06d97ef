"""Reading py-spy's raw (collapsed) stacks: where the samples went, by function and by library.

`python -m bench.profile FILE.txt [N]` prints the summary of a profile written by `python -m bench --profile`.
"""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Library of a frame, by where its file lives: the first match wins.
_AREAS = [
    ("varsel", ("/src/varsel/", "varsel/")),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("asyncpg", ("asyncpg/",)),
    ("aiosqlite/sqlite3", ("aiosqlite/", "sqlite3/")),
    ("uvicorn/h11", ("uvicorn/", "h11/")),
    ("starlette/fastapi", ("starlette/", "fastapi/")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("jwt/cryptography", ("jwt/", "cryptography/")),
    ("httpx/httpcore", ("httpx/", "httpcore/", "anyio/")),
    ("aiosmtplib", ("aiosmtplib/",)),
    ("email/validation", ("email/", "email_validator/", "phonenumbers/", "idna/")),
    ("logging", ("logging/",)),
    ("prometheus", ("prometheus_client/",)),
    ("asyncio/selectors", ("asyncio/", "selectors.py", "socket.py", "ssl.py")),
    ("json", ("json/",)),
]


# Frames every sample of a thread passes through (the interpreter, the command line, the event loop, the server).
_ROOTS = (
    "<frozen runpy>", "typer/", "click/", "asyncio/runners.py", "asyncio/base_events.py", "asyncio/events.py",
    "uvicorn/server.py", "uvicorn/main.py", "uvicorn/_compat.py", "varsel/cli.py", "<module>", "threading.py",
)  # fmt: skip


def _short(file: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _area(file: str) -> str:
    for name, needles in _AREAS:
        if any(n in file for n in needles):
            return name
    return "other"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_area: collections.Counter[str] = collections.Counter()
    # The same without samples whose leaf is the event loop's socket write or select: on a busy machine a thread
    # sampled there is mostly waiting to be scheduled again (the API process spends ~12% of its CPU in the kernel).
    busy_own: collections.Counter[str] = collections.Counter()
    busy_area: collections.Counter[str] = collections.Counter()
    busy_total = 0
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        names = []
        files = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                names.append(frame)
                files.append("")
                continue
            file = match["file"]
            names.append(f"{match['function']} ({_short(file)})")
            files.append(file)
        if not names:
            continue
        own[names[-1]] += count
        by_area[_area(files[-1])] += count
        if _area(files[-1]) != "asyncio/selectors":
            busy_total += count
            busy_own[names[-1]] += count
            busy_area[_area(files[-1])] += count
        for name in set(names):
            inclusive[name] += count

    def share(counter: collections.Counter[str], n: int) -> list[list[Any]]:
        return [[name, round(100 * c / max(total, 1), 1)] for name, c in counter.most_common(n)]

    # The chain of frames every sample shares (runpy, typer, the event loop) says nothing: leave it out, and show
    # varsel's own functions apart.
    below_root = collections.Counter({k: v for k, v in inclusive.items() if not any(r in k for r in _ROOTS)})
    varsel_own = collections.Counter({k: v for k, v in below_root.items() if k.split("(")[-1].startswith("varsel/")})
    return {
        "samples": total,
        "note": "wall-clock samples of running threads (py-spy, not --idle): time in socket writes includes being "
        "descheduled in the syscall when the cores are busy",
        "self_by_library_pct": share(by_area, 20),
        "top_self_pct": share(own, top),
        "top_inclusive_pct": share(below_root, top),
        "without_socket_waits": {
            "samples": busy_total,
            "self_by_library_pct": [[n, round(100 * c / max(busy_total, 1), 1)] for n, c in busy_area.most_common(20)],
            "top_self_pct": [[n, round(100 * c / max(busy_total, 1), 1)] for n, c in busy_own.most_common(top)],
        },
        "top_inclusive_varsel_pct": share(varsel_own, top),
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"samples: {summary.get('samples')}", "self time by library (% of samples):"]
    lines += [f"  {pct:5.1f}  {name}" for name, pct in summary.get("self_by_library_pct", [])]
    lines.append("top functions by self time:")
    lines += [f"  {pct:5.1f}  {name}" for name, pct in summary.get("top_self_pct", [])]
    busy = summary.get("without_socket_waits") or {}
    lines.append(f"without samples in socket writes and select ({busy.get('samples')} samples), self by library:")
    lines += [f"  {pct:5.1f}  {name}" for name, pct in busy.get("self_by_library_pct", [])]
    lines.append("  top functions by self time:")
    lines += [f"  {pct:5.1f}  {name}" for name, pct in busy.get("top_self_pct", [])]
    lines.append("top functions by inclusive time (below the shared root frames):")
    lines += [f"  {pct:5.1f}  {name}" for name, pct in summary.get("top_inclusive_pct", [])]
    lines.append("varsel's functions by inclusive time:")
    lines += [f"  {pct:5.1f}  {name}" for name, pct in summary.get("top_inclusive_varsel_pct", [])]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(summarize(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15)))
