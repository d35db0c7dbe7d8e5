"""Wall-clock-aligned rotation periods.

A period is ``[start_us, end_us)``. Periods are aligned to the start of the day in the
storage time zone (UTC by default), so ``rotate: 1h`` starts files at :00 of each hour and
``rotate: 7h`` at 00:00, 07:00, 14:00 and 21:00 (the last one cut at midnight): a file never
spans two days, including across daylight-saving changes when ``timezone: local``.

Pure logic: every function takes the timestamp it works on and reads no clock, so the
edge cases (day ends, DST, odd rotation lengths) are tested without waiting for them.
Python's ``TimedRotatingFileHandler`` does not align to the clock, hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

US = 1_000_000


@dataclass(frozen=True)
class Period:
    start_us: int
    end_us: int
    day: str  # YYYY-MM-DD in the storage time zone

    def __contains__(self, ts_us: int) -> bool:
        return self.start_us <= ts_us < self.end_us


def _midnight_us(year: int, month: int, day: int, tz: tzinfo | None) -> int:
    # A naive datetime is local time for .timestamp(), which is what tz=None means here.
    return int(datetime(year, month, day, tzinfo=tz).timestamp()) * US


def period_of(ts_us: int, rotate_us: int, tz: tzinfo | None) -> Period:
    """Given a timestamp, the rotation length and the storage time zone (None = local),
    return the period that holds the timestamp.
    """
    moment = datetime.fromtimestamp(ts_us / US, tz)
    day_start = _midnight_us(moment.year, moment.month, moment.day, tz)
    if day_start > ts_us:  # float rounding right at midnight
        moment -= timedelta(days=1)
        day_start = _midnight_us(moment.year, moment.month, moment.day, tz)
    following = moment.date() + timedelta(days=1)
    day_end = _midnight_us(following.year, following.month, following.day, tz)
    if ts_us >= day_end:  # float rounding right before midnight
        return period_of(day_end, rotate_us, tz)
    offset = (ts_us - day_start) // rotate_us * rotate_us
    start = day_start + offset
    return Period(start, min(start + rotate_us, day_end), moment.strftime("%Y-%m-%d"))
