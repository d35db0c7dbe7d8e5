"""topic_fields: topic levels as text columns.

Options:

- ``levels`` (required): ``{level: column}``. Levels count from 0 (``sensors/north/dev7`` has
  ``sensors`` at 0, ``north`` at 1, ``dev7`` at 2); negative ones count from the end (-1 is
  the last level), which suits topics of different depths.
- ``required`` (default ``false``): a topic too short for a level goes to ``attic_rejects``
  instead of getting NULL there.

Example::

    - topic_fields:
        levels: {1: site, 2: device, -1: kind}

``sensors/north/dev7/telemetry`` becomes ``site = 'north'``, ``device = 'dev7'``,
``kind = 'telemetry'`` (TEXT columns).
"""

from __future__ import annotations

from collections.abc import Callable

from attic.filters._chain import Rejected, names_problem
from attic.record import Record


def make(levels: dict[int, str], required: bool = False) -> Callable[[Record], Record]:
    """Given ``{level: column}``, return the filter. Raise ValueError for bad options."""
    if not isinstance(levels, dict) or not levels:
        raise ValueError("levels: give {level: column, ...} like {1: site, 2: device}")
    plan: list[tuple[int, str]] = []
    for level, column in levels.items():
        try:
            index = int(level)
        except (TypeError, ValueError):
            raise ValueError(f"levels: a level is a whole number (0 is the first, -1 the last), got {level!r}") \
                from None
        if isinstance(level, bool) or str(index) != str(level).strip():
            raise ValueError(f"levels: a level is a whole number (0 is the first, -1 the last), got {level!r}")
        plan.append((index, column))
    problem = names_problem(tuple(column for _, column in plan))
    if problem:
        raise ValueError(f"levels: {problem}")
    if not isinstance(required, bool):
        raise ValueError(f"required: true or false, got {required!r}")
    types = {column: "TEXT" for _, column in plan}

    def topic_fields(record: Record) -> Record:
        parts = record.topic.split("/")
        count = len(parts)
        out = record.fields
        for index, column in plan:
            if -count <= index < count:
                out[column] = parts[index]
            elif required:
                raise Rejected(f"topic {record.topic!r} has no level {index}")
            else:
                out[column] = None
        record.types.update(types)
        return record
    return topic_fields
