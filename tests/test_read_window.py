"""attic.window: times as users write them, and MQTT topic filters (in Python and in SQL)."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import date, datetime, timedelta, timezone

import pytest
from paho.mqtt.client import topic_matches_sub

from attic.window import check_filter, parse_time, topic_matches, topic_sql

US = 1_000_000
T = int(datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc).timestamp()) * US
NOW = T + 3600 * US


@pytest.mark.parametrize("value, want", [
    ("2026-11-23T10:00", T),
    ("2026-11-23 10:00", T),
    ("2026-11-23T10:00Z", T),
    ("2026-11-23T10:00:00.000250Z", T + 250),
    ("2026-11-23T11:00+01:00", T),
    ("2026-11-23", T - 10 * 3600 * US),
    (" 2026-11-23T10:00 ", T),
    (datetime(2026, 11, 23, 10), T),  # naive means UTC
    (datetime(2026, 11, 23, 5, tzinfo=timezone(timedelta(hours=-5))), T),
    (date(2026, 11, 23), T - 10 * 3600 * US),
    (T, T),
    (str(T), T),
    (0, 0),
    ("now", NOW),
    ("-1h", T),
    ("-30m", NOW - 1800 * US),
    ("-250ms", NOW - 250_000),
])
def test_parse_time(value, want):
    assert parse_time(value, NOW) == want


def test_parse_time_takes_pandas_timestamps():
    pd = pytest.importorskip("pandas")
    assert parse_time(pd.Timestamp("2026-11-23T10:00:00.000001Z")) == T + 1


@pytest.mark.parametrize("value, message", [
    ("yesterday", "not a time"), ("2026-13-01", "not a time"), ("-1x", "relative"), (1.5, "not a time"),
    (True, "not a time"), (None, "not a time"), (1763892000, "if it is seconds, write 1763892000000000"),
])
def test_parse_time_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_time(value, NOW)


def test_relative_times_need_now():
    with pytest.raises(ValueError, match="relative to now"):
        parse_time("-1h")


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "+a/b", "#/"])
def test_check_filter_rejects(bad):
    with pytest.raises(ValueError):
        check_filter(bad)


FILTERS = ["#", "+", "+/+", "/+", "+/#", "a", "a/b", "a/+", "a/#", "a/+/c", "a/+/#", "+/b/+", "$SYS/#", "$SYS/+",
           "+/broker", "a/b/c/#", "50%/_x", "50%/+", "ü/#", "a//c", "a/+/+"]
TOPICS = ["a", "a/", "a/b", "a/b/c", "a/b/c/d", "a//c", "/a", "/", "b", "$SYS", "$SYS/broker", "$SYS/x/y",
          "50%/_x", "50x/ax", "50%/_xx", "ü", "ü/x", "a/c", "ab", "ab/c", "a0", "b/broker", "x/b/y"]


@pytest.mark.parametrize("topic_filter", FILTERS)
def test_topic_matches_like_paho(topic_filter):
    check_filter(topic_filter)
    for topic in TOPICS:
        assert topic_matches(topic_filter, topic) == topic_matches_sub(topic_filter, topic), topic


def test_the_spec_cases():
    assert topic_matches("sensors/#", "sensors")
    assert not topic_matches("sensors/+", "sensors")
    assert topic_matches("sensors/+", "sensors/")
    assert not topic_matches("#", "$SYS/broker") and not topic_matches("+/broker", "$SYS/broker")
    assert topic_matches("$SYS/#", "$SYS/broker")


def test_sql_selects_what_python_matches():
    conn = sqlite3.connect(":memory:")
    conn.create_function("mqtt_match", 2, topic_matches, deterministic=True)
    conn.execute("CREATE TABLE messages (topic TEXT)")
    conn.executemany("INSERT INTO messages VALUES (?)", [(t,) for t in TOPICS])
    for topic_filter, (sql, params, needs_match) in zip(FILTERS, map(topic_sql, FILTERS), strict=True):
        got = {row[0] for row in conn.execute(f"SELECT topic FROM messages WHERE {sql}", params)}
        assert got == {t for t in TOPICS if topic_matches(topic_filter, t)}, topic_filter
        assert needs_match == ("+" in topic_filter)  # exact topics and prefix/# need no Python per row


def test_all_pairs_agree_with_paho_on_generated_topics():
    levels = ["a", "b", "", "$x", "+x%"]
    topics = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(levels, repeat=n)]
    for topic_filter in FILTERS:
        for topic in topics:
            assert topic_matches(topic_filter, topic) == topic_matches_sub(topic_filter, topic), (topic_filter, topic)
