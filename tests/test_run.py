"""End to end: `attic run` against a private Mosquitto, read back from the files it leaves."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from datetime import datetime, timezone

from tests.support import AtticProcess, all_rows, meta, publish, query, stream_files, write_config


def config_for(tmp_path, broker, ns, rotate="2s", extra_stream=""):
    return write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs, rotate: {rotate}}}
        streams:
          - name: everything
            topic: "{ns}/#"
            qos: 1
          - name: tele
            topic: {ns}/sensors/+/+/telemetry
            qos: 1
        {extra_stream}
    """)


def messages(ns, count):
    out = []
    for i in range(count):
        topic = f"{ns}/sensors/site{i % 3}/dev{i % 7}/telemetry" if i % 10 else f"{ns}/other/{i}"
        out.append((topic, b"\x00\xff" + f'{{"n": {i}}}'.encode()))
    return out


def test_messages_land_once_byte_exact_in_aligned_rotated_files(tmp_path, broker, ns):
    attic = AtticProcess(config_for(tmp_path, broker, ns)).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/sensors/+/+/telemetry")
        broker.wait_subscribed(f"{ns}-everything", f"{ns}/#")
        sent = messages(ns, 6000)
        before_us = datetime.now(timezone.utc).timestamp() * 1e6
        publish(broker.port, sent, qos=1, seconds=4)
        after_us = datetime.now(timezone.utc).timestamp() * 1e6
        attic.wait_log("tele", 1)
    finally:
        code = attic.stop()
    assert code == 0, attic.log_text()

    root = tmp_path / "logs"
    tele_expected = sorted((t, p) for t, p in sent if t.endswith("/telemetry"))
    rows = all_rows(root, "tele")
    assert sorted((t, p) for _, t, p, _, _ in rows) == tele_expected  # every one, exactly once, byte-exact
    assert {(q, r) for _, _, _, q, r in rows} == {(1, 0)}
    assert sorted((t, p) for _, t, p, _, _ in all_rows(root, "everything")) == sorted(sent)
    for ts_us, *_ in rows:  # µs reception timestamps within the publishing window
        assert before_us - 1e6 <= ts_us <= after_us + 1e6

    for stream in ("tele", "everything"):
        files = stream_files(root, stream)
        with_rows = [f for f in files if query(f, "SELECT count(*) FROM messages")[0][0]]
        assert len(with_rows) >= 3, files
        run_start = None
        for path in files:
            info = meta(path)
            start_s = int(path.name.split(".")[0])
            end_us = int(info["period_end_us"])
            if run_start is None:
                run_start = start_s  # the first file is named by the run's start
            else:
                assert start_s % 2 == 0, path  # later files start on 2 s boundaries
            assert end_us % 2_000_000 == 0
            day = datetime.fromtimestamp(start_s, timezone.utc).strftime("%Y-%m-%d")
            assert path.parent.name == day
            lo, hi = query(path, "SELECT min(ts_us), max(ts_us) FROM messages")[0]
            if lo is not None:
                assert start_s * 1_000_000 <= lo and hi < end_us, (path, lo, hi)
            # closed: one self-contained, read-only file
            assert not os.path.exists(f"{path}-wal")
            assert query(path, "PRAGMA journal_mode")[0][0] == "delete"
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
            assert int(info["closed_at_us"]) > 0 and info["closed_by"] in ("rotation", "stop")
            assert int(info["rows"]) == query(path, "SELECT count(*) FROM messages")[0][0]
            assert info["stream"] == stream and info["source"] == "mqtt" and info["run_id"]
        assert meta(files[-1])["closed_by"] == "stop"
        kinds = [k for f in files for (k,) in query(f, "SELECT kind FROM attic_events")]
        assert kinds[0] == "start" and "connected" in kinds and "subscribed" in kinds and kinds[-1] == "stop"


def test_live_file_is_readable_while_attic_writes(tmp_path, broker, ns):
    attic = AtticProcess(config_for(tmp_path, broker, ns, rotate="1h")).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/sensors/+/+/telemetry")
        broker.wait_subscribed(f"{ns}-everything", f"{ns}/#")
        publish(broker.port, messages(ns, 200), qos=1)
        from tests.support import committed_count, wait_for
        wait_for(lambda: committed_count(tmp_path / "logs", "everything") == 200, 10, message="200 rows")
        live = stream_files(tmp_path / "logs", "everything")[-1]
        assert query(live, "PRAGMA journal_mode")[0][0] == "wal"
        assert "closed_at_us" not in meta(live)
    finally:
        assert attic.stop() == 0


def test_second_signal_exits_at_once(tmp_path, broker, ns):
    attic = AtticProcess(config_for(tmp_path, broker, ns, rotate="1h")).start()
    broker.wait_subscribed(f"{ns}-tele", f"{ns}/sensors/+/+/telemetry")
    broker.wait_subscribed(f"{ns}-everything", f"{ns}/#")
    publish(broker.port, messages(ns, 100), qos=1)
    attic.signal(signal.SIGINT)
    attic.signal(signal.SIGINT)
    assert attic.stop() == 0
    for path in stream_files(tmp_path / "logs", "tele"):
        assert "closed_at_us" in meta(path)


def test_two_attics_on_one_folder_refuse(tmp_path, broker, ns):
    config = config_for(tmp_path, broker, ns, rotate="1h")
    first = AtticProcess(config).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/sensors/+/+/telemetry")
        broker.wait_subscribed(f"{ns}-everything", f"{ns}/#")
        second = AtticProcess(config, log=tmp_path / "second.log").start()
        assert second.proc.wait(20) == 1
        assert "is being written by pid" in second.log_text()
        assert "Traceback" not in second.log_text()
    finally:
        assert first.stop() == 0


def test_files_hold_the_schema(tmp_path, broker, ns):
    attic = AtticProcess(config_for(tmp_path, broker, ns, rotate="1h")).start()
    broker.wait_subscribed(f"{ns}-tele", f"{ns}/sensors/+/+/telemetry")
    broker.wait_subscribed(f"{ns}-everything", f"{ns}/#")
    publish(broker.port, messages(ns, 10), qos=1)
    assert attic.stop() == 0
    path = stream_files(tmp_path / "logs", "everything")[0]
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"messages", "attic_meta", "attic_rejects", "attic_events", "attic_stats"}
        assert [r[1] for r in conn.execute("PRAGMA table_info(messages)")] == ["ts_us", "topic", "payload",
                                                                                "qos", "retain"]
        assert conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL").fetchall() == [("messages_ts",)]
