"""The self-report: log lines, attic_stats rows, JSON on a topic, Prometheus /metrics, read back and compared."""

from __future__ import annotations

import json
import logging
import queue
import re
import sys
import time
import urllib.request
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from attic.config import Broker, ConfigError, Report, load_config
from attic.preflight import preflight
from attic.report import Latency, Reporter, figures, log_line
from attic.store import RotatingStore
from attic.writer import Writer, WriterStats
from tests.support import (
    AtticProcess,
    all_rows,
    committed_count,
    free_port,
    publish,
    query,
    wait_for,
    write_config,
)

REPORT_LINE = re.compile(r"stream (\S+): report (.*) file=(\S+)$", re.M)


def reports(text: str, stream: str) -> list[dict]:
    """The report log lines of one stream, as {key: value}."""
    out = []
    for name, pairs, file in REPORT_LINE.findall(text):
        if name == stream:
            values = dict(pair.split("=", 1) for pair in pairs.split())
            out.append({k: None if v == "-" else float(v) for k, v in values.items()} | {"file": file})
    return out


class Subscriber:
    """A plain paho client collecting JSON documents from a topic filter."""

    def __init__(self, port: int, topic: str):
        self.documents: list[dict] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.documents.append(json.loads(m.payload) | {"_topic": m.topic})
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metric(text: str, name: str, stream: str) -> float:
    match = re.search(rf'^{name}{{stream="{stream}"}} (\S+)$', text, re.M)
    assert match, f"{name} for {stream} not in /metrics"
    return float(match.group(1))


def test_report_every_second_in_log_stats_json_and_prometheus(tmp_path, broker, ns):
    prom = free_port()
    config = write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs, rotate: 1h}}
        report: {{every: 1s, topic: "{ns}/attic/{{host}}/stats", prometheus: "127.0.0.1:{prom}"}}
        streams:
          - name: tele
            topic: {ns}/tele/#
            qos: 1
          - name: own
            topic: {ns}/attic/#
            qos: 1
    """)
    root = tmp_path / "logs"
    subscriber = Subscriber(broker.port, f"{ns}/attic/+/stats")
    attic = AtticProcess(config).start()
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/tele/#")
        publish(broker.port, [(f"{ns}/tele/d{i % 4}", str(i).encode()) for i in range(4000)], seconds=3)
        wait_for(lambda: committed_count(root, "tele") == 4000, 20, message="4000 rows")
        # a report taken after the last commit: its totals are final
        wait_for(lambda: any(r["written"] == 4000 for r in reports(attic.log_text(), "tele")), 10,
                 message="a report with every row written")
        wait_for(lambda: any(d["streams"]["tele"]["written"] == 4000 for d in subscriber.documents), 10,
                 message="a JSON report with every row written")
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{prom}/metrics", timeout=5).read().decode()
    finally:
        code = attic.stop()
        subscriber.close()
    assert code == 0, attic.log_text()[-3000:]

    # log: a line per stream per second, non-zero rates while traffic flowed
    lines = reports(attic.log_text(), "tele")
    busy = [r for r in lines if r["received_per_s"] > 0]
    assert len(busy) >= 2 and all(r["written_per_s"] > 0 for r in busy[:-1]), lines
    assert max(r["received_per_s"] for r in busy) > 500
    assert any(r["commit_p50_ms"] and r["commit_p95_ms"] >= r["commit_p50_ms"] for r in busy)
    assert all(r["rss_mb"] > 5 and r["cpu_percent"] >= 0 for r in lines)
    assert all(r["file"].startswith("tele/") and r["file"].endswith(".sqlite") for r in busy)
    assert len(reports(attic.log_text(), "own")) >= len(lines) - 1

    # attic_stats: the same figures as rows in the stream's own file
    stats = all_rows(root, "tele", "SELECT ts_us, key, value FROM attic_stats")
    rounds = sorted({ts for ts, _, _ in stats})
    assert len(rounds) >= len(lines) - 1
    keys = {key for _, key, _ in stats}
    assert {"received_per_s", "written_per_s", "queue", "commit_p50_ms", "commit_p95_ms", "received", "written",
            "rejected", "dropped", "reconnects", "cpu_percent", "rss_mb"} <= keys
    assert max(v for _, k, v in stats if k == "written") == 4000 == len(all_rows(root, "tele"))
    assert max(v for _, k, v in stats if k == "received_per_s") > 500
    per_round = [ts for ts, k, _ in stats if k == "written"]
    assert 0.5e6 < min(b - a for a, b in zip(per_round, per_round[1:], strict=False)) and \
        max(b - a for a, b in zip(per_round, per_round[1:], strict=False)) < 2.5e6  # about every second

    # JSON on the topic ({host} expanded), and a stream logging Attic's own reports
    document = next(d for d in subscriber.documents if d["streams"]["tele"]["written"] == 4000)
    assert document["_topic"] == f"{ns}/attic/{document['host']}/stats"
    assert set(document["streams"]) == {"tele", "own"} and document["rss_mb"] > 5
    assert document["streams"]["tele"]["received"] == 4000
    own = [json.loads(p) for (p,) in all_rows(root, "own", "SELECT payload FROM messages")]
    assert own and all(d["run_id"] == document["run_id"] for d in own)

    # Prometheus: counters match the rows in the files
    assert metric(scraped, "attic_written_total", "tele") == 4000 == len(all_rows(root, "tele"))
    assert metric(scraped, "attic_received_total", "tele") == 4000
    assert metric(scraped, "attic_rejected_total", "tele") == 0
    assert metric(scraped, "attic_dropped_total", "tele") == 0
    assert metric(scraped, "attic_reconnects_total", "tele") == 0
    assert metric(scraped, "attic_queue_depth", "tele") == 0
    assert metric(scraped, "attic_commit_seconds_count", "tele") > 0
    assert 'attic_commit_seconds_bucket{le="+Inf",stream="tele"}' in scraped

    # logging: nothing per message at INFO, no line twice
    text = attic.log_text()
    assert text.count(f"stream tele: connected to 127.0.0.1:{broker.port}") == 1
    assert len(text.splitlines()) < 200


def test_percentiles_rates_and_log_line():
    latency = Latency()
    latency.add([1000] * 50 + [2000] * 45 + [10_000] * 5)  # µs
    assert latency.percentile_ms(0.5) == pytest.approx(1.0, rel=0.05)
    assert latency.percentile_ms(0.95) == pytest.approx(2.0, rel=0.05)
    assert latency.percentile_ms(0.99) == pytest.approx(10.0, rel=0.05)
    assert Latency().percentile_ms(0.5) is None
    prev = {"t": 10.0, "received": 100, "written": 90, "rejected": 0, "dropped": 0, "reconnects": 0}
    now = {"t": 12.0, "received": 300, "written": 290, "rejected": 1, "dropped": 0, "reconnects": 2,
           "commits": 7, "queue": 10}
    values = figures(prev, now, latency, 3.5, 40.2)
    assert values["received_per_s"] == 100.0 and values["written_per_s"] == 100.0
    assert values["reconnects"] == 2 and values["queue"] == 10 and values["cpu_percent"] == 3.5
    line = log_line("tele", values, "tele/2026-01-01/1767225600.sqlite")
    assert line.startswith("stream tele: report received_per_s=100.0 written_per_s=100.0 queue=10 ")
    assert line.endswith(" file=tele/2026-01-01/1767225600.sqlite")


def test_check_reports_missing_prometheus_extra_and_bad_topic(tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path, """
        storage: {root: logs}
        report: {prometheus: 9108, topic: "attic/+/stats"}
        streams: [{name: tele, topic: "#"}]
    """))
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if the extra were not installed
    with pytest.raises(ConfigError) as caught:
        preflight(config)
    assert caught.value.problems == [
        "config.yaml: report.prometheus: needs prometheus-client: pip install 'attic[prometheus]'",
        "config.yaml: report.topic: must be a topic to publish to, without + or #, got 'attic/+/stats'",
    ]


class FakeStream:
    """Just what the reporter reads of a Stream: a source's counters, a writer, its queue."""

    def __init__(self, writer):
        self.source = SimpleNamespace(received=0, dropped=0, reconnects=0)
        self.writer = writer
        self.queue = writer.queue
        self.started = time.monotonic()


