"""throttle: at most one record per key per interval; the others are dropped.

For chatty devices whose every message you do not need: the first record of a key is stored,
then nothing of that key until ``interval`` has passed since the stored one. Time is the
records' reception time (``ts_us``). Dropped records are counted as filtered, not lost.

Options:

- ``interval`` (required): a duration like ``10s``, ``1m`` or ``500ms``.
- ``key`` (default ``topic``): what counts as one source: ``topic``, a field name, or a list
  of them (``[topic, channel]``). Records with a missing field share the key "missing".

Example::

    - throttle: {interval: 10s}
    - topic_fields: {levels: {1: site}}
    - throttle: {interval: 1m, key: site}
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from attic.filters._recent import Recent, span_option
from attic.record import Record


def key_function(key: str | list[str]) -> Callable[[Record], Hashable]:
    """Given ``topic``, a field name or a list of them, return ``record -> key``. Raise ValueError."""
    names = key if isinstance(key, list) else [key]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"key: topic, a field name, or a list of them, got {key!r}")

    def part(name: str) -> Callable[[Record], Hashable]:
        if name == "topic":
            return lambda record: record.topic
        return lambda record: record.fields.get(name)
    parts = [part(name) for name in names]
    if len(parts) == 1:
        return parts[0]
    return lambda record: tuple(p(record) for p in parts)


def make(interval: str | float, key: str | list[str] = "topic") -> Callable[[Record], Record | None]:
    """Given the interval and key, return the filter. Raise ValueError for bad options."""
    span = span_option("interval", interval)
    key_of = key_function(key)
    recent = Recent(span)

    def throttle(record: Record) -> Record | None:
        return record if recent.admit(key_of(record), record.ts_us) else None
    return throttle
