"""The SMS send window: Daytime SMS go out between 09:00 and 17:00 Norwegian time, and wait for 09:00 otherwise.

The window is a setting (``VARSEL_DISPATCH__SMS_DAYTIME__OPENS``, ``…__CLOSES``, ``…__TIMEZONE``): the reference's
hours are the default, but an operator serving another country, or a test run at night against real processes,
needs other hours. Opening and closing both at 00:00 means the window never closes.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, field_validator, model_validator

OSLO = ZoneInfo("Europe/Oslo")
OPENS = time(9, 0)
CLOSES = time(17, 0)


class DaytimeWindow(BaseModel):
    opens: time = OPENS
    closes: time = CLOSES
    timezone: str = "Europe/Oslo"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @model_validator(mode="after")
    def _opens_before_closing(self) -> DaytimeWindow:
        if self.opens.tzinfo is not None or self.closes.tzinfo is not None:
            raise ValueError("opens and closes are wall-clock times in `timezone`, without an offset")
        if not self.always_open and self.opens >= self.closes:
            raise ValueError("opens must be before closes (or both 00:00 for a window that never closes)")
        return self

    @property
    def always_open(self) -> bool:
        return self.opens == self.closes == time(0, 0)

    def next_send(self, moment: datetime) -> datetime:
        """`moment` if it lies inside the window, else the window's next opening (in UTC).

        Computed on the zone's wall clock, so 09:00 stays 09:00 across daylight-saving changes.
        """
        if self.always_open:
            return moment.astimezone(UTC)
        local = moment.astimezone(ZoneInfo(self.timezone))
        if self.opens <= local.time() < self.closes:
            return moment.astimezone(UTC)
        day = local.date() if local.time() < self.opens else local.date() + timedelta(days=1)
        return datetime.combine(day, self.opens, tzinfo=local.tzinfo).astimezone(UTC)


DAYTIME = DaytimeWindow()


def next_daytime_send(moment: datetime, window: DaytimeWindow = DAYTIME) -> datetime:
    """`moment` if it lies inside the window, else the window's next opening (in UTC)."""
    return window.next_send(moment)
