"""device_time: the device's own timestamp as a ``device_ts_us`` column, for analysis by event time.

Attic files records by the time it received them (``ts_us``): that decides the file, and it is
never changed. Devices that buffer while offline, or clocks that run late, make event time
differ from reception time; this filter keeps the event time beside it, in µs since the Unix
epoch (UTC), as an INTEGER column you can sort and join on.

Options:

- ``field`` (required): where the time is: a field made by an earlier filter, or else a
  dotted path into the JSON payload (``ts``, ``meta.time``).
- ``unit`` (default ``auto``): ``s``, ``ms``, ``us``, ``ns`` for numbers, ``iso`` for ISO 8601
  text (``2026-11-23T10:00:00.250Z``). ``auto`` reads text as ISO 8601 and guesses a number's
  unit from its size (seconds until the year 5000, then ms, µs, ns).
- ``timezone`` (default ``utc``): the zone of ISO times written without an offset (Tasmota
  sends local time): ``utc``, ``local`` or a name like ``Europe/Berlin``.
- ``column`` (default ``device_ts_us``): the column to write.
- ``required`` (default ``false``): a record without the time (or whose payload is not JSON)
  goes to ``attic_rejects`` instead of getting NULL. A time that cannot be read is always a
  reject.

Example::

    - device_time: {field: ts, unit: ms}

``{"ts": 1795420800250, "temperature": 21.5}`` gets ``device_ts_us = 1795420800250000``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, tzinfo
from datetime import timezone as dt_timezone

from attic.filters._chain import Rejected, names_problem
from attic.filters._json import MISSING, lookup, parse_payload, split_path
from attic.record import Record

UNITS = ("auto", "s", "ms", "us", "ns", "iso")
_SCALE = {"s": 1_000_000, "ms": 1_000, "us": 1}
_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
_FRACTION = re.compile(r"(\.\d+)")


def _zone(name: object) -> tzinfo | None:
    if name == "utc":
        return dt_timezone.utc
    if name == "local":
        return None
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(str(name))
    except Exception:  # noqa: BLE001 - any failure means "not a zone"
        raise ValueError(f"timezone must be utc, local or a zone name like Europe/Berlin, got {name!r}") from None


def number_to_us(value: float, unit: str) -> int:
    """Given an epoch time and its unit (or ``auto``), return µs since the epoch."""
    if unit == "auto":
        size = abs(value)
        unit = "s" if size < 1e11 else "ms" if size < 1e14 else "us" if size < 1e17 else "ns"
    if unit == "ns":
        return int(value) // 1000
    if isinstance(value, int):
        return value * _SCALE[unit]
    return round(value * _SCALE[unit])


def iso_to_us(text: str, zone: tzinfo | None) -> int:
    """Given ISO 8601 text, return µs since the epoch; a time without offset is in ``zone``."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: m.group(1)[:7].ljust(7, "0"), text, count=1)  # Python 3.10 wants 3 or 6 digits
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone) if zone is not None else moment.astimezone()
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def make(field: str, unit: str = "auto", timezone: str = "utc", column: str = "device_ts_us",
         required: bool = False) -> Callable[[Record], Record]:
    """Given where the time is and how it is written, return the filter. Raise ValueError for bad options."""
    parts = split_path(field)
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    zone = _zone(timezone)
    problem = names_problem((column,))
    if problem:
        raise ValueError(f"column: {problem}")

    def device_time(record: Record) -> Record:
        value = record.fields.get(field, MISSING)
        if value is MISSING and record.payload is not None:
            try:
                value = lookup(parse_payload(record.payload), parts)
            except Rejected:
                if required:
                    raise
        if value is MISSING or value is None:
            if required:
                raise Rejected(f"{field} is missing")
            record.fields[column] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and unit != "iso":
            record.fields[column] = number_to_us(value, unit)
        elif isinstance(value, str) and unit in ("auto", "iso"):
            try:
                record.fields[column] = iso_to_us(value, zone)
            except ValueError:
                raise Rejected(f"{field}: {value[:40]!r} is not an ISO 8601 time") from None
        else:
            raise Rejected(f"{field}: {value!r:.40} is not a time in unit {unit}")
        record.types[column] = "INTEGER"
        return record
    return device_time
