"""Each built-in filter on its own: called directly with Records, no broker, no files."""

from __future__ import annotations

import json
import math

import pytest

from attic.filters import (
    Rejected,
    dedupe,
    device_time,
    drop,
    json_fields,
    keep,
    range_check,
    rename,
    throttle,
    topic_fields,
)
from attic.filters._topic import matches, topic_matcher
from attic.record import Record

S = 1_000_000


def rec(payload: object = None, topic: str = "sensors/north/dev7/telemetry", ts_us: int = 1_000 * S,
        **fields) -> Record:
    if isinstance(payload, (dict, list, int, float)) and not isinstance(payload, bool):
        payload = json.dumps(payload).encode()
    elif isinstance(payload, str):
        payload = payload.encode()
    return Record(ts_us, topic, payload, 1, 0, fields=dict(fields))


# ------------------------------------------------------------------ json_fields

def test_json_fields_dotted_paths_declared_types_and_conversion():
    fn = json_fields.make(fields={"temperature": "real", "humidity": "real", "sensor.battery": "real",
                                  "count": "integer", "state": "text", "raw": "blob", "values.1": None,
                                  "missing": "real"})
    out = fn(rec({"temperature": 21, "humidity": "48.5", "sensor": {"battery": 3.9}, "count": "12",
                  "state": {"on": True}, "raw": "ab", "values": [1, 2.5]}))
    assert out.fields == {"temperature": 21.0, "humidity": 48.5, "sensor_battery": 3.9, "count": 12,
                          "state": '{"on":true}', "raw": b"ab", "values_1": 2.5, "missing": None}
    assert type(out.fields["temperature"]) is float
    assert out.types == {"temperature": "REAL", "humidity": "REAL", "sensor_battery": "REAL", "count": "INTEGER",
                         "state": "TEXT", "raw": "BLOB", "missing": "REAL"}


def test_json_fields_list_of_paths_keeps_json_types():
    out = json_fields.make(fields=["a", "b.c", "d"])(rec({"a": 1, "b": {"c": "x"}, "d": [1, 2]}))
    assert out.fields == {"a": 1, "b_c": "x", "d": "[1,2]"}
    assert out.types == {}


