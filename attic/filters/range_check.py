"""range_check: a value outside [min, max] sends the record to ``attic_rejects``.

For sensor faults (a thermometer reporting 850 °C) that should not end up among the data, yet
should not vanish either: the rejected record keeps its raw topic and payload, with
``stage = range_check`` and an error like ``temperature 127.0 is above max 85``.

Options:

- ``field`` (required): the field to check (made by an earlier filter, e.g. ``json_fields``).
- ``min``, ``max``: the bounds, inclusive; give one or both.
- ``required`` (default ``false``): a record without the field (or with NULL) is rejected too;
  otherwise it passes.

A value that is not a number (text that does not read as one, NaN) is rejected.

Example::

    - json_fields: {fields: {temperature: real}}
    - range_check: {field: temperature, min: -40, max: 85}
"""

from __future__ import annotations

import math
from collections.abc import Callable

from attic.filters._chain import Rejected
from attic.record import Record


def _bound(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return value


def make(field: str, min: float | None = None, max: float | None = None,  # noqa: A002 - the option names
         required: bool = False) -> Callable[[Record], Record]:
    """Given the field and its bounds, return the filter. Raise ValueError for bad options."""
    if not isinstance(field, str) or not field:
        raise ValueError(f"field must be a field name, got {field!r}")
    lo, hi = _bound("min", min), _bound("max", max)
    if lo is None and hi is None:
        raise ValueError("give min, max or both")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min ({lo}) is above max ({hi})")
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi

    def range_check(record: Record) -> Record:
        value = record.fields.get(field)
        if value is None:
            if required:
                raise Rejected(f"{field} is missing")
            return record
        number = value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise Rejected(f"{field} is {value!r}, not a number") from None
        if number < low:
            raise Rejected(f"{field} {value} is below min {lo}")
        if number > high:
            raise Rejected(f"{field} {value} is above max {hi}")
        if number != number:
            raise Rejected(f"{field} is NaN, not a number")
        return record
    return range_check
