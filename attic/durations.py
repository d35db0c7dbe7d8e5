"""Durations as users write them in YAML: ``250ms``, ``2s``, ``5m``, ``1h``, ``90d``, or a bare number of seconds.

Pure functions, no clock: parsing is the only thing done here so that every config key
that takes a duration accepts exactly the same spellings.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Given a YAML value, return the duration in seconds.

    Raise ValueError with a message fit for the user when the value is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like 250ms, 2s, 5m, 1h or 1d, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            number, unit = match.groups()
            return float(number) * _UNITS[unit or "s"]
    raise ValueError(f"must be a duration like 250ms, 2s, 5m, 1h or 1d, got {value!r}")


def format_duration(seconds: float) -> str:
    """Given seconds, return the shortest exact spelling (``3600`` → ``1h``), for messages and `check`."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds}s"