@pytest.mark.parametrize("payload, error", [
    (b"not json", "payload is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"\xff\xfe\x00", "payload is not JSON"),
    (b"42", "payload is JSON but not an object: b'42'"),
    (None, "no payload to read JSON from"),
])
def test_json_fields_rejects_what_is_not_a_json_object(payload, error):
    with pytest.raises(Rejected) as info:
        json_fields.make(fields={"t": "real"})(Record(1, "t", payload))
    assert str(info.value).startswith(error)


@pytest.mark.parametrize("value, sql_type, error", [
    ("hot", "real", 't: expected real, got "hot"'),
    (21.5, "integer", "t: expected integer, got 21.5"),
    (2 ** 70, "integer", f"t: expected integer, got {2 ** 70}"),
    ([1], "real", "t: expected real, got [1]"),
])
def test_json_fields_rejects_values_that_do_not_fit_their_type(value, sql_type, error):
    with pytest.raises(Rejected, match=error.replace("[", r"\[").replace("]", r"\]")):
        json_fields.make(fields={"t": sql_type})(rec({"t": value}))


def test_json_fields_integer_accepts_whole_numbers_in_any_spelling():
    fn = json_fields.make(fields={"n": "integer"})
    assert [fn(rec({"n": v})).fields["n"] for v in (3, 3.0, "3", "3.0", True)] == [3, 3, 3, 3, 1]


def test_json_fields_required():
    fn = json_fields.make(fields={"t": "real", "h": "real"}, required=["t"])
    assert fn(rec({"t": 1})).fields == {"t": 1.0, "h": None}
    with pytest.raises(Rejected, match="t is missing"):
        fn(rec({"h": 1}))
    with pytest.raises(Rejected, match="t is missing"):
        fn(rec({"t": None}))
    with pytest.raises(Rejected, match="h is missing"):
        json_fields.make(fields={"t": "real", "h": "real"}, required=True)(rec({"t": 1}))


@pytest.mark.parametrize("options, error", [
    ({"fields": {}}, "fields: give"),
    ({"fields": "temperature"}, "fields: give"),
    ({"fields": {"t": "float"}}, "fields: type must be integer, real, text or blob"),
    ({"fields": {"a..b": "real"}}, "fields: a field path is dotted text"),
    ({"fields": {"topic": "text"}}, "fields: field 'topic' would overwrite the column topic"),
    ({"fields": {"a": "real"}, "required": ["b"]}, "required: true, false, or a list of paths"),
])
def test_json_fields_bad_options(options, error):
    with pytest.raises(ValueError, match=error):
        json_fields.make(**options)


# ------------------------------------------------------------------ topic_fields

def test_topic_fields_levels_from_start_and_end():
    fn = topic_fields.make(levels={1: "site", 2: "device", -1: "kind", 9: "far"})
    out = fn(rec(topic="sensors/north/dev7/telemetry"))
    assert out.fields == {"site": "north", "device": "dev7", "kind": "telemetry", "far": None}
    assert out.types == {"site": "TEXT", "device": "TEXT", "kind": "TEXT", "far": "TEXT"}


def test_topic_fields_required_and_bad_options():
    with pytest.raises(Rejected, match="has no level 5"):
        topic_fields.make(levels={5: "x"}, required=True)(rec(topic="a/b"))
    assert topic_fields.make(levels={"1": "x"})(rec(topic="a/b")).fields == {"x": "b"}
    for levels in ({}, {"one": "x"}, {1: "payload"}, {1: ""}, {True: "x"}):
        with pytest.raises(ValueError, match="levels"):
            topic_fields.make(levels=levels)


# ------------------------------------------------------------------ range_check

def test_range_check_passes_in_range_and_rejects_outside_with_the_value():
    fn = range_check.make(field="temperature", min=-40, max=85)
    for value in (-40, 0, 21.5, 85):
        assert fn(rec(temperature=value)) is not None
    with pytest.raises(Rejected, match=r"^temperature 127.0 is above max 85$"):
        fn(rec(temperature=127.0))
    with pytest.raises(Rejected, match=r"^temperature -99.9 is below min -40$"):
        fn(rec(temperature=-99.9))
    with pytest.raises(Rejected, match="not a number"):
        fn(rec(temperature="hot"))
    with pytest.raises(Rejected, match="NaN"):
        fn(rec(temperature=math.nan))
    assert fn(rec(temperature="21")).fields["temperature"] == "21"  # numeric text is checked, not changed


def test_range_check_missing_one_sided_and_required():
    assert range_check.make(field="t", max=10)(rec()) is not None
    assert range_check.make(field="t", min=0)(rec(t=1e9)) is not None
    with pytest.raises(Rejected, match="t is missing"):
        range_check.make(field="t", min=0, required=True)(rec(t=None))


@pytest.mark.parametrize("options, error", [
    ({"field": "t"}, "give min, max or both"),
    ({"field": "t", "min": 5, "max": 1}, r"min \(5\) is above max \(1\)"),
    ({"field": "t", "min": "low"}, "min must be a number"),
    ({"field": "", "min": 1}, "field must be a field name"),
])
def test_range_check_bad_options(options, error):
    with pytest.raises(ValueError, match=error):
        range_check.make(**options)


# ------------------------------------------------------------------ topic matching, drop, keep

@pytest.mark.parametrize("pattern, topic, expected", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("+/+", "a/b", True), ("+", "", True), ("#", "$SYS/x", False),
    ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True), ("a/+/c", "a//c", True), ("a/b", "a/b/", False),
])
def test_topic_filter_matching_follows_mqtt(pattern, topic, expected):
    assert matches(pattern.split("/"), topic) is expected
    assert topic_matcher(pattern)(topic) is expected


