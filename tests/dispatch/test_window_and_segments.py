from __future__ import annotations

from datetime import UTC, datetime

import pytest

from varsel.dispatch.segments import sms_segments
from varsel.dispatch.window import OSLO, next_daytime_send


def oslo(*args: int) -> datetime:
    return datetime(*args, tzinfo=OSLO)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("ordered", "sent"),
    [
        (oslo(2026, 3, 2, 16, 59), oslo(2026, 3, 2, 16, 59)),  # inside: at once
        (oslo(2026, 3, 2, 9, 0), oslo(2026, 3, 2, 9, 0)),  # the opening minute is inside
        (oslo(2026, 3, 2, 17, 0), oslo(2026, 3, 3, 9, 0)),  # closing time: next morning
        (oslo(2026, 3, 2, 3, 0), oslo(2026, 3, 2, 9, 0)),  # night: this morning
        (oslo(2026, 3, 2, 23, 59), oslo(2026, 3, 3, 9, 0)),
        # Daylight saving starts on 29 March 2026 at 02:00 (+01:00 → +02:00): still 09:00 on the wall clock.
        (oslo(2026, 3, 28, 18, 0), oslo(2026, 3, 29, 9, 0)),
        # And ends on 25 October 2026 at 03:00 (+02:00 → +01:00).
        (oslo(2026, 10, 24, 20, 0), oslo(2026, 10, 25, 9, 0)),
    ],
)
def test_daytime_window(ordered: datetime, sent: datetime) -> None:
    result = next_daytime_send(ordered.astimezone(UTC))
    assert result == sent
    assert result.tzinfo is UTC


def test_daylight_saving_opening_is_a_different_utc_hour() -> None:
    before = next_daytime_send(oslo(2026, 3, 28, 18, 0).astimezone(UTC))
    after = next_daytime_send(oslo(2026, 3, 29, 18, 0).astimezone(UTC))
    assert (before.hour, after.hour) == (7, 7)  # 09:00 CEST is 07:00 UTC on both the 29th and 30th
    winter = next_daytime_send(oslo(2026, 3, 27, 18, 0).astimezone(UTC))
    assert winter.hour == 8  # 09:00 CET on the 28th


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters take two septets
        ("€" * 81, 2),
        ("Blåbærsyltetøy" * 5, 1),  # æ ø å are GSM-7
        ("ł" * 70, 1),  # not GSM-7: UCS-2
        ("ł" * 71, 2),
        ("ł" * 134, 2),
        ("ł" * 135, 3),
        ("😀" * 35, 1),  # two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_sms_segments(text: str, parts: int) -> None:
    assert sms_segments(text) == parts