def test_round_writes_stats_through_the_writer_or_falls_back_to_counters_when_its_queue_is_full(tmp_path, caplog):
    store = RotatingStore(tmp_path, "tele", 3600)
    writer = Writer("tele", store, queue.Queue(10), commit_every_s=0.25, commit_rows=100)
    stream = FakeStream(writer)
    reporter = Reporter(Report(every_s=60), Broker(), lambda: {"tele": stream}, "run1", tmp_path)
    writer.start()
    try:
        for i in range(5):
            writer.queue.put((time.time_ns() // 1000, "a/b", str(i).encode(), 0, 0, 0))
        stream.source.received = 5
        assert writer.sync()
        values = reporter.round()["tele"]
        assert values["written"] == 5 and values["received"] == 5 and values["commit_p50_ms"] > 0
        assert writer.stats.commit_us == []  # swapped out on the writer thread
        assert reporter.round(report=False) == {"tele": None}  # a drain: no report, no rows
        assert writer.sync()
        rows = dict(query(store.current.path, "SELECT key, value FROM attic_stats"))
        assert rows["written"] == 5 and rows["received_per_s"] > 0 and "file" not in rows
        assert len(query(store.current.path, "SELECT * FROM attic_stats")) == len(values)
    finally:
        writer.stop()
    stuck = SimpleNamespace(name="tele", alive=True, queue=queue.Queue(1), stats=WriterStats(),
                            store=SimpleNamespace(current=None))
    stuck.queue.put(object())  # a busy writer: its queue is full
    busy = FakeStream(stuck)
    busy.source.received = 7
    reporter = Reporter(Report(every_s=60), Broker(), lambda: {"tele": busy}, "run1", tmp_path)
    with caplog.at_level(logging.DEBUG, logger="attic.report"):
        values = reporter.round()["tele"]
    assert values["received"] == 7 and values["commit_p50_ms"] is None
    assert "stream tele: writer busy" in caplog.text and "no attic_stats rows this round" in caplog.text
