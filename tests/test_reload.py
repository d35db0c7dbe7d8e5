"""SIGHUP reload: added streams start, removed ones stop, changed ones restart, unchanged ones are not touched."""

from __future__ import annotations

import json
import signal
import threading

from attic.config import load_config
from attic.service import plan_reload, stream_key
from tests.support import (
    AtticProcess,
    all_rows,
    committed_count,
    publish,
    query,
    stream_files,
    wait_for,
    write_config,
)


def config_text(port, ns, streams, extra=""):
    return f"""
broker: {{host: 127.0.0.1, port: {port}, client_id: "{ns}-{{stream}}"}}
storage: {{root: logs, rotate: 1h}}
{extra}
streams:
{streams}
"""


SEQ = "  - {name: seq, topic: \"%s/seq/#\", qos: 1}\n"
EXTRA = "  - {name: extra, topic: \"%s/extra/#\", qos: 1}\n"
OTHER = "  - {name: other, topic: \"%s/other/#\", qos: 1}\n"


def events(root, stream, kind=None):
    rows = [row for path in stream_files(root, stream) for row in query(path, "SELECT kind, detail FROM attic_events")]
    return [detail for k, detail in rows if k == kind] if kind else rows


def numbers(root, stream):
    return [int(p) for (p,) in all_rows(root, stream, "SELECT payload FROM messages")]


def test_sighup_adds_a_stream_while_another_receives_a_sequence(tmp_path, broker, ns):
    total = 3000
    config = write_config(tmp_path, config_text(broker.port, ns, SEQ % ns + OTHER % ns))
    root = tmp_path / "logs"
    attic = AtticProcess(config).start()
    try:
        broker.wait_subscribed(f"{ns}-seq", f"{ns}/seq/#")
        sender = threading.Thread(target=publish, args=(broker.port, [(f"{ns}/seq/n", str(i).encode())
                                                                      for i in range(total)]),
                                  kwargs={"seconds": 4})
        sender.start()
        wait_for(lambda: committed_count(root, "seq") >= 300, 10, message="the sequence flowing")
        # the new stream goes between the others: their places in the file move, they stay unchanged
        write_config(tmp_path, config_text(broker.port, ns, SEQ % ns + EXTRA % ns + OTHER % ns))
        attic.signal(signal.SIGHUP)
        attic.wait_log("reload: added extra; removed -; changed -; 2 unchanged")
        assert committed_count(root, "seq") < total, "the reload must happen mid-sequence"
        broker.wait_subscribed(f"{ns}-extra", f"{ns}/extra/#")
        publish(broker.port, [(f"{ns}/extra/x", str(i).encode()) for i in range(50)])
        sender.join(30)
        wait_for(lambda: committed_count(root, "seq") >= total and committed_count(root, "extra") >= 50, 20,
                 message="every message of both streams")
    finally:
        assert attic.stop() == 0, attic.log_text()[-3000:]
    assert numbers(root, "seq") == list(range(total))  # no gap, no duplicate, in order
    assert sorted(numbers(root, "extra")) == list(range(50))
    assert len(events(root, "seq", "connected")) == 1  # never reconnected
    assert len(events(root, "other", "connected")) == 1
    assert "stream extra: connected to" in attic.log_text()
    for stream in ("seq", "other", "extra"):
        (detail,) = events(root, stream, "reload")
        assert json.loads(detail) == {"added": ["extra"], "removed": [], "changed": [],
                                      "unchanged": ["seq", "other"], "failed": [], "report": False}


