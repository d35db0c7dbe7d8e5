"""End to end: filtered streams under `attic run` against a private Mosquitto, read back with sqlite3."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

from tests.support import AtticProcess, all_rows, publish, query, stream_files, wait_for, write_config

REPO = Path(__file__).parent.parent


def count(root: Path, stream: str, table: str) -> int:
    total = 0
    for path in stream_files(root, stream):
        try:
            total += query(path, f"SELECT count(*) FROM {table}")[0][0]
        except sqlite3.Error:
            pass  # a file being created, or one without that table yet
    return total


def test_a_filter_chain_turns_json_messages_into_exact_typed_rows(tmp_path, broker, ns):
    config = write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs, rotate: 1s}}
        filters_dir: {REPO / "filters"}
        streams:
          - name: tele
            topic: "{ns}/sensors/#"
            qos: 1
            filters:
              - drop: {{topic: "{ns}/sensors/+/+/debug"}}
              - json_fields: {{fields: {{temperature: real, humidity: integer, meta.battery: real, label: text}}}}
              - topic_fields: {{levels: {{2: site, 3: device}}}}
              - scale: {{field: temperature, factor: 1.8, offset: 32, into: temperature_f}}
              - range_check: {{field: temperature, min: -40, max: 85}}
    """)
    sent, expected_rows, expected_rejects = [], [], []
    for i in range(1000):
        site, device = f"site{i % 3}", f"dev{i % 7}"
        kind = "debug" if i % 10 == 9 else "telemetry"
        topic = f"{ns}/sensors/{site}/{device}/{kind}"
        temperature = 150.5 if i % 25 == 3 else round(-20 + (i % 80) * 0.75, 2)
        body = {"temperature": temperature if i % 2 else int(temperature) if temperature.is_integer() else temperature,
                "humidity": str(i % 100) if i % 3 == 0 else i % 100, "meta": {"battery": 3.0 + i / 1000}}
        if i % 4 == 0:
            body["label"] = f"n{i}"
        payload = json.dumps(body).encode()
        sent.append((topic, payload))
        if kind == "debug":
            continue
        if temperature > 85:
            expected_rejects.append((topic, payload, "range_check", f"temperature {float(temperature)} is above max 85"))
            continue
        expected_rows.append((topic, payload, float(temperature), i % 100, 3.0 + i / 1000, body.get("label"), site,
                              device, float(temperature) * 1.8 + 32))
    assert len(expected_rows) == 860 and len(expected_rejects) == 40

    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        broker.wait_subscribed(f"{ns}-tele", f"{ns}/sensors/#")
        publish(broker.port, sent, qos=1, seconds=2)
        wait_for(lambda: count(root, "tele", "messages") >= 860 and count(root, "tele", "attic_rejects") >= 40,
                 timeout=20, message="every record stored or rejected")
    finally:
        code = attic.stop()
    assert code == 0, attic.log_text()

    columns = "topic, payload, temperature, humidity, meta_battery, label, site, device, temperature_f"
    assert sorted(all_rows(root, "tele", f"SELECT {columns} FROM messages")) == sorted(expected_rows)
    rejects = all_rows(root, "tele", "SELECT topic, payload, stage, error FROM attic_rejects")
    assert sorted(rejects) == sorted(expected_rejects)

    files = [p for p in stream_files(root, "tele") if query(p, "SELECT count(*) FROM messages")[0][0]]
    assert len(files) >= 2  # rotated while filtering: every file got its own columns
    for path in files:
        declared = {row[1]: row[2] for row in query(path, "PRAGMA table_info(messages)")}
        assert declared == {"ts_us": "INTEGER", "topic": "TEXT", "payload": "BLOB", "qos": "INTEGER",
                            "retain": "INTEGER", "temperature": "REAL", "humidity": "INTEGER", "meta_battery": "REAL",
                            "label": "TEXT", "site": "TEXT", "device": "TEXT", "temperature_f": "REAL"}
    stored_types = all_rows(root, "tele", "SELECT DISTINCT typeof(temperature), typeof(humidity), "
                                          "typeof(meta_battery), typeof(site), typeof(temperature_f) FROM messages")
    assert set(stored_types) == {("real", "integer", "real", "text", "real")}
    labels = all_rows(root, "tele", "SELECT DISTINCT typeof(label) FROM messages")
    assert {t for (t,) in labels} == {"text", "null"}


def test_a_filter_that_raises_on_every_tenth_message_loses_nothing(tmp_path, broker, ns):
    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / "flaky.py").write_text(textwrap.dedent("""
        import json

        def make():
            def flaky(record):
                n = json.loads(record.payload)["n"]
                if n % 10 == 0:
                    raise RuntimeError(f"no luck with {n}")
                record.fields["n"] = n
                return record
            return flaky
    """))
    config = write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs}}
        streams:
          - name: flaky
            topic: "{ns}/#"
            qos: 1
            filters: [flaky]
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        broker.wait_subscribed(f"{ns}-flaky", f"{ns}/#")
        publish(broker.port, [(f"{ns}/d{n % 5}", json.dumps({"n": n}).encode()) for n in range(1, 1001)], qos=1)
        wait_for(lambda: count(root, "flaky", "messages") + count(root, "flaky", "attic_rejects") >= 1000,
                 timeout=20, message="1000 records stored or rejected")
        publish(broker.port, [(f"{ns}/after", json.dumps({"n": n}).encode()) for n in range(1001, 1006)], qos=1)
        wait_for(lambda: count(root, "flaky", "messages") >= 905, timeout=10, message="the stream still running")
        assert attic.proc.poll() is None
    finally:
        code = attic.stop()
    assert code == 0, attic.log_text()

    stored = all_rows(root, "flaky", "SELECT n, CAST(payload AS TEXT) FROM messages")
    assert sorted(n for n, _ in stored) == [n for n in range(1, 1006) if n % 10]
    assert all(json.loads(payload)["n"] == n for n, payload in stored)
    rejects = all_rows(root, "flaky", "SELECT topic, CAST(payload AS TEXT), stage, error FROM attic_rejects")
    assert sorted(rejects, key=lambda r: json.loads(r[1])["n"]) == [
        (f"{ns}/d{n % 5}", json.dumps({"n": n}), "flaky", f"RuntimeError: no luck with {n} (flaky.py:8)")
        for n in range(10, 1001, 10)]
    log = attic.log_text()
    assert log.count("filter flaky raised") == 1, log  # once, not once per record
    assert "Traceback" not in log
