"""drop: leave out the records that match, by topic filter or by field value.

A dropped record is not stored anywhere: it is counted as filtered, not lost (the self-report
shows the count). Use ``range_check`` instead when the records are wrong rather than unwanted
(those go to ``attic_rejects``).

Options (give ``topic``, ``field``, or both; with both, a record must match both):

- ``topic``: an MQTT topic filter, or a list of them; ``+`` is one level, ``#`` the rest.
- ``field``: drop records where this field is present and not null; with ``value``, where it
  equals ``value`` (or one of them, when ``value`` is a list). ``value: null`` matches a
  missing or null field. Text and numbers compare by their text (``value: 7`` matches ``"7"``).

Example::

    - drop: {topic: ["sensors/+/+/debug", "$SYS/#"]}
    - json_fields: {fields: {status: text}}
    - drop: {field: status, value: [offline, unknown]}
"""

from __future__ import annotations

from collections.abc import Callable

from attic.filters._select import NOT_GIVEN, chooser
from attic.record import Record


def make(topic: str | list[str] | None = None, field: str | None = None,
         value: object = NOT_GIVEN) -> Callable[[Record], Record | None]:
    """Given what to drop, return the filter. Raise ValueError for bad options."""
    chosen = chooser(topic, field, value)

    def drop(record: Record) -> Record | None:
        return None if chosen(record) else record
    return drop