def test_sighup_with_a_broken_config_changes_nothing_then_a_good_one_removes_and_changes(tmp_path, broker, ns):
    config = write_config(tmp_path, config_text(broker.port, ns, SEQ % ns + EXTRA % ns + OTHER % ns))
    root = tmp_path / "logs"
    attic = AtticProcess(config).start()
    try:
        for stream in ("seq", "extra", "other"):
            broker.wait_subscribed(f"{ns}-{stream}", f"{ns}/{stream}/#")
        broken = SEQ % ns + EXTRA % ns + OTHER.replace("qos: 1", "qos: 7") % ns
        write_config(tmp_path, config_text(broker.port, ns, broken))
        attic.signal(signal.SIGHUP)
        attic.wait_log("reload: 1 problem(s) in")
        assert "reload: config.yaml:8: streams[2].qos: must be 0, 1 or 2, got 7" in attic.log_text()
        publish(broker.port, [(f"{ns}/{s}/x", str(i).encode()) for s in ("seq", "extra", "other") for i in range(20)])
        wait_for(lambda: all(committed_count(root, s) == 20 for s in ("seq", "extra", "other")), 10,
                 message="every stream still logging")
        # remove extra, change other's topic, leave seq alone
        write_config(tmp_path, config_text(broker.port, ns, SEQ % ns + OTHER.replace("other/#", "other2/#") % ns))
        attic.signal(signal.SIGHUP)
        attic.wait_log("reload: added -; removed extra; changed other; 1 unchanged")
        broker.wait_subscribed(f"{ns}-other", f"{ns}/other2/#")
        publish(broker.port, [(f"{ns}/{t}/x", str(i).encode()) for t in ("seq", "other2") for i in range(20, 40)])
        wait_for(lambda: committed_count(root, "seq") == 40 and committed_count(root, "other") == 40, 10,
                 message="seq and the changed stream logging")
    finally:
        assert attic.stop() == 0, attic.log_text()[-3000:]
    assert numbers(root, "seq") == list(range(40))
    assert len(events(root, "seq", "connected")) == 1
    assert json.loads(events(root, "seq", "reload_failed")[0])["problems"] == [
        "config.yaml:8: streams[2].qos: must be 0, 1 or 2, got 7"]
    assert len(events(root, "other", "connected")) == 2  # restarted with its new topic
    assert "reload: changed" in events(root, "other", "stop")
    assert events(root, "extra", "stop") == ["reload: removed"]
    assert "stream extra: removed; the broker keeps its session" in attic.log_text()
    assert json.loads(events(root, "seq", "reload")[0])["removed"] == ["extra"]


def test_plan_compares_what_each_stream_depends_on(tmp_path):
    filters = tmp_path / "filters"
    filters.mkdir()
    (filters / "mine.py").write_text("def make():\n    return lambda record: record\n")
    base = """
        broker: {host: localhost%s}
        storage: {root: logs%s}
        report: {every: %s}
        streams:
          %s
          - {name: a, topic: "a/#"}
          - {name: b, topic: "b/#", filters: [mine]}
    """

    def plan(before, after):
        old = load_config(write_config(tmp_path, base % before, "old.yaml"))
        new = load_config(write_config(tmp_path, base % after, "new.yaml"))
        result = plan_reload(old, new, {s.name: stream_key(s, old) for s in old.streams})
        return result.added, result.removed, result.changed, result.reporter

    same = ("", "", "60s", "")
    assert plan(same, same) == ([], [], [], False)
    assert plan(same, ("", "", "60s", '- {name: new, topic: "n/#"}')) == (["new"], [], [], False)
    assert plan(("", "", "60s", '- {name: new, topic: "n/#"}'), same) == ([], ["new"], [], False)
    assert plan(same, (", port: 1884", "", "60s", "")) == ([], [], ["a", "b"], True)  # inherited broker keys
    assert plan(same, ("", ", rotate: 2h", "60s", "")) == ([], [], ["a", "b"], False)  # storage: every stream
    assert plan(same, ("", "", "10s", "")) == ([], [], [], True)  # report: only the reporter
    old = load_config(write_config(tmp_path, base % same, "old.yaml"))
    running = {s.name: stream_key(s, old) for s in old.streams}  # taken when the streams started
    (filters / "mine.py").write_text("def make():\n    return lambda record: None\n")  # an edited drop-in
    new = load_config(write_config(tmp_path, base % same, "new.yaml"))
    assert plan_reload(old, new, running).changed == ["b"]
    del running["a"]  # not running (it failed to start at an earlier reload): start it
    assert plan_reload(old, new, running).added == ["a"]
