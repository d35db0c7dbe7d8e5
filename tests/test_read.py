"""attic.files(), attic.rows(), attic.read() and the follower, against files made by the real writer.

Every expectation comes from plain SQL over every file of the stream (``expected``), never from
the reader under test; topic filters are checked against paho's own matcher.
"""

from __future__ import annotations

import importlib
import queue
import random
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

import attic
from attic.follow import follow
from attic.periods import US
from attic.read import ReadError
from attic.record import Record
from attic.store import RotatingStore
from attic.writer import Writer
from tests.support import meta, stream_files

UTC = timezone.utc
DAY1 = int(datetime(2030, 3, 10, tzinfo=UTC).timestamp()) * US  # in the future: no file closes by the clock
DAY2 = DAY1 + 86400 * US
TOPICS = ["sensors/a/temp", "sensors/b/temp", "sensors/a/hum", "sensors", "sensors/", "sensors/a/temp/raw",
          "$SYS/broker/load", "other/50%_x", "other/50x", "other/5%", "a/b", "/lead", "sensors/b"]
PAYLOADS = [b'{"t": 21.5}', b"42", b"", b"\xff\x00\xfe", "ünïcode".encode()]
COLUMNS = ("ts_us", "topic", "payload", "qos", "retain")


def write(root: Path, records: list, rotate_s: float, run_start_us: int, writer_id: str | None = None,
          events: list[tuple[int, str, str]] = ()) -> None:
    """Queue everything, then let the real writer drain it into files (one batch, split by period)."""
    store = RotatingStore(root, "tele", rotate_s, now_us=run_start_us, writer_id=writer_id,
                          meta={"stream": "tele", "writer_id": writer_id, "rotate_s": rotate_s})
    records_queue: queue.Queue = queue.Queue()
    writer = Writer("tele", store, records_queue, commit_every_s=5.0, commit_rows=1_000_000)
    for record in records:
        records_queue.put(record)
    for ts, kind, detail in events:  # committed with the records, into the file open at the end
        writer.event(kind, detail, ts)
    writer.start()
    assert writer.stop(timeout=30)
    assert writer.failed is None


def build_logs(root: Path) -> None:
    """Three runs over two days: 6 h files (one named by its run's start), two writers with 1 h
    files, and a run whose clock stepped back (a ``.2`` file with an extra column)."""
    rng = random.Random(8)

    def message(ts: int, i: int) -> tuple:
        return (ts, TOPICS[i % len(TOPICS)], PAYLOADS[i % len(PAYLOADS)], i % 3, int(i % 7 == 0), 0)

    run_a = DAY1 + 3 * 3600 * US + 17 * 60 * US + 500_000
    write(root, [message(run_a + i * 47 * US + rng.randrange(1000) * 10, i) for i in range(3000)], 6 * 3600,
          run_a, events=[(DAY2 + 9 * 3600 * US, "note", "run a")])
    for n, writer_id in enumerate(("w1", "w2")):
        start = DAY2 + 8 * 3600 * US
        write(root, [message(start + i * 53 * US + n + 1, i + n) for i in range(400)], 3600, start, writer_id)
    stepped = [Record(DAY2 + 13 * 3600 * US + i * 61 * US + 3, TOPICS[i % 4], b"%d" % i, 1, 0, {"temp": i / 2})
               for i in range(50)]
    write(root, stepped, 6 * 3600, DAY2 + 20 * 3600 * US)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logs")
    build_logs(root)
    return root


def expected(root: Path, since: int | None, until: int | None, topic: str | None = None,
             sql_columns: str = ", ".join(COLUMNS), table: str = "messages") -> list[tuple]:
    """The window's rows by plain SQL over every file of the stream (ties cannot happen: unique ts)."""
    found = []
    for path in stream_files(root, "tele"):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        found += conn.execute(f"SELECT {sql_columns} FROM {table} WHERE ts_us >= ? AND ts_us < ?",
                              (since if since is not None else -2**63, until if until is not None else 2**63 - 1))
        conn.close()
    if topic is not None:
        found = [row for row in found if topic_matches_sub(topic, row[1])]
    return sorted(found, key=lambda row: row[0])


