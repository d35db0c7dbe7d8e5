"""keep: store only the records that match, by topic filter or by field value; drop the rest.

The opposite of ``drop``, with the same options. Dropped records are counted as filtered, not
lost.

Options (give ``topic``, ``field``, or both; with both, a record must match both to be kept):

- ``topic``: an MQTT topic filter, or a list of them; ``+`` is one level, ``#`` the rest.
- ``field``: keep records where this field is present and not null; with ``value``, where it
  equals ``value`` (or one of them, when ``value`` is a list).

Example::

    - keep: {topic: "sensors/+/+/telemetry"}
    - topic_fields: {levels: {1: site}}
    - keep: {field: site, value: [north, south]}
"""

from __future__ import annotations

from collections.abc import Callable

from attic.filters._select import NOT_GIVEN, chooser
from attic.record import Record


def make(topic: str | list[str] | None = None, field: str | None = None,
         value: object = NOT_GIVEN) -> Callable[[Record], Record | None]:
    """Given what to keep, return the filter. Raise ValueError for bad options."""
    chosen = chooser(topic, field, value)

    def keep(record: Record) -> Record | None:
        return record if chosen(record) else None
    return keep
