"""What a reader asks for: a time window (``since``/``until``) and an MQTT topic filter.

Pure logic, no clock and no I/O: ``parse_time`` takes ``now_us`` from its caller (only the
relative spellings such as ``-1h`` need it), and the topic functions take strings. The CLI,
``attic.read()`` and ``attic.rows()`` all go through here, so every entry point accepts
exactly the same spellings.

Times: a ``datetime`` (a naive one is taken as UTC, like ``ts_us`` itself, not as the
machine's local time, so a script gives the same rows on every machine), a ``date``
(midnight UTC), an ISO string (``2026-11-23``, ``2026-11-23T10:00``, ``...Z``,
``...+01:00``; naive strings are UTC too), ``now``, ``-<duration>`` (``-1h``, ``-30m``:
before ``now_us``), or µs since the epoch (an int, or a string of digits).
"""

from __future__ import annotations

import numbers
from datetime import date, datetime, timedelta, timezone

from attic.durations import parse_duration

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_SECONDS_LIKE = 10**12  # µs below this are 1970-01-12: such a number was surely meant as seconds


def _from_datetime(moment: datetime) -> int:
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // _ONE_US


def _from_integer(value: int) -> int:
    if 0 < value < _SECONDS_LIKE:
        raise ValueError(f"{value} is a count of µs since the epoch (1970-01-01); if it is seconds, "
                         f"write {value * 1_000_000}")
    return value


def parse_time(value: object, now_us: int | None = None) -> int:
    """Given a time as users write it (see the module docstring), return µs since the epoch (UTC).

    ``now_us`` is needed only for ``now`` and ``-<duration>``. Raise ValueError with a message
    fit for the user when the value is not a time.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, datetime):
        return _from_datetime(value)
    if isinstance(value, date):
        return _from_datetime(datetime(value.year, value.month, value.day))
    if isinstance(value, numbers.Integral):
        return _from_integer(int(value))
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r} (use a datetime, an ISO string or µs since the epoch)")
    text = value.strip()
    if text.isdigit():
        return _from_integer(int(text))
    if text == "now" or text.startswith("-"):
        if now_us is None:
            raise ValueError(f"{text!r} is relative to now, which is not known here")
        if text == "now":
            return now_us
        try:
            return now_us - round(parse_duration(text[1:]) * 1_000_000)
        except ValueError:
            raise ValueError(f"not a time: {text!r} (relative times look like -30m, -1h, -2d)") from None
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text  # Python 3.10 has no 'Z'
    try:
        return _from_datetime(datetime.fromisoformat(iso))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use e.g. 2026-11-23, 2026-11-23T10:00, "
                         "2026-11-23T10:00:00+01:00, -1h, or µs since the epoch)") from None


def check_filter(topic_filter: str) -> None:
    """Raise ValueError unless ``topic_filter`` is a valid MQTT topic filter (wildcards whole levels, ``#`` last)."""
    if not topic_filter:
        raise ValueError("a topic filter must not be empty")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{topic_filter!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"{topic_filter!r}: '+' must be a whole level (as in 'sensors/+/temp')")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Does ``topic`` match the MQTT filter? ``+`` is one level, ``#`` the parent and any levels below
    (``a/#`` matches ``a``), and a leading wildcard never matches a ``$`` topic (``$SYS/...``).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for i, level in enumerate(wanted):
        if level == "#":
            return True
        if i >= len(levels) or (level != "+" and level != levels[i]):
            return False
    return len(levels) == len(wanted)


def _after_prefix(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix`` (non-empty)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def topic_sql(topic_filter: str) -> tuple[str, list[str], bool]:
    """Given a valid filter, return ``(SQL condition on topic, params, needs mqtt_match)``.

    Exact topics and ``prefix/#`` filters are matched in SQL alone; a filter with ``+`` is narrowed
    by a range on its literal prefix, and the exact test is the ``mqtt_match(filter, topic)``
    function the reader registers. Ranges rather than LIKE: topics may contain ``%`` and ``_``.
    """
    if "+" not in topic_filter and "#" not in topic_filter:
        return "topic = ?", [topic_filter], False
    literal = []
    for level in topic_filter.split("/"):
        if level in ("+", "#"):
            break
        literal.append(level)
    prefix = "/".join(literal) + "/" if literal else ""
    if not prefix:
        dollar = "substr(topic, 1, 1) <> '$'"
        if topic_filter == "#":
            return dollar, [], False
        return f"{dollar} AND mqtt_match(?, topic)", [topic_filter], True
    in_range = "(topic >= ? AND topic < ?)"
    if topic_filter.endswith("/#") and "+" not in topic_filter:
        return f"(topic = ? OR {in_range})", [prefix[:-1], prefix, _after_prefix(prefix)], False
    return f"{in_range} AND mqtt_match(?, topic)", [prefix, _after_prefix(prefix), topic_filter], True