def test_the_logs_have_what_the_tests_need(logs):
    names = {p.name.split(".", 1)[1] for p in stream_files(logs, "tele")}
    assert {"sqlite", "w1.sqlite", "w2.sqlite", "2.sqlite"} <= names
    days = {p.parent.name for p in stream_files(logs, "tele")}
    assert days == {"2030-03-10", "2030-03-11"}
    assert len(stream_files(logs, "tele")) == 21


def test_files_lists_every_file_with_its_meta(logs):
    infos = attic.files(logs)
    assert sorted(i.path for i in infos) == sorted(stream_files(logs, "tele"))
    assert [i.start_us for i in infos] == sorted(i.start_us for i in infos)
    for info in infos:
        assert (info.stream, info.closed, info.problem) == ("tele", True, None)
        assert info.rows == len(expected_file(info.path))
        assert info.end_us == int(meta(info.path)["period_end_us"])
        assert info.size == info.path.stat().st_size
    assert {i.writer for i in infos} == {None, "w1", "w2"}
    assert [i.n for i in infos if i.n != 1] == [2]
    first = infos[0]
    assert first.start_us == DAY1 + (3 * 3600 + 17 * 60) * US  # named by the run's start (whole seconds)
    window = attic.files(logs, "tele", since=DAY2 + 9 * 3600 * US, until=DAY2 + 10 * 3600 * US)
    assert {i.path.name for i in window} == {f"{(DAY2 // US) + 9 * 3600}.w1.sqlite",
                                            f"{(DAY2 // US) + 9 * 3600}.w2.sqlite", f"{DAY2 // US + 6 * 3600}.sqlite"}


def expected_file(path: Path) -> list:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM messages").fetchall()
    finally:
        conn.close()


def windows() -> list[tuple[int | None, int | None]]:
    rng = random.Random(1)
    fixed = [(None, None), (DAY1, DAY2), (DAY2, None), (None, DAY1 + 12 * 3600 * US),
             (DAY2 + 12 * 3600 * US, DAY2 + 18 * 3600 * US),  # exactly the stepped-back run's period
             (DAY2 + 9 * 3600 * US, DAY2 + 9 * 3600 * US + 1),  # one µs at the writers' file boundary
             (DAY1 - 86400 * US, DAY1), (DAY2 + 86400 * US, None),  # before and after everything
             (DAY1 + 23 * 3600 * US, DAY2 + 3600 * US)]  # across midnight
    drawn = []
    for _ in range(12):
        a, b = sorted(rng.randrange(DAY1, DAY2 + 86400 * US) for _ in range(2))
        drawn.append((a, b))
    return fixed + drawn


@pytest.mark.parametrize("since, until", windows())
def test_rows_are_exactly_the_window(logs, since, until):
    got = list(attic.rows(logs, stream="tele", since=since, until=until, columns=COLUMNS))
    assert got == expected(logs, since, until)


@pytest.mark.parametrize("topic", ["sensors/a/temp", "sensors/+/temp", "sensors/#", "sensors/+", "#", "+",
                                   "+/+", "+/a/#", "other/50%_x", "other/+", "$SYS/#", "+/broker/+", "/+",
                                   "sensors/a/#", "nothing/here"])
def test_topic_filters_match_like_mqtt(logs, topic):
    since, until = DAY1 + 6 * 3600 * US, DAY2 + 14 * 3600 * US
    got = list(attic.rows(logs, stream="tele", since=since, until=until, topic=topic, columns=COLUMNS))
    want = expected(logs, since, until, topic)
    assert got == want
    frame = attic.read(logs, stream="tele", since=since, until=until, topic=topic)
    assert list(frame[list(COLUMNS)].itertuples(index=False, name=None)) == want


