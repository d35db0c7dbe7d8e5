"""The delivery guarantee, proven with a real Mosquitto that the tests stop, kill and restart.

Every test publishes numbered QoS 1 messages and asserts that each number is in the files
afterwards (at-least-once: a duplicate after a crash is allowed, a missing one is not).
"""

from __future__ import annotations

import resource
import signal
import sqlite3
import threading

from tests.support import (
    AtticProcess,
    Mosquitto,
    all_rows,
    committed_count,
    meta,
    publish,
    query,
    stream_files,
    wait_for,
    write_config,
)


def config_for(tmp_path, port, ns, rotate="1h", extra="", stream_extra=""):
    return write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs, rotate: {rotate}}}
        {extra}
        streams:
          - name: tele
            topic: {ns}/#
            qos: 1
            {stream_extra}
    """)


def numbered(ns, start, count):
    return [(f"{ns}/dev{i % 5}", str(i).encode()) for i in range(start, start + count)]


def numbers_stored(root, stream="tele"):
    return [int(p) for (p,) in all_rows(root, stream, "SELECT payload FROM messages")]


def events(root, stream="tele"):
    return [row for path in stream_files(root, stream) for row in query(path, "SELECT kind, detail FROM attic_events")]


def publish_in_background(port, messages, **kwargs):
    thread = threading.Thread(target=publish, args=(port, messages), kwargs=kwargs)
    thread.start()
    return thread


def test_kill_9_mid_burst_loses_nothing(tmp_path, broker, ns):
    config = config_for(tmp_path, broker.port, ns)
    root = tmp_path / "logs"
    attic = AtticProcess(config).start()
    broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
    sender = publish_in_background(broker.port, numbered(ns, 0, 20000), qos=1)
    try:
        wait_for(lambda: committed_count(root, "tele") >= 3000, 30, message="3000 rows before the kill")
        attic.kill()  # SIGKILL: no drain, no close; the live file stays in WAL mode
        assert committed_count(root, "tele") < 20000
        attic = AtticProcess(config, log=tmp_path / "second.log").start()
        sender.join(60)
        wait_for(lambda: len(set(numbers_stored(root))) == 20000, 60, message="all 20000 numbers")
    finally:
        assert attic.stop() == 0
        sender.join(60)
    assert set(numbers_stored(root)) == set(range(20000))
    first = stream_files(root, "tele")[0]
    assert meta(first)["closed_by"] == "recovery"
    assert query(first, "PRAGMA journal_mode")[0][0] == "delete"
    kinds = [kind for kind, _ in events(root)]
    assert kinds.count("unclean_shutdown") == 2  # in the recovered file and in the new run's first file
    assert "recovered" in attic.log_text() or "left open" in attic.log_text()


def test_sigterm_mid_burst_exits_0_and_loses_nothing(tmp_path, broker, ns):
    config = config_for(tmp_path, broker.port, ns)
    root = tmp_path / "logs"
    attic = AtticProcess(config).start()
    broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
    sender = publish_in_background(broker.port, numbered(ns, 0, 10000), qos=1)
    wait_for(lambda: committed_count(root, "tele") >= 1000, 30, message="1000 rows")
    assert attic.stop() == 0
    assert all("closed_at_us" in meta(p) for p in stream_files(root, "tele"))
    attic = AtticProcess(config, log=tmp_path / "second.log").start()
    try:
        sender.join(60)
        wait_for(lambda: set(numbers_stored(root)) == set(range(10000)), 60, message="all 10000 numbers")
    finally:
        assert attic.stop() == 0
    assert "unclean_shutdown" not in [kind for kind, _ in events(root)]


def test_broker_restart_between_bursts(tmp_path, ns):
    folder = tmp_path / "broker"
    mosquitto = Mosquitto(folder, extra="max_queued_messages 100000\n").start()
    port = mosquitto.port
    root = tmp_path / "logs"
    attic = AtticProcess(config_for(tmp_path, port, ns)).start()
    try:
        mosquitto.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        publish(port, numbered(ns, 0, 1000), qos=1)
        wait_for(lambda: committed_count(root, "tele") == 1000, 20, message="first burst")
        mosquitto.stop()  # saves its persistence file, with Attic's session and subscription
        attic.wait_log("disconnected from", 10)
        mosquitto = Mosquitto(folder, port=port, extra="max_queued_messages 100000\n").start()
        publish(port, numbered(ns, 1000, 1000), qos=1)  # queued for Attic's session until it is back
        wait_for(lambda: set(numbers_stored(root)) == set(range(2000)), 40, message="second burst")
    finally:
        code = attic.stop()
        mosquitto.stop()
    assert code == 0
    kinds = [kind for kind, _ in events(root)]
    assert kinds.count("connected") == 2 and "disconnected" in kinds
    assert kinds.index("disconnected") < len(kinds) - 1 - kinds[::-1].index("connected")
    assert attic.log_text().count("disconnected from") == 2  # the drop and the final stop: once each, not per retry


def test_disk_full_keeps_records_and_resumes(tmp_path, broker, ns):
    """The file-size limit of the Attic process stands in for a full disk (SQLite sees SQLITE_FULL)."""
    config = config_for(tmp_path, broker.port, ns)
    root = tmp_path / "logs"
    limit = 160 * 1024

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    attic = AtticProcess(config)
    import subprocess
    import sys
    out = open(attic.logfile, "ab")  # noqa: SIM115
    attic.proc = subprocess.Popen([sys.executable, "-m", "attic", "run", "-c", str(config)], stdout=out,
                                  stderr=out, cwd=tmp_path, preexec_fn=small_files)
    out.close()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        payload_pad = "x" * 200
        sent = [(t, p + b" " + payload_pad.encode()) for t, p in numbered(ns, 0, 3000)]
        sender = publish_in_background(broker.port, sent, qos=1)
        attic.wait_log("cannot write", 30)
        stored_while_full = committed_count(root, "tele")
        assert stored_while_full < 3000
        resource.prlimit(attic.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        sender.join(60)
        wait_for(lambda: committed_count(root, "tele") >= 3000, 60, message="all rows after space returns")
        attic.wait_log("writing works again", 10)
    finally:
        code = attic.stop()
    assert code == 0
    stored = [int(p.split(b" ")[0]) for (p,) in all_rows(root, "tele", "SELECT payload FROM messages")]
    assert set(stored) == set(range(3000))


def test_outside_reader_does_not_lose_or_block_data(tmp_path, broker, ns):
    config = config_for(tmp_path, broker.port, ns, rotate="2s")
    root = tmp_path / "logs"
    attic = AtticProcess(config).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        publish(broker.port, numbered(ns, 0, 100), qos=1)
        wait_for(lambda: committed_count(root, "tele") == 100, 10, message="first rows")
        live = stream_files(root, "tele")[-1]
        reader = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM messages").fetchone()[0] > 0  # holds a read snapshot
        publish(broker.port, numbered(ns, 100, 2000), qos=1, seconds=3)  # across at least one rotation
        wait_for(lambda: committed_count(root, "tele") == 2100, 20, message="rows while a reader holds a file")
        assert "closed_at_us" not in meta(live) or query(live, "PRAGMA journal_mode")[0][0] == "wal"
        reader.close()
        wait_for(lambda: query(live, "PRAGMA journal_mode")[0][0] == "delete", 15,
                 message="the held file closed after the reader let go")
    finally:
        assert attic.stop() == 0
    assert set(numbers_stored(root)) == set(range(2100))
    assert meta(live)["closed_by"] == "rotation"


def test_outside_write_lock_delays_but_loses_nothing(tmp_path, broker, ns):
    """A user writing to a live file makes Attic's commits fail with SQLITE_BUSY until released."""
    root = tmp_path / "logs"
    attic = AtticProcess(config_for(tmp_path, broker.port, ns)).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        publish(broker.port, numbered(ns, 0, 2100), qos=1)
        wait_for(lambda: committed_count(root, "tele") == 2100, 10, message="first rows")
        live = stream_files(root, "tele")[-1]
        blocker = sqlite3.connect(live, isolation_level=None, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")
        publish(broker.port, numbered(ns, 2100, 200), qos=1)
        attic.wait_log("cannot write", 20)
        blocker.execute("ROLLBACK")
        blocker.close()
        wait_for(lambda: set(numbers_stored(root)) == set(range(2300)), 30, message="rows after the lock")
        attic.wait_log("writing works again", 10)
    finally:
        assert attic.stop() == 0
    assert meta(live)["closed_by"] == "stop"


def test_window_of_one_still_flows(tmp_path, fresh_broker, ns):
    """Mosquitto with max_inflight_messages 1: one unacked message at a time; group commit keeps it moving."""
    mosquitto = fresh_broker("max_queued_messages 100000\nmax_inflight_messages 1\n")
    root = tmp_path / "logs"
    attic = AtticProcess(config_for(tmp_path, mosquitto.port, ns)).start()
    try:
        mosquitto.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        publish(mosquitto.port, numbered(ns, 0, 3000), qos=1)
        wait_for(lambda: committed_count(root, "tele") == 3000, 30, message="3000 rows through a window of 1")
    finally:
        assert attic.stop() == 0
    assert sorted(numbers_stored(root)) == list(range(3000))


def test_stall_watchdog_reconnects(tmp_path, broker, ns):
    root = tmp_path / "logs"
    attic = AtticProcess(config_for(tmp_path, broker.port, ns, stream_extra="stall_after: 2s")).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        attic.wait_log("no message for", 10)
        attic.wait_log("subscribed to", 10, count=2)  # reconnected and resubscribed by itself
        publish(broker.port, numbered(ns, 0, 10), qos=1)
        wait_for(lambda: committed_count(root, "tele") == 10, 10, message="rows after the stall")
    finally:
        assert attic.stop() == 0
    kinds = [kind for kind, _ in events(root)]
    assert "stalled" in kinds
    assert kinds.count("subscribed") >= 2


def test_broker_drops_become_events(tmp_path, fresh_broker, ns):
    """A broker that drops messages for another, offline subscriber: the gap shows in Attic's events."""
    mosquitto = fresh_broker("max_queued_messages 10\n")
    root = tmp_path / "logs"
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    offline = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{ns}-offline", clean_session=False,
                          protocol=mqtt.MQTTv311)
    offline.connect("127.0.0.1", mosquitto.port)
    offline.subscribe(f"{ns}/other/#", 1)
    offline.loop_start()
    mosquitto.wait_subscribed(f"{ns}-offline", f"{ns}/other/#")
    offline.disconnect()
    offline.loop_stop()
    attic = AtticProcess(config_for(tmp_path, mosquitto.port, ns)).start()
    try:
        mosquitto.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        publish(mosquitto.port, [(f"{ns}/other/x", str(i).encode()) for i in range(50)], qos=1)
        attic.wait_log("dropped", 15)
    finally:
        assert attic.stop() == 0
    drops = [detail for kind, detail in events(root) if kind == "broker_dropped"]
    assert sum(int(d.split(" dropped ")[1].split()[0]) for d in drops) >= 40  # the offline client's 40 at least
