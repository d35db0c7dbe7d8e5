"""`attic files` and `attic query` through click's test runner, on files made by the real writer.

Expectations come from plain SQL over the files (``expected`` in test_read), not from the reader.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import threading
import time

import pytest
from click.testing import CliRunner

from attic.cli import main
from attic.periods import US
from tests.support import stream_files
from tests.test_read import COLUMNS, DAY1, DAY2, build_logs, expected, live_writer, put


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    build_logs(root)
    return root


def attic(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def from_text(value: str) -> bytes:
    return base64.b64decode(value[7:]) if value.startswith("base64:") else value.encode()


def test_files_lists_files_and_totals(logs):
    status, out, _ = attic("files", logs)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["stream", "day", "file", "start", "(UTC)", "end", "rows", "size", "state"]
    assert len(lines) == 1 + 21 + 1
    total = len(expected(logs, None, None))
    assert lines[-1].startswith(f"21 files in 1 stream(s), {total:,} rows,") and lines[-1].endswith("; 0 open")
    first = lines[1].split()
    assert first[:3] == ["tele", "2030-03-10", f"{(DAY1 // US) + 3 * 3600 + 17 * 60}.sqlite"]
    assert first[3:6] == ["2030-03-10", "03:17:00", "06:00:00"] and first[-1] == "closed"
    assert sum(1 for line in lines if ".w1.sqlite" in line) == 6


def test_files_of_an_unknown_stream(logs):
    status, out, err = attic("files", logs, "--stream", "nope")
    assert (status, out) == (1, "")
    assert err == f"Error: --stream: no stream 'nope' under {logs} (streams: tele)\n"


@pytest.mark.parametrize("since, since_us, until, until_us, topic", [
    (None, None, None, None, None),
    ("2030-03-10T22:00", DAY1 + 22 * 3600 * US, "2030-03-11T01:30", DAY2 + 5400 * US, "sensors/+/temp"),
    ("2030-03-11T08:59:59.5Z", DAY2 + 9 * 3600 * US - US // 2, "2030-03-11T11:00:00+01:00", DAY2 + 10 * 3600 * US,
     "#"),
    (str(DAY2 + 12 * 3600 * US), DAY2 + 12 * 3600 * US, str(DAY2 + 18 * 3600 * US), DAY2 + 18 * 3600 * US,
     "sensors/#"),
    ("2030-03-11", DAY2, None, None, "other/50%_x"),
])
def test_query_csv_is_exactly_the_window(logs, since, since_us, until, until_us, topic):
    args = ["query", logs, "--stream", "tele", "--format", "csv", "--columns", "topic,payload,qos,retain"]
    for name, value in (("--since", since), ("--until", until), ("--topic", topic)):
        if value is not None:
            args += [name, value]
    status, out, err = attic(*args)
    assert (status, err) == (0, "")
    reader = csv.reader(io.StringIO(out))
    assert next(reader) == list(COLUMNS)
    got = [(int(ts), topic, from_text(payload), int(qos), int(retain)) for ts, topic, payload, qos, retain in reader]
    want = expected(logs, since_us, until_us, topic)
    assert got == want and want


def test_query_json_lines_and_limit(logs):
    status, out, _ = attic("query", logs, "--stream", "tele", "--format", "json", "--limit", "25", "--until",
                           DAY1 + 5 * 3600 * US)
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    want = expected(logs, None, DAY1 + 5 * 3600 * US)[:25]
    assert len(rows) == 25
    for row, (ts, topic, payload, qos, retain) in zip(rows, want, strict=True):
        assert (row["ts_us"], row["topic"], row["qos"], row["retain"]) == (ts, topic, qos, retain)
        text = row["payload"]
        assert (base64.b64decode(text["encoded"]) if isinstance(text, dict) else text.encode()) == payload


def test_query_table_for_people(logs):
    status, out, _ = attic("query", logs, "--stream", "tele", "--since", "2030-03-11T13:00", "--until",
                           "2030-03-11T13:02", "--columns", "topic,temp")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ts", "topic", "temp"]
    want = expected(logs, DAY2 + 13 * 3600 * US, DAY2 + 13 * 3600 * US + 120 * US)
    assert len(lines) == 2 + len(want)
    assert lines[2].startswith("2030-03-11 13:00:00.000003  ")  # the stepped-back run's first row, with its temp
    assert lines[2].split()[-1] == "0.0"


def test_query_parquet(logs, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    target = tmp_path / "out.parquet"
    status, _, err = attic("query", logs, "--stream", "tele", "--topic", "a/b", "--format", "parquet",
                           "--output", target)
    assert (status, err) == (0, "")
    frame = pd.read_parquet(target)
    assert list(frame[list(COLUMNS)].itertuples(index=False, name=None)) == expected(logs, None, None, "a/b")


def test_query_attic_tables(logs):
    status, out, _ = attic("query", logs, "--stream", "tele", "--table", "attic_events", "--format", "csv")
    assert status == 0
    assert out.splitlines() == ["ts_us,kind,detail", f"{DAY2 + 9 * 3600 * US},note,run a"]


@pytest.mark.parametrize("args, status, message", [
    (["--since", "yesterday"], 2, "Error: --since: not a time: 'yesterday'"),
    (["--until", "1763892000"], 2, "Error: --until: 1763892000 is a count of µs"),
    (["--topic", "a/#/b"], 2, "Error: --topic: 'a/#/b': '#' must be"),
    (["--since", "2030-03-11", "--until", "2030-03-10"], 2, "Error: since must be before until"),
    (["--columns", "topic,pyload"], 1, "Error: --columns: no column 'pyload' in table messages"),
    (["--table", "attic_event"], 1, "Error: --table: no table 'attic_event'"),
    (["--format", "parquet"], 2, "Error: --format parquet writes a file: give --output FILE"),
    (["--follow", "--until", "now"], 2, "Error: --follow prints new rows as they come: it takes no --until"),
    (["--table", "attic_stats", "--topic", "a"], 1, "Error: --topic: table attic_stats has no topic column"),
])
def test_query_errors_are_one_line(logs, args, status, message):
    code, out, err = attic("query", logs, "--stream", "tele", *args)
    assert (code, out) == (status, "")
    assert err.startswith(message) and err.count("\n") == 1, err


def test_query_an_unknown_stream(logs):
    code, _, err = attic("query", logs, "--stream", "tel")
    assert (code, err) == (1, f"Error: --stream: no stream 'tel' under {logs} (streams: tele)\n")


def test_follow_prints_rows_as_they_are_committed_across_rotations(tmp_path):
    writer, records = live_writer(tmp_path)
    now = time.time_ns() // 1000
    boundary = (now // (3600 * US) + 1) * 3600 * US
    put(records, writer, [(now - 5 * US, "before", b"", 0, 0, 0)])  # before --since: never printed
    batches = [[(now + i, f"dev/{i % 2}", b"%d" % i, 1, 0, 0) for i in range(0, 200, 2)],
               [(now + i, "dev/x", b"late", 1, 0, 0) for i in range(201, 240)],
               [(boundary + i, "dev/1", b"next file", 1, 0, 0) for i in range(60)]]
    total = sum(map(len, batches))

    def feed() -> None:  # commits while the command follows
        for batch in batches:
            put(records, writer, batch)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        code, out, err = attic("query", tmp_path, "--stream", "live", "--since", now, "--follow", "--limit", total,
                               "--format", "csv", "--poll", "0.02", "--follow-for", "20")
    finally:
        feeder.join()
        assert writer.stop()
    assert (code, err) == (0, "")
    got = [(int(ts), topic, payload.encode()) for ts, topic, payload, _, _ in list(csv.reader(io.StringIO(out)))[1:]]
    assert got == [(r[0], r[1], r[2]) for batch in batches for r in batch]
    assert len(stream_files(tmp_path, "live")) >= 2  # followed across a rotation