def test_read_gives_a_dataframe_like_direct_sql(logs):
    pd = pytest.importorskip("pandas")
    since, until = "2030-03-10T22:00", "2030-03-11T15:00:00Z"
    frame = attic.read(logs, stream="tele", since=since, until=until)
    want = expected(logs, DAY1 + 22 * 3600 * US, DAY2 + 15 * 3600 * US)
    assert list(frame.columns) == ["ts", *COLUMNS, "temp"]
    assert list(frame[list(COLUMNS)].itertuples(index=False, name=None)) == want
    assert frame["ts"].dt.tz is not None and frame["ts"].iloc[0] == pd.Timestamp(want[0][0], unit="us", tz="UTC")
    assert sorted(frame["temp"].dropna()) == [i / 2 for i in range(50)]  # only the stepped-back run's file has it


def test_read_decodes_and_picks_columns(logs):
    frame = attic.read(logs, stream="tele", until=DAY1 + 4 * 3600 * US, columns=["payload"], decode=True)
    assert list(frame.columns) == ["ts", "ts_us", "payload"]
    raw = [row[2] for row in expected(logs, None, DAY1 + 4 * 3600 * US)]
    assert list(frame["payload"]) == [p.decode() if p != b"\xff\x00\xfe" else p for p in raw]


def test_empty_window_and_errors(logs):
    frame = attic.read(logs, stream="tele", since="2030-01-01", until="2030-01-02")
    assert frame.empty and list(frame.columns) == ["ts", *COLUMNS]
    with pytest.raises(ReadError, match="no stream 'nope'.*streams: tele"):
        attic.rows(logs, stream="nope")
    with pytest.raises(ReadError, match="no column 'tpoic'"):
        attic.rows(logs, stream="tele", columns="tpoic")
    with pytest.raises(ReadError, match="no table 'mesages'"):
        attic.rows(logs, stream="tele", table="mesages")
    with pytest.raises(ValueError, match="since must be before until"):
        attic.rows(logs, stream="tele", since=DAY2, until=DAY1)
    with pytest.raises(ValueError, match="'#' must be"):
        attic.rows(logs, stream="tele", topic="a/#/b")


def test_attic_tables_are_read_too(logs):
    since, until = DAY2 + 8 * 3600 * US, DAY2 + 10 * 3600 * US
    events = list(attic.rows(logs, stream="tele", table="attic_events", since=since, until=until))
    # Committed with the last records, into the 18:00 file: the reader finds it all the same.
    assert events == expected(logs, since, until, sql_columns="ts_us, kind, detail", table="attic_events")
    assert [e[1:] for e in events] == [("note", "run a")]


def test_a_window_reads_only_the_files_whose_periods_overlap_it(logs, monkeypatch):
    read_module, catalog = importlib.import_module("attic.read"), importlib.import_module("attic.catalog")
    opened, read_from = set(), set()
    connect, select = catalog.connect, read_module.Rows.select

    def spy_connect(path, final=False):
        opened.add(Path(path))
        return connect(path, final)

    def spy_select(self, info, *args, **kwargs):
        read_from.add(info.path)
        return select(self, info, *args, **kwargs)

    for module in (catalog, read_module):
        monkeypatch.setattr(module, "connect", spy_connect)
    monkeypatch.setattr(read_module.Rows, "select", spy_select)
    since, until = DAY2 + 9 * 3600 * US, DAY2 + 10 * 3600 * US
    assert list(attic.rows(logs, stream="tele", since=since, until=until, columns=COLUMNS)) == \
        expected(logs, since, until)
    every = stream_files(logs, "tele")
    period = {p: (int(meta(p)["period_start_us"]), int(meta(p)["period_end_us"])) for p in every}
    assert read_from == {p for p, (start, end) in period.items() if start < until and end > since}
    assert len(read_from) == 3  # the two writers' 09:00 files and the 06:00-12:00 file
    named_after = {p for p in every if int(p.name.split(".")[0]) * US >= until}
    assert opened and not opened & named_after  # judged by names: a file named after the window is never opened