def test_drop_by_topic_by_field_and_both():
    by_topic = drop.make(topic=["sensors/+/+/debug", "$SYS/#"])
    assert by_topic(rec(topic="sensors/a/b/debug")) is None
    assert by_topic(rec(topic="$SYS/broker/uptime")) is None
    assert by_topic(rec(topic="sensors/a/b/telemetry")) is not None
    by_value = drop.make(field="status", value=["offline", "unknown"])
    assert by_value(rec(status="offline")) is None
    assert by_value(rec(status="online")) is not None
    assert by_value(rec()) is not None
    present = drop.make(field="error")
    assert present(rec(error="E1")) is None
    assert present(rec(error=None)) is not None
    null = drop.make(field="status", value=None)
    assert null(rec()) is None and null(rec(status="x")) is not None
    text_vs_number = drop.make(field="device", value=7)
    assert text_vs_number(rec(device="7")) is None
    both = drop.make(topic="sensors/#", field="status", value="offline")
    assert both(rec(topic="sensors/a", status="offline")) is None
    assert both(rec(topic="other/a", status="offline")) is not None


def test_keep_is_the_opposite_of_drop():
    fn = keep.make(topic="sensors/+/+/telemetry")
    assert fn(rec(topic="sensors/a/b/telemetry")) is not None
    assert fn(rec(topic="sensors/a/b/heartbeat")) is None
    assert keep.make(field="site", value=["north"])(rec(site="south")) is None


@pytest.mark.parametrize("options, error", [
    ({}, "give topic"),
    ({"value": 1}, "value needs field"),
    ({"topic": "a/#/b"}, "topic: '#' must be a whole level"),
    ({"topic": []}, "topic: give at least one"),
    ({"topic": [1]}, "topic: a topic filter is text"),
])
def test_drop_and_keep_bad_options(options, error):
    for module in (drop, keep):
        with pytest.raises(ValueError, match=error):
            module.make(**options)


# ------------------------------------------------------------------ rename

def test_rename_fields_types_and_table():
    fn = rename.make(fields={"Temp": "temperature", "x": "y"}, table="climate")
    record = rec(Temp=21.5, Hum=40)
    record.types = {"Temp": "REAL"}
    out = fn(record)
    assert out.fields == {"temperature": 21.5, "Hum": 40}
    assert out.types == {"temperature": "REAL"}
    assert out.table == "climate"


def test_rename_only_matching_topics():
    fn = rename.make(topic="tele/+/STATE", table="state")
    assert fn(rec(topic="tele/plug/STATE")).table == "state"
    assert fn(rec(topic="tele/plug/SENSOR")).table == "messages"


@pytest.mark.parametrize("options, error", [
    ({}, "give fields"),
    ({"table": "attic_rejects"}, "reserved"),
    ({"fields": {"a": "ts_us"}}, "would overwrite the column ts_us"),
    ({"fields": ["a"]}, "fields: give"),
])
def test_rename_bad_options(options, error):
    with pytest.raises(ValueError, match=error):
        rename.make(**options)


# ------------------------------------------------------------------ throttle, dedupe

def test_throttle_one_per_key_per_interval_by_record_time():
    fn = throttle.make(interval="10s")
    kept = [t for t in range(0, 35) if fn(rec(topic="a", ts_us=t * S)) is not None]
    assert kept == [0, 10, 20, 30]
    assert fn(rec(topic="b", ts_us=31 * S)) is not None  # another key has its own interval
    assert fn(rec(topic="a", ts_us=5 * S)) is not None  # a clock stepped back is let through


def test_throttle_by_field_and_combined_key():
    by_site = throttle.make(interval=60, key="site")
    assert by_site(rec(topic="x/1", site="n", ts_us=0)) is not None
    assert by_site(rec(topic="x/2", site="n", ts_us=S)) is None
    assert by_site(rec(topic="x/2", site="s", ts_us=S)) is not None
    combined = throttle.make(interval="1m", key=["topic", "channel"])
    assert combined(rec(topic="a", channel=1, ts_us=0)) is not None
    assert combined(rec(topic="a", channel=2, ts_us=0)) is not None
    assert combined(rec(topic="a", channel=1, ts_us=S)) is None


def test_throttle_memory_stays_bounded():
    fn = throttle.make(interval="1s")
    for i in range(100_000):
        fn(rec(topic=f"t/{i}", ts_us=i * 1000))  # 1000 new topics per second
    state = fn.__closure__  # the Recent table lives in the closure
    recent = next(c.cell_contents for c in state if type(c.cell_contents).__name__ == "Recent")
    assert len(recent.seen) < 4000


