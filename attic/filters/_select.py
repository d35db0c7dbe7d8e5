"""Which records ``drop`` and ``keep`` pick: by topic filter, by field value, or both.

One chooser for both filters, so ``keep`` is exactly the opposite of ``drop`` with the same
options. Field values are compared as they are, and as text when one side is text (a topic
level taken by ``topic_fields`` is text, while ``value: 7`` in YAML is a number).
"""

from __future__ import annotations

from collections.abc import Callable

from attic.filters._topic import topic_matcher
from attic.record import Record


class NotGiven:
    """The default of ``value``: distinguishes "no value given" from ``value: null``."""

    def __repr__(self) -> str:
        return "not given"


NOT_GIVEN = NotGiven()


def _same(a: object, b: object) -> bool:
    if isinstance(a, str) != isinstance(b, str) and a is not None and b is not None:
        return str(a) == str(b)
    return a == b


def chooser(topic: str | list[str] | None, field: str | None, value: object) -> Callable[[Record], bool]:
    """Given the options of drop/keep, return ``record -> bool``. Raise ValueError for bad options.

    ``topic``: a topic filter or a list of them (MQTT wildcards). ``field`` alone: the field is
    present and not null. ``field`` with ``value``: the field equals it (or one of a list).
    """
    if field is None and value is not NOT_GIVEN:
        raise ValueError("value needs field: the field to compare")
    if topic is None and field is None:
        raise ValueError("give topic (a topic filter or a list of them), field (with or without value), or both")
    if field is not None and (not isinstance(field, str) or not field):
        raise ValueError(f"field must be a field name, got {field!r}")
    by_topic = topic_matcher(topic) if topic is not None else None
    if field is None:
        return lambda record: by_topic(record.topic)
    if value is NOT_GIVEN:
        def by_field(record: Record) -> bool:
            return record.fields.get(field) is not None
    else:
        values = value if isinstance(value, list) else [value]

        def by_field(record: Record) -> bool:
            have = record.fields.get(field)
            return any(_same(have, wanted) for wanted in values)
    if by_topic is None:
        return by_field
    return lambda record: by_topic(record.topic) and by_field(record)