def test_read_without_pandas_says_how_to_install_it(logs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an import of a missing package does
    with pytest.raises(ImportError, match=r"attic.read\(\) needs pandas: pip install 'attic\[pandas\]'"):
        attic.read(logs, stream="tele")
    assert len(list(attic.rows(logs, stream="tele", until=DAY1 + 4 * 3600 * US))) == \
        len(expected(logs, None, DAY1 + 4 * 3600 * US))  # rows() needs no pandas


def live_writer(root: Path, rotate_s: float = 3600) -> tuple[Writer, queue.Queue]:
    store = RotatingStore(root, "live", rotate_s, meta={"stream": "live"})
    records: queue.Queue = queue.Queue()
    writer = Writer("live", store, records, commit_every_s=0.05, commit_rows=500)
    writer.start()
    return writer, records


def put(records: queue.Queue, writer: Writer, rows: list[tuple]) -> None:
    for row in rows:
        records.put(row)
    assert writer.sync()


def test_reading_a_file_while_attic_writes_it(tmp_path):
    writer, records = live_writer(tmp_path, rotate_s=86400)  # one file, unless run right at midnight
    try:
        now = time.time_ns() // 1000
        first = [(now + i, f"dev/{i % 3}", b"x%d" % i, 1, 0, 0) for i in range(300)]
        put(records, writer, first)
        (info,) = attic.files(tmp_path, "live")
        assert (info.closed, info.rows) == (False, 300)
        assert Path(f"{info.path}-wal").exists()  # really a live WAL file
        assert list(attic.rows(tmp_path, stream="live", topic="dev/1")) == [r[:5] for r in first if r[1] == "dev/1"]
        second = [(now + 1000 + i, "dev/9", b"y", 0, 0, 0) for i in range(200)]
        put(records, writer, second)
        assert len(attic.read(tmp_path, stream="live")) == 500
    finally:
        assert writer.stop()
    (info,) = attic.files(tmp_path, "live")
    assert (info.closed, info.rows, info.closed_by) == (True, 500, "stop")  # the readers did not hold it


def test_follow_prints_new_rows_across_a_rotation(tmp_path):
    writer, records = live_writer(tmp_path)
    try:
        now = time.time_ns() // 1000
        put(records, writer, [(now + i, "old", b"", 0, 0, 0) for i in range(50)])
        follower = follow(tmp_path, stream="live", topic="dev/#", poll_s=0.01, seconds=20)
        assert follower.poll() == []  # only what comes after the start
        batch1 = [(now + 100 + i, f"dev/{i % 2}", b"a", 1, 0, 0) for i in range(100)] + [(now + 300, "old", b"", 0, 0, 0)]
        put(records, writer, batch1)
        assert follower.poll() == [r[:5] for r in batch1 if r[1] != "old"]
        boundary = (now // (3600 * US) + 1) * 3600 * US  # the next file's period
        batch2 = [(boundary + i, "dev/2", b"b", 1, 0, 0) for i in range(80)]
        put(records, writer, batch2)
        assert len(stream_files(tmp_path, "live")) >= 2  # rotated
        assert follower.poll() == [r[:5] for r in batch2]
        assert follower.poll() == []
    finally:
        assert writer.stop()
    assert follower.poll() == [] and not follower.last  # every file closed for good and let go


def test_follow_finds_files_in_a_new_day_folder(tmp_path):
    writer, records = live_writer(tmp_path)
    try:
        put(records, writer, [(DAY2 - US, "late", b"", 0, 0, 0)])
        follower = follow(tmp_path, stream="live", poll_s=0.01, seconds=20)
        assert follower.poll() == []
        after_midnight = [(DAY2 + i, "early", b"", 0, 0, 0) for i in range(10)]
        put(records, writer, after_midnight)
        assert [p.parent.name for p in stream_files(tmp_path, "live")] == ["2030-03-10", "2030-03-11"]
        assert follower.poll() == [r[:5] for r in after_midnight]
    finally:
        assert writer.stop()