@pytest.mark.parametrize("options, error", [
    ({"interval": "often"}, "interval must be a duration"),
    ({"interval": 0}, "interval must be longer than 0"),
    ({"interval": "1s", "key": []}, "key: topic, a field name"),
])
def test_throttle_bad_options(options, error):
    with pytest.raises(ValueError, match=error):
        throttle.make(**options)


def test_dedupe_same_payload_same_topic_within_window():
    fn = dedupe.make(window="1m")
    assert fn(rec({"v": 1}, topic="a", ts_us=0)) is not None
    assert fn(rec({"v": 1}, topic="a", ts_us=10 * S)) is None       # same payload, same topic: dropped
    assert fn(rec({"v": 1}, topic="b", ts_us=10 * S)) is not None   # other topic
    assert fn(rec({"v": 2}, topic="a", ts_us=20 * S)) is not None   # other payload
    assert fn(rec({"v": 1}, topic="a", ts_us=30 * S)) is None       # A B A within the window
    assert fn(rec({"v": 1}, topic="a", ts_us=60 * S)) is not None   # a minute after the stored copy
    no_payload = dedupe.make(window=10)
    assert no_payload(rec(topic="modbus/m/1", ts_us=0, v=1)) is not None
    assert no_payload(rec(topic="modbus/m/1", ts_us=S, v=1)) is None
    assert no_payload(rec(topic="modbus/m/1", ts_us=S, v=2)) is not None
    with pytest.raises(ValueError, match="window must be a duration"):
        dedupe.make(window="a while")


# ------------------------------------------------------------------ device_time

@pytest.mark.parametrize("value, unit, expected", [
    (1795420800, "auto", 1795420800 * S),
    (1795420800.25, "auto", 1795420800250000),
    (1795420800250, "auto", 1795420800250000),
    (1795420800250123, "auto", 1795420800250123),
    (1795420800250123456, "auto", 1795420800250123),
    (1795420800250, "ms", 1795420800250000),
    (17, "s", 17 * S),
    ("2026-11-23T08:00:00.25Z", "auto", 1795420800250000),
    ("2026-11-23T09:00:00+01:00", "iso", 1795420800 * S),
    ("2026-11-23T08:00:00.123456789Z", "iso", 1795420800123456),
    ("2026-11-23 08:00:00", "auto", 1795420800 * S),
])
def test_device_time_units(value, unit, expected):
    out = device_time.make(field="ts", unit=unit)(rec({"ts": value}))
    assert out.fields == {"device_ts_us": expected}
    assert out.types == {"device_ts_us": "INTEGER"}


def test_device_time_from_a_field_a_path_a_zone_and_missing():
    assert device_time.make(field="t")(rec(t=1795420800)).fields["device_ts_us"] == 1795420800 * S
    out = device_time.make(field="meta.time", column="event_us")(rec({"meta": {"time": 1795420800}}))
    assert out.fields == {"event_us": 1795420800 * S}
    berlin = device_time.make(field="Time", timezone="Europe/Berlin")
    assert berlin(rec({"Time": "2026-11-23T09:00:00"})).fields["device_ts_us"] == 1795420800 * S
    assert device_time.make(field="ts")(rec({"x": 1})).fields == {"device_ts_us": None}
    assert device_time.make(field="ts")(rec(b"offline")).fields == {"device_ts_us": None}
    with pytest.raises(Rejected, match="ts is missing"):
        device_time.make(field="ts", required=True)(rec({"x": 1}))
    with pytest.raises(Rejected, match="is not an ISO 8601 time"):
        device_time.make(field="ts")(rec({"ts": "yesterday"}))
    with pytest.raises(Rejected, match="is not a time in unit iso"):
        device_time.make(field="ts", unit="iso")(rec({"ts": 17}))


@pytest.mark.parametrize("options, error", [
    ({"field": "ts", "unit": "minutes"}, "unit must be one of"),
    ({"field": "ts", "timezone": "Mars/Olympus"}, "timezone must be utc, local or a zone name"),
    ({"field": "ts", "column": "ts_us"}, "column: field 'ts_us' would overwrite"),
    ({"field": ""}, "a field path is dotted text"),
])
def test_device_time_bad_options(options, error):
    with pytest.raises(ValueError, match=error):
        device_time.make(**options)
