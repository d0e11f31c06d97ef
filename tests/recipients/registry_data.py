"""Helpers to fill the local registry in a test through the real importer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from varsel.clock import Clock
from varsel.db.engine import Database
from varsel.recipients.imports import ImportSummary, RegistryImporter


async def _numbered(lines: list[str]) -> AsyncIterator[tuple[int, str]]:
    for number, line in enumerate(lines, start=1):
        yield number, line


async def load(
    database: Database, clock: Clock, records: list[dict[str, Any] | str], batch_size: int = 2000
) -> ImportSummary:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    importer = RegistryImporter(database, clock, batch_size=batch_size)
    return await importer.import_lines(_numbered(lines), ImportSummary())
