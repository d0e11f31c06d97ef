"""The SMS send window: Daytime SMS go out between 09:00 and 17:00 Norwegian time, and wait for 09:00 otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

OSLO = ZoneInfo("Europe/Oslo")
OPENS = time(9, 0)
CLOSES = time(17, 0)


def next_daytime_send(moment: datetime) -> datetime:
    """`moment` if it lies inside the window, else the window's next opening (in UTC).

    Computed on Oslo's wall clock, so 09:00 stays 09:00 across daylight-saving changes.
    """
    local = moment.astimezone(OSLO)
    if OPENS <= local.time() < CLOSES:
        return moment.astimezone(UTC)
    day = local.date() if local.time() < OPENS else local.date() + timedelta(days=1)
    return datetime.combine(day, OPENS, tzinfo=OSLO).astimezone(UTC)
