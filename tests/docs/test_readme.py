"""The README is the door, not the manual: short, every link in it leads somewhere in the repository, and the
console's screenshots are shown where a reader finds them.

mkdocs checks the links of docs/ (`make docs`, --strict); the README is not part of the site, so its links are
checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.examples import ROOT

README = ROOT / "README.md"
# Markdown links and images: [text](target) and ![alt](target).
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _local_targets(path: Path) -> list[str]:
    return [
        target
        for target in _LINK.findall(path.read_text(encoding="utf-8"))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")
    ]


def test_the_readme_is_at_most_about_200_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_every_link_in_the_readme_leads_to_a_file_of_the_project() -> None:
    targets = _local_targets(README)
    assert "docs/getting-started.md" in targets
    broken = [target for target in targets if not (ROOT / target.split("#")[0]).exists()]
    assert broken == []
    # The design is the project's own (docs/design.md), not a file beside the repository.
    assert not [target for target in targets if target.startswith("..")]


def test_every_page_of_the_site_is_linked_from_the_readme() -> None:
    linked = {target.split("#")[0] for target in _local_targets(README)}
    pages = {str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md") if path.name != "index.md"}
    assert pages - linked == set()


def test_every_screenshot_is_shown() -> None:
    shown = {
        (path.parent / target).resolve()
        for path in [README, ROOT / "docs" / "console.md"]
        for target in _local_targets(path)
        if target.endswith(".png")
    }
    screenshots = set((ROOT / "docs" / "screenshots").glob("*.png"))
    assert screenshots
    assert {path.resolve() for path in screenshots} - shown == set()
