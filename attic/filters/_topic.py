"""MQTT topic filters for filters: does ``sensors/+/x/#`` match ``sensors/a/x/b/c``?

The rules are the broker's (MQTT 5, section 4.7): ``+`` is exactly one level, ``#`` is the rest
including none (``a/#`` matches ``a``), and a wildcard in the first level never matches a topic
starting with ``$`` (``$SYS/...``). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from attic.config import topic_problem


def matches(levels: list[str], topic: str) -> bool:
    """Given a topic filter split at ``/`` and a topic, return whether the filter matches it."""
    parts = topic.split("/")
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(parts) == len(levels)


def topic_matcher(filters: object, option: str = "topic") -> Callable[[str], bool]:
    """Given one topic filter or a list of them, return ``topic -> bool`` (any of them matches).

    Raise ValueError, naming ``option``, for a filter the broker would refuse.
    """
    patterns = filters if isinstance(filters, list) else [filters]
    if not patterns:
        raise ValueError(f"{option}: give at least one topic filter")
    exact: set[str] = set()
    wild: list[list[str]] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"{option}: a topic filter is text like sensors/+/temp, got {pattern!r}")
        problem = topic_problem(pattern)
        if problem:
            raise ValueError(f"{option}: {problem}")
        if "+" in pattern or "#" in pattern:
            wild.append(pattern.split("/"))
        else:
            exact.add(pattern)

    def match(topic: str) -> bool:
        return topic in exact or any(matches(levels, topic) for levels in wild)
    return match
