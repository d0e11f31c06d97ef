"""Backoff for work that failed for a reason that may pass: a provider down, a registry unreachable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `first_seconds`, doubled per attempt, never above `max_seconds`, never before a
    provider's own Retry-After."""

    first_seconds: float
    max_seconds: float

    def delay(self, attempts: int, retry_after: float | None = None) -> timedelta:
        backoff = min(self.max_seconds, self.first_seconds * 2 ** min(max(0, attempts - 1), 32))
        return timedelta(seconds=max(backoff, retry_after or 0.0))
