"""``workers: N``: one stream shared by N processes through an MQTT 5 shared subscription.

Real private Mosquitto, real ``attic run`` processes, real files read back with sqlite3. Every
test publishes numbered QoS 1 messages and checks which numbers the files hold afterwards.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from attic.config import ConfigError, load_config
from tests.support import (
    AtticProcess,
    committed_count,
    meta,
    publish,
    query,
    stream_files,
    wait_for,
    write_config,
)

TOTAL = 20000


def config_text(port, ns, workers, extra=""):
    return f"""
        broker: {{host: 127.0.0.1, port: {port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs}}
        report: {{every: 1h}}
        streams:
          - name: tele
            topic: {ns}/#
            qos: 1
            workers: {workers}
            {extra}
    """


def numbered(ns, start, count):
    return [(f"{ns}/dev{i % 5}", str(i).encode()) for i in range(start, start + count)]


def numbers(root, path_filter=None):
    """Every stored number (with repeats), optionally from the files whose name contains ``path_filter``.

    While Attic runs, a file created this very moment may not have its tables yet: it counts as empty.
    """
    found = []
    for path in stream_files(root, "tele"):
        if path_filter is None or path_filter in path.name:
            try:
                found += [int(p) for (p,) in query(path, "SELECT payload FROM messages")]
            except sqlite3.OperationalError:
                pass
    return found


def worker_pids(attic, label):
    """The pids the log reports for worker ``label`` (tele.w1), in order of start."""
    return [int(p) for p in re.findall(rf"worker {re.escape(label)} started \(pid (\d+)\)", attic.log_text())]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_workers_subscribed(broker, ns, count, after=0):
    for n in range(1, count + 1):
        broker.wait_subscribed(f"{ns}-tele-w{n}", f"$share/attic-tele/{ns}/#", timeout=20, after=after)


def session_present(port, client_id):
    """Whether the broker holds a session for ``client_id`` (connects without touching it, then leaves it)."""
    got = {}
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_connect(c, userdata, flags, reason_code, properties):
        got["present"] = flags.session_present
        done.set()
    client.on_connect = on_connect
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600  # keep it as it was if it exists
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return got["present"]


# --------------------------------------------------------------------------- config


def problems(tmp_path, text):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_bad_workers_values_are_one_line_errors(tmp_path):
    assert problems(tmp_path, """
        streams:
          - {name: a, topic: "a/#", workers: 0}
          - {name: b, topic: "b/#", workers: two}
          - {name: c, topic: "c/#", workers: 2.5}
          - {name: d, topic: "d/#", workers: 2, protocol: "3.1.1"}
          - {name: e, topic: "e/#", workers: 65}
          - name: m
            every: 1s
            workers: 2
            modbus: {host: 127.0.0.1, unit: 1, registers: [{name: v, address: 0}]}
    """) == [
        "config.yaml:3: streams[0].workers: must be between 1 and 64, got 0",
        "config.yaml:4: streams[1].workers: must be a whole number, got 'two'",
        "config.yaml:5: streams[2].workers: must be a whole number, got 2.5",
        "config.yaml:6: streams[3].workers: workers > 1 uses MQTT 5 shared subscriptions; set protocol: 5",
        "config.yaml:7: streams[4].workers: must be between 1 and 64, got 65",
        "config.yaml:10: streams[5].workers: only MQTT streams have workers (they share a subscription); "
        "a Modbus stream polls from one process: remove it",
    ]


def test_protocol_3_from_the_broker_section_is_named_too(tmp_path):
    assert problems(tmp_path, """
        broker: {protocol: "3.1.1"}
        streams:
          - {name: a, topic: "a/#", workers: 3}
    """) == ["config.yaml:4: streams[0].workers: workers > 1 uses MQTT 5 shared subscriptions; set protocol: 5"]


def test_check_lists_the_workers(tmp_path):
    path = write_config(tmp_path, """
        storage: {root: logs}
        streams:
          - {name: tele, topic: "sensors/#", workers: 2}
          - {name: plain, topic: "other/#"}
    """)
    out = subprocess.run([sys.executable, "-m", "attic", "check", "-c", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "tele: mqtt localhost:1883 topic 'sensors/#' qos 1, 2 workers; no filters" in out.stdout
    assert "plain: mqtt localhost:1883 topic 'other/#' qos 1; no filters" in out.stdout


# --------------------------------------------------------------------------- running


def test_two_workers_store_20k_exactly_once_and_read_back_as_one(tmp_path, broker, ns):
    root = tmp_path / "logs"
    attic = AtticProcess(write_config(tmp_path, config_text(broker.port, ns, 2))).start()
    try:
        wait_workers_subscribed(broker, ns, 2)
        publish(broker.port, numbered(ns, 0, TOTAL))
        wait_for(lambda: committed_count(root, "tele") >= TOTAL, 60, message=f"{TOTAL} rows")
        pids = worker_pids(attic, "tele.w1") + worker_pids(attic, "tele.w2")
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        code = attic.stop()
    assert code == 0  # SIGTERM: the workers drained, committed, closed and exited 0
    assert not any(alive(pid) for pid in pids)
    stored = numbers(root)
    assert len(stored) == TOTAL and set(stored) == set(range(TOTAL))  # every number exactly once
    shares = {w: len(numbers(root, f".{w}.")) for w in ("w1", "w2")}
    assert sum(shares.values()) == TOTAL
    assert min(shares.values()) >= TOTAL // 5, shares  # both writers busy (Mosquitto alternates)
    for path in stream_files(root, "tele"):
        info = meta(path)
        assert path.name.split(".")[1] == info["writer_id"]
        assert info["closed_by"] == "stop" and "closed_at_us" in info
        assert query(path, "PRAGMA journal_mode")[0][0] == "delete"
        assert not os.stat(path).st_mode & 0o222
    assert not list(root.glob("tele/*/*-wal"))

    # attic.rows / attic query read both writers' files as one, in time order
    from attic.read import rows
    merged = list(rows(root, stream="tele", columns="payload"))
    assert sorted(int(r[1]) for r in merged) == list(range(TOTAL))
    assert [r[0] for r in merged] == sorted(r[0] for r in merged)
    out = subprocess.run([sys.executable, "-m", "attic", "query", str(root), "--stream", "tele", "--format", "csv",
                          "--columns", "payload"], capture_output=True, text=True, check=True).stdout
    assert sorted(int(line.split(",")[1]) for line in out.splitlines()[1:]) == list(range(TOTAL))

    sessions = json.loads((root / "tele" / ".sessions.json").read_text())["sessions"]
    assert [s["client_id"] for s in sessions] == [f"{ns}-tele-w1", f"{ns}-tele-w2"]


def test_a_killed_worker_is_restarted_and_nothing_is_lost(tmp_path, broker, ns):
    root = tmp_path / "logs"
    attic = AtticProcess(write_config(tmp_path, config_text(broker.port, ns, 2))).start()
    sender = None
    try:
        wait_workers_subscribed(broker, ns, 2)
        sender = threading.Thread(target=publish, args=(broker.port, numbered(ns, 0, TOTAL)))
        sender.start()
        wait_for(lambda: len(numbers(root, ".w1.")) >= 2000, 30, message="w1 busy")
        (victim,) = worker_pids(attic, "tele.w1")
        os.kill(victim, signal.SIGKILL)  # no drain, no close: its file stays open in WAL mode
        attic.wait_log("worker w1 (pid", 10)
        wait_for(lambda: len(worker_pids(attic, "tele.w1")) == 2, 15, message="w1 restarted")
        sender.join(60)
        wait_for(lambda: set(numbers(root)) == set(range(TOTAL)), 60, message=f"all {TOTAL} numbers")
    finally:
        if sender is not None:
            sender.join(60)
        code = attic.stop()
    assert code == 0
    assert "exited with signal 9; restarting it" in attic.log_text()
    counts = collections.Counter(numbers(root))
    assert set(counts) == set(range(TOTAL))  # nothing lost
    # At-least-once: what w1 had committed but whose acknowledgement had not reached the broker when
    # it died is delivered again, to the restarted w1 (its session): a short tail, stored twice.
    killed, restarted = [p for p in stream_files(root, "tele") if ".w1." in p.name]
    repeated = {n for n, count in counts.items() if count > 1}
    assert all(counts[n] == 2 for n in repeated)
    tail = [int(p) for (p,) in query(killed, "SELECT payload FROM messages ORDER BY rowid DESC LIMIT ?",
                                     (len(repeated),))]
    assert repeated == set(tail)  # exactly the killed worker's last rows ...
    assert repeated <= set(numbers(root, restarted.name))  # ... once more in the restarted worker's file
    assert len(repeated) <= 1000, len(repeated)
    assert meta(killed)["closed_by"] == "recovery"  # the restarted w1 closed what the killed one left open
    assert "unclean_shutdown" in [kind for p in stream_files(root, "tele")
                                  for (kind,) in query(p, "SELECT kind FROM attic_events")]


def test_sigterm_mid_burst_drains_and_exits_0(tmp_path, broker, ns):
    root = tmp_path / "logs"
    config = write_config(tmp_path, config_text(broker.port, ns, 2))
    attic = AtticProcess(config).start()
    wait_workers_subscribed(broker, ns, 2)
    sender = threading.Thread(target=publish, args=(broker.port, numbered(ns, 0, 10000)))
    sender.start()
    try:
        wait_for(lambda: committed_count(root, "tele") >= 1000, 30, message="1000 rows")
        assert attic.stop() == 0
        assert all("closed_at_us" in meta(p) for p in stream_files(root, "tele"))
        assert committed_count(root, "tele") < 10000  # stopped mid-burst; the rest waits in the sessions
        attic = AtticProcess(config, log=tmp_path / "second.log").start()
        sender.join(60)
        wait_for(lambda: set(numbers(root)) == set(range(10000)), 60, message="all 10000 numbers")
    finally:
        sender.join(60)
        assert attic.stop() == 0
    assert len(numbers(root)) == 10000  # a clean stop acknowledged everything it stored: no repeats


def test_lowering_workers_on_reload_drains_the_removed_sessions(tmp_path, broker, ns):
    root = tmp_path / "logs"
    config = write_config(tmp_path, config_text(broker.port, ns, 3))
    attic = AtticProcess(config).start()
    sender = None
    try:
        wait_workers_subscribed(broker, ns, 3)
        sender = threading.Thread(target=publish, args=(broker.port, numbered(ns, 0, 12000)))
        sender.start()
        wait_for(lambda: len(numbers(root, ".w3.")) >= 500, 30, message="w3 busy")
        w1, w2 = worker_pids(attic, "tele.w1"), worker_pids(attic, "tele.w2")
        write_config(tmp_path, config_text(broker.port, ns, 2))
        attic.signal(signal.SIGHUP)
        attic.wait_log("workers 3 → 2", 20)
        attic.wait_log("drained session", 30)
        sender.join(60)
        wait_for(lambda: set(numbers(root)) == set(range(12000)), 60, message="all 12000 numbers")
        assert worker_pids(attic, "tele.w1") == w1 and worker_pids(attic, "tele.w2") == w2  # untouched
        wait_for(lambda: "w3" not in (root / "tele" / ".sessions.json").read_text(), 10, message="record updated")
    finally:
        if sender is not None:
            sender.join(60)
        code = attic.stop()
    assert code == 0
    assert len(numbers(root)) == 12000  # each number once: w3 left the group, nothing was shared twice
    assert not session_present(broker.port, f"{ns}-tele-w3")  # the broker no longer queues for w3
    assert session_present(broker.port, f"{ns}-tele-w1")
    (detail,) = {d for p in stream_files(root, "tele") if ".w1." in p.name
                 for (d,) in query(p, "SELECT detail FROM attic_events WHERE kind = 'reload'")}
    assert json.loads(detail)["resized"] == ["tele"]


def test_from_two_workers_to_one_between_runs_drains_what_they_held(tmp_path, broker, ns):
    root = tmp_path / "logs"
    config = write_config(tmp_path, config_text(broker.port, ns, 2))
    attic = AtticProcess(config).start()
    try:
        wait_workers_subscribed(broker, ns, 2)
    finally:
        assert attic.stop() == 0
    publish(broker.port, numbered(ns, 0, 2000))  # queued for the offline workers' sessions, about half each
    write_config(tmp_path, config_text(broker.port, ns, 1))
    attic = AtticProcess(config, log=tmp_path / "second.log").start()
    try:
        attic.wait_log(f"drained session {ns}-tele-w1", 30)
        attic.wait_log(f"drained session {ns}-tele-w2", 30)
        publish(broker.port, numbered(ns, 2000, 1000))  # to the stream's own (plain) subscription now
        wait_for(lambda: set(numbers(root)) == set(range(3000)), 30, message="all 3000 numbers")
    finally:
        code = attic.stop()
    assert code == 0
    assert len(numbers(root)) == 3000
    assert len(numbers(root, ".w1.")) + len(numbers(root, ".w2.")) == 2000  # drained into the workers' files
    assert not session_present(broker.port, f"{ns}-tele-w1")
    assert not session_present(broker.port, f"{ns}-tele-w2")
    sessions = json.loads((root / "tele" / ".sessions.json").read_text())["sessions"]
    assert [s["client_id"] for s in sessions] == [f"{ns}-tele"]


def test_from_one_to_two_workers_on_reload_loses_nothing(tmp_path, broker, ns):
    root = tmp_path / "logs"
    config = write_config(tmp_path, config_text(broker.port, ns, 1))
    attic = AtticProcess(config).start()
    sender = None
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/#")
        sender = threading.Thread(target=publish, args=(broker.port, numbered(ns, 0, 12000)))
        sender.start()
        wait_for(lambda: len(numbers(root)) >= 2000, 30, message="2000 rows in the plain stream")
        write_config(tmp_path, config_text(broker.port, ns, 2))
        attic.signal(signal.SIGHUP)
        attic.wait_log("reload: added -; removed -; changed tele; 0 unchanged", 20)
        # the plain session leaves only once a worker's shared subscription is confirmed: no gap
        attic.wait_log(f"drained session {ns}-tele:", 30)
        sender.join(60)
        wait_for(lambda: set(numbers(root)) == set(range(12000)), 60, message="all 12000 numbers")
    finally:
        if sender is not None:
            sender.join(60)
        code = attic.stop()
    assert code == 0
    assert numbers(root, ".w1.") and numbers(root, ".w2.")
    # What arrived while both the plain subscription and the group existed is stored by both sides.
    repeats = len(numbers(root)) - 12000
    assert 0 <= repeats < 12000
    assert not session_present(broker.port, f"{ns}-tele")


def test_a_worker_that_keeps_crashing_stops_attic_with_status_1(tmp_path, broker, ns):
    attic = AtticProcess(write_config(tmp_path, config_text(broker.port, ns, 2))).start()
    try:
        for crash in range(1, 6):
            wait_for(lambda crash=crash: len(worker_pids(attic, "tele.w1")) == crash, 20, message=f"w1 start {crash}")
            os.kill(worker_pids(attic, "tele.w1")[-1], signal.SIGKILL)
        assert attic.proc.wait(30) == 1
    finally:
        attic.kill()
    log = attic.log_text()
    assert "stream tele: worker w1 crashed 5 times within 60s (last: signal 9); giving up" in log
    assert "stream(s) tele failed (see above); stopping so the service manager restarts Attic" in log
    assert not any(alive(pid) for pid in worker_pids(attic, "tele.w2"))  # the other worker was stopped too
