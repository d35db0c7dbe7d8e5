"""The filter loader, the chain, the documented examples, and filtered records through a real writer.

No broker here: the end-to-end runs against Mosquitto are in test_filter_run.py.
"""

from __future__ import annotations

import inspect
import logging
import queue
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from attic.config import ConfigError, FilterSpec, load_config
from attic.filters import builtin_names, find_module, load_chain
from attic.record import Record
from attic.store import RotatingStore
from attic.writer import Writer
from tests.support import query, stream_files, write_config

REPO = Path(__file__).parent.parent
EXAMPLES = REPO / "filters"
S = 1_000_000


def spec(name: str, line: int = 7, index: int = 0, **options) -> FilterSpec:
    return FilterSpec(name, options, f"streams[1].filters[{index}].{name}", line)


def dropin(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(specs, filters_dir=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_chain(specs, filters_dir)
    return info.value.problems


# ------------------------------------------------------------------ loading and config errors

def test_builtins_are_found_by_name():
    assert builtin_names() == ["dedupe", "device_time", "drop", "json_fields", "keep", "range_check", "rename",
                               "throttle", "topic_fields"]
    chain = load_chain([spec("range_check", field="t", min=0)], None)
    assert chain.names == ["range_check"]


def test_option_typos_name_the_place_and_the_options():
    assert problems_of([spec("range_check", line=12, field="t", mni=-40, max=85)]) == [
        "config.yaml:12: streams[1].filters[0].range_check: unknown option 'mni' "
        "(options: field, min, max, required)"]
    assert problems_of([spec("json_fields", line=3)]) == [
        "config.yaml:3: streams[1].filters[0].json_fields: missing option 'fields' (options: fields, required)"]


def test_unknown_filter_suggests_a_name_and_says_where_it_looked(tmp_path):
    assert problems_of([spec("rang_check")], tmp_path) == [
        "config.yaml:7: streams[1].filters[0].rang_check: unknown filter 'rang_check'; did you mean "
        "'range_check'? (built-ins: dedupe, device_time, drop, json_fields, keep, range_check, rename, throttle, "
        f"topic_fields; no rang_check.py in {tmp_path})"]
    dropin(tmp_path, "celsius", "def make():\n    return lambda r: r\n")
    assert "did you mean 'celsius'?" in problems_of([spec("celsus")], tmp_path)[0]
    assert "filter names are Python module names" in problems_of([spec("../etc/passwd")], tmp_path)[0]


def test_every_problem_of_a_chain_is_reported_at_once(tmp_path):
    specs = [spec("json_fields", line=5, index=0, fields={"t": "float"}),
             spec("nope", line=6, index=1),
             spec("range_check", line=7, index=2, field="t", min=9, max=1),
             spec("throttle", line=8, index=3, interval="10s", keys="topic")]
    assert problems_of(specs, tmp_path) == [
        "config.yaml:5: streams[1].filters[0].json_fields: fields: type must be integer, real, text or blob "
        "(or null to keep the JSON type), got 'float'",
        "config.yaml:6: streams[1].filters[1].nope: unknown filter 'nope' (built-ins: dedupe, device_time, drop, "
        f"json_fields, keep, range_check, rename, throttle, topic_fields; no nope.py in {tmp_path})",
        "config.yaml:7: streams[1].filters[2].range_check: min (9) is above max (1)",
        "config.yaml:8: streams[1].filters[3].throttle: unknown option 'keys' (options: interval, key)",
    ]


def test_dropin_loads_under_a_private_name_never_from_sys_path(tmp_path):
    dropin(tmp_path, "stamp", """
        from dataclasses import dataclass

        @dataclass
        class Mark:  # a dataclass needs its module in sys.modules while the file runs
            text: str

        def make(text: str = "seen"):
            mark = Mark(text)
            def stamp(record):
                record.fields["mark"] = mark.text
                return record
            return stamp
    """)
    chain = load_chain([spec("stamp", text="hello")], tmp_path)
    records, rejects = chain.process([(1, "a", b"x", 0, 0, None)])
    assert records[0].fields == {"mark": "hello"} and not rejects
    assert sys.modules["attic_dropin_stamp"].__file__ == str(tmp_path / "stamp.py")
    assert str(tmp_path) not in sys.path and "stamp" not in sys.modules


def test_dropin_is_read_afresh_on_each_load(tmp_path):
    dropin(tmp_path, "version", "def make():\n    return lambda r: [r.fields.update(v=1), r][1]\n")
    first = load_chain([spec("version")], tmp_path)
    dropin(tmp_path, "version", "def make():\n    return lambda r: [r.fields.update(v=2), r][1]\n")
    second = load_chain([spec("version")], tmp_path)
    assert first.process([(1, "a", b"", 0, 0, None)])[0][0].fields == {"v": 1}
    assert second.process([(1, "a", b"", 0, 0, None)])[0][0].fields == {"v": 2}


@pytest.mark.parametrize("text, error", [
    ("def make(:\n", "cannot load {path}: SyntaxError: invalid syntax (line 1)"),
    ("import surely_not_a_module_x\n", "cannot load {path}: ModuleNotFoundError: No module named "
                                       "'surely_not_a_module_x' (broken.py:1)"),
    ("x = 1 / 0\n", "cannot load {path}: ZeroDivisionError: division by zero (broken.py:1)"),
    ("make = 3\n", "{path} has no make() function; a filter module defines make(**options) that returns a "
                   "function of a record"),
    ("def make():\n    return 42\n", "make() returned 42, not a function of a record"),
    ("def make():\n    raise ValueError('factor must be positive')\n", "factor must be positive"),
    ("def make():\n    return {}['x']\n", "make() failed: KeyError: 'x' (broken.py:2)"),
])
def test_broken_dropins_are_config_errors_at_the_place(tmp_path, text, error):
    path = dropin(tmp_path, "broken", text)
    assert problems_of([spec("broken")], tmp_path) == [
        "config.yaml:7: streams[1].filters[0].broken: " + error.format(path=path)]
    if error.startswith("cannot load"):  # a module that failed to run is not left behind
        assert "attic_dropin_broken" not in sys.modules


def test_a_dropin_named_like_a_builtin_is_refused(tmp_path):
    path = dropin(tmp_path, "drop", "def make():\n    return lambda r: r\n")
    assert problems_of([spec("drop", topic="#")], tmp_path) == [
        f"config.yaml:7: streams[1].filters[0].drop: {path} has the name of a built-in filter; rename the file "
        "(a drop-in cannot replace a built-in)"]


def test_options_may_be_open_ended_and_make_is_called_once(tmp_path):
    dropin(tmp_path, "count", """
        calls = []
        def make(**options):
            calls.append(options)
            return lambda record: record
    """)
    load_chain([spec("count", anything=1)], tmp_path)
    assert sys.modules["attic_dropin_count"].calls == [{"anything": 1}]


# ------------------------------------------------------------------ the chain

def test_chain_runs_in_order_counts_drops_fans_out_and_turns_tuples_into_records(tmp_path):
    dropin(tmp_path, "split", """
        def make():
            def split(record):
                if record.topic == "drop/me":
                    return None
                twin = record.copy()
                twin.table = "twins"
                return [record, twin]
            return split
    """)
    chain = load_chain([spec("json_fields", fields={"n": "integer"}), spec("split", index=1),
                        spec("range_check", index=2, field="n", max=5)], tmp_path)
    batch = [(1, "a", b'{"n": 1}', 1, 0, 11), (2, "drop/me", b'{"n": 2}', 1, 0, 12),
             Record(3, "modbus/m/1", None, fields={"n": 9})]
    records, rejects = chain.process(batch)
    assert [(r.ts_us, r.topic, r.table, r.fields, r.qos) for r in records] == [
        (1, "a", "messages", {"n": 1}, 1), (1, "a", "twins", {"n": 1}, 1)]
    assert [r.row() for r in rejects] == [  # a Modbus row's reject keeps its values as JSON
        (3, "modbus/m/1", b'{"n": 9}', "json_fields", "no payload to read JSON from")]
    assert chain.filtered == 1 and chain.filtered_by == {"json_fields": 0, "split": 1, "range_check": 0}
    assert chain.last_drop == "split"


def test_a_raising_filter_rejects_the_raw_record_and_the_chain_goes_on(tmp_path, caplog):
    dropin(tmp_path, "fragile", """
        def make():
            def fragile(record):
                record.topic = "changed/before/raising"
                record.payload = b"changed"
                return record.fields["n"] / record.fields["d"]
            return fragile
    """)
    chain = load_chain([spec("json_fields", fields=["n", "d"]), spec("fragile", index=1)], tmp_path)
    with caplog.at_level(logging.WARNING, logger="attic.filters"):
        records, rejects = chain.process([(1, "a/b", b'{"n": 1, "d": 0}', 1, 0, None),
                                          (2, "a/c", b'{"n": 1}', 1, 0, None)])
    assert records == []
    assert [r.row() for r in rejects] == [
        (1, "a/b", b'{"n": 1, "d": 0}', "fragile", "ZeroDivisionError: division by zero (fragile.py:6)"),
        (2, "a/c", b'{"n": 1}', "fragile", "TypeError: unsupported operand type(s) for /: 'int' and 'NoneType' "
                                           "(fragile.py:6)")]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "streams[1].filters[1].fragile: filter fragile raised" in warnings[0]


@pytest.mark.parametrize("body, error", [
    ("record.fields['topic'] = 'x'", "field 'topic' would overwrite the column topic; rename it"),
    ("record.fields.update(Temp=1, temp=2)", "fields 'Temp' and 'temp' are one column to SQLite (it ignores case); "
                                             "rename one"),
    ("record.fields['d'] = {'a': 1}", "field 'd': cannot store a dict ({'a': 1}); make it a number, text or bytes "
                                      "(json.dumps for structures)"),
    ("record.fields['n'] = 2 ** 64", "field 'n': 18446744073709551616 does not fit a 64-bit integer; make it a "
                                     "float or text"),
    ("record.ts_us += 1", "a filter changed ts_us (the reception time decides the file); keep other times in a "
                          "field (see device_time)"),
    ("record.table = 'attic_meta'", "table 'attic_meta' is reserved (attic_*, sqlite_*, messages_ts); route to "
                                    "another name"),
    ("record.types['x'] = 'float'", "field 'x': type 'float' is not one of integer, real, text, blob"),
    ("record.payload = 'text'", "payload must be bytes or None, got str"),
])
def test_records_sqlite_cannot_take_are_rejected_before_the_commit(tmp_path, body, error):
    dropin(tmp_path, "bad", f"def make():\n    def bad(record):\n        {body}\n        return record\n"
                            "    return bad\n")
    records, rejects = load_chain([spec("bad")], tmp_path).process([(5, "t", b"raw", 0, 0, None)])
    assert records == [] and [r.row() for r in rejects] == [(5, "t", b"raw", "store", error)]


def test_bad_return_values_are_rejects_and_types_are_normalised(tmp_path):
    dropin(tmp_path, "odd", """
        def make():
            def odd(record):
                if record.topic == "a":
                    return "a string"
                record.fields["x"] = 1.5
                record.types["x"] = "real"
                return record
            return odd
    """)
    records, rejects = load_chain([spec("odd")], tmp_path).process([(1, "a", b"", 0, 0, None),
                                                                     (2, "b", b"", 0, 0, None)])
    assert [(r.stage, r.error) for r in rejects] == [
        ("odd", "returned 'a string'; a filter returns a record, None or a list of records")]
    assert records[0].types == {"x": "REAL"}


def test_close_reaches_every_filter(tmp_path):
    dropin(tmp_path, "closing", """
        closed = []
        def make(label: str):
            def f(record):
                return record
            f.close = lambda: closed.append(label)
            return f
    """)
    chain = load_chain([spec("closing", label="a"), spec("closing", index=1, label="b"), spec("drop", index=2,
                                                                                            topic="#")], tmp_path)
    chain.close()
    assert sys.modules["attic_dropin_closing"].closed == ["a", "b"]


# ------------------------------------------------------------------ the documentation is the docstring

def example_of(path: Path) -> list:
    """The YAML block after ``Example::`` in a filter module's docstring."""
    text = path.read_text()
    doc = text.split('"""')[1]
    match = re.search(r"Example::\n\n((?:    .*\n|\n)+)", doc)
    assert match, f"{path.name}: no Example:: block in the docstring"
    return yaml.safe_load(textwrap.dedent(match.group(1)))


MODULES = [REPO / "attic" / "filters" / f"{name}.py" for name in builtin_names()] + sorted(EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_every_filter_documents_itself_with_an_example_that_loads(tmp_path, path):
    example = example_of(path)
    assert isinstance(example, list) and any(path.stem in item for item in example if isinstance(item, dict)), \
        f"{path.name}: the example should use {path.stem}"
    text = path.read_text().split('"""')[1]
    assert text.startswith(f"{path.stem}: "), "the first line names the filter and says what it does"
    config = write_config(tmp_path, "filters_dir: " + str(EXAMPLES) + "\nstreams:\n  - name: s\n    topic: '#'\n"
                          "    filters:\n" + textwrap.indent(yaml.safe_dump(example), "      "))
    loaded = load_config(config)
    chain = load_chain(loaded.streams[0].filters, loaded.filters_dir)
    assert path.stem in chain.names
    module = find_module(path.stem, EXAMPLES)
    for option in inspect.signature(module.make).parameters:
        assert f"``{option}``" in text, f"{path.name}: option {option} is not documented"


def test_example_dropins_do_what_their_docstrings_say():
    chain = load_chain([spec("json_fields", fields={"temperature": "real"}),
                        spec("scale", index=1, field="temperature", factor=1.8, offset=32, into="temperature_f"),
                        spec("flatten", index=2, skip=["Time"], lower=True)], EXAMPLES)
    payload = b'{"Time": "2026-11-23T10:00:00", "temperature": 20, "ENERGY": {"Total": 12.5, "Power": 45}, ' \
              b'"topic": "x"}'
    records, rejects = chain.process([(1, "tele/plug/SENSOR", payload, 0, 0, None)])
    assert not rejects
    assert records[0].fields == {"temperature": 20, "temperature_f": 68.0, "energy_total": 12.5,
                                 "energy_power": 45, "topic_": "x"}
    _, rejects = chain.process([(2, "tele/plug/SENSOR", b'{"temperature": "warm"}', 0, 0, None)])
    assert rejects[0].stage == "json_fields"
    scale_only = load_chain([spec("scale", field="t", factor=2)], EXAMPLES)
    _, rejects = scale_only.process([Record(3, "x", None, fields={"t": "warm"})])
    assert rejects[0].stage == "scale"
    assert re.fullmatch(r"TypeError: .* \(scale\.py:\d+\)", rejects[0].error)


# ------------------------------------------------------------------ through a real writer into SQLite

def write_through(tmp_path: Path, chain, items: list) -> Path:
    """Run items through a Writer with ``chain`` into a fresh store; return the one file written."""
    store = RotatingStore(tmp_path / "logs", "s", 3600.0, meta={"stream": "s"})
    writer = Writer("s", store, queue.Queue(), commit_every_s=0.05, commit_rows=1000, chain=chain)
    writer.start()
    try:
        for item in items:
            writer.queue.put(item)
        assert writer.sync(10)
    finally:
        assert writer.stop(10)
    assert writer.failed is None
    files = stream_files(tmp_path / "logs", "s")
    assert len(files) == 1
    return files[0]


def columns(path: Path, table: str = "messages") -> dict[str, str]:
    return {row[1]: row[2] for row in query(path, f"PRAGMA table_info({table})")}


def test_fields_become_typed_columns_null_first_case_folding_and_tables(tmp_path):
    dropin(tmp_path / "f", "shape", """
        def make():
            def shape(record):
                n = int(record.payload)
                if n == 0:
                    record.fields.update(late=None, Mixed=1)   # late: NULL first, no type yet
                elif n == 1:
                    record.fields.update(late=2.5, mixed=2)    # mixed: the same column as Mixed
                else:
                    record.fields.update(kind="x")
                    record.table = "Other"
                    twin = record.copy()
                    twin.table = "other"                       # one table to SQLite
                    return [record, twin]
                return record
            return shape
    """)
    chain = load_chain([spec("shape")], tmp_path / "f")
    now = RotatingStore(tmp_path, "x", 3600.0).run_start_us
    path = write_through(tmp_path, chain, [(now + i, "t", str(i).encode(), 1, 0, None) for i in range(3)])
    assert columns(path) == {"ts_us": "INTEGER", "topic": "TEXT", "payload": "BLOB", "qos": "INTEGER",
                             "retain": "INTEGER", "Mixed": "INTEGER", "late": "REAL"}
    assert query(path, "SELECT payload, late, Mixed, typeof(late) FROM messages ORDER BY ts_us") == [
        (b"0", None, 1, "null"), (b"1", 2.5, 2, "real")]
    assert query(path, "SELECT payload, kind FROM other") == [(b"2", "x"), (b"2", "x")]
    assert columns(path, "other")["kind"] == "TEXT"


def test_declared_types_rejects_and_fast_path_in_one_file(tmp_path):
    chain = load_chain([spec("json_fields", fields={"t": "real", "n": "integer", "s": "text"}),
                        spec("range_check", index=1, field="t", max=50)], None)
    now = RotatingStore(tmp_path, "x", 3600.0).run_start_us
    items = [(now, "a", b'{"t": 20, "n": "3", "s": 5}', 1, 0, None),
             (now + 1, "a", b'{"t": 99}', 1, 0, None),
             (now + 2, "a", b"nope", 0, 1, None)]
    path = write_through(tmp_path, chain, items)
    assert columns(path)["t"] == "REAL" and columns(path)["n"] == "INTEGER" and columns(path)["s"] == "TEXT"
    assert query(path, "SELECT t, typeof(t), n, typeof(n), s, typeof(s) FROM messages") == [
        (20.0, "real", 3, "integer", "5", "text")]
    assert query(path, "SELECT ts_us, topic, payload, stage, error FROM attic_rejects ORDER BY ts_us") == [
        (now + 1, "a", b'{"t": 99}', "range_check", "t 99.0 is above max 50"),
        (now + 2, "a", b"nope", "json_fields", "payload is not JSON: Expecting value: line 1 column 1 (char 0)")]


def test_readme_lists_every_builtin_with_its_options_and_its_example_filter_works(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Filters\n", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| `")}
    for name in builtin_names():
        row = next((line for names, line in rows.items() if f"`{name}`" in names), None)
        assert row, f"README: built-in {name} is not in the Filters table"
        for option in inspect.signature(find_module(name, None).make).parameters:
            assert f"`{option}`" in row, f"README: option {option} of {name} is not in its row"
    code = re.search(r"```python\n# filters/scale.py\n(.*?)```", section, re.S).group(1)
    dropin(tmp_path, "scale", code)
    chain = load_chain([spec("json_fields", fields={"power": "real"}), spec("scale", index=1, field="power",
                                                                            factor=0.001)], tmp_path)
    records, _ = chain.process([(1, "meter/1", b'{"power": 1500}', 0, 0, None)])
    assert records[0].fields == {"power": 1.5}


def test_an_error_deep_in_a_library_points_at_the_filters_own_line(tmp_path):
    dropin(tmp_path, "parse", """
        import json

        def make():
            def parse(record):
                record.fields["n"] = json.loads(record.payload)["n"]
                return record
            return parse
    """)
    _, rejects = load_chain([spec("parse")], tmp_path).process([(1, "t", b"{oops", 0, 0, None)])
    assert rejects[0].error == ("JSONDecodeError: Expecting property name enclosed in double quotes: line 1 "
                                "column 2 (char 1) (parse.py:6)")
