"""The v2 instant order API (being built: see issue #16)."""

from __future__ import annotations

from fastapi import APIRouter

PREFIX = "/notifications/api/v1"

router = APIRouter(prefix=PREFIX, tags=["Orders (v2)"])
