"""`attic simulate`: a deterministic fleet, and exactly the announced messages in Attic's files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from attic.simulate import Fleet, parse_rate
from tests.support import AtticProcess, all_rows, committed_count, free_port, wait_for, write_config


def run_fleet(seed, ticks=50, devices=5):
    fleet = Fleet(devices, seed, topic="s/{site}/{device}/{kind}")
    out = fleet.startup(1_000_000)
    for tick in range(ticks):
        out.extend(fleet.tick(2_000_000 + tick * 100_000))
    return out, fleet.counts


def test_the_fleet_is_deterministic_with_a_seed():
    first, counts = run_fleet(7)
    again, _ = run_fleet(7)
    other, _ = run_fleet(8)
    assert first == again
    assert first != other
    assert len(first) == 5 + 5 * 50
    assert counts["startup"] == 5 and counts["heartbeat"] == 5 * 5 and counts["telemetry"] == 5 * 45


def test_the_fleet_sends_plausible_telemetry_and_a_few_bad_payloads():
    messages, counts = run_fleet(1, ticks=400, devices=10)
    kinds = {topic.rsplit("/", 1)[1] for topic, _ in messages}
    assert kinds == {"event", "telemetry", "heartbeat"}
    assert {topic.split("/")[1] for topic, _ in messages} >= {"north", "south"}
    temperatures, bad = [], 0
    for topic, payload in messages:
        try:
            body = json.loads(payload)
            value = body.get("temperature")
        except ValueError:
            bad += 1
            continue
        if topic.endswith("/telemetry") and isinstance(value, float) and -40 <= value <= 85:
            temperatures.append(value)
            assert 0 <= body["humidity"] <= 100 and 3.0 <= body["battery"] <= 4.2
    assert 10 <= min(temperatures) and max(temperatures) <= 32  # drift stays plausible
    assert counts["out_of_range"] > 0 and counts["malformed"] > 0
    assert bad <= counts["malformed"]
    assert (counts["out_of_range"] + counts["malformed"]) / counts["telemetry"] < 0.03


@pytest.mark.parametrize("text, per_second", [("10", 10.0), ("10/s", 10.0), ("30/m", 0.5), ("0.5", 0.5),
                                              ("36/h", 0.01)])
def test_rates(text, per_second):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "fast", "0", "-1/s", "10/d"])
def test_bad_rates(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_simulate_delivers_the_announced_number_of_messages(tmp_path, broker, ns):
    config = write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs, rotate: 1h}}
        streams:
          - name: all
            topic: "{ns}/#"
            qos: 1
    """)
    attic = AtticProcess(config).start()
    try:
        broker.wait_subscribed(f"{ns}-all", f"{ns}/#")
        done = subprocess.run(
            [sys.executable, "-m", "attic", "simulate", "--port", str(broker.port), "--devices", "20",
             "--rate", "25/s", "--seconds", "2", "--seed", "3", "--topic", f"{ns}/{{site}}/{{device}}/{{kind}}"],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        announced = int(re.search(r": (\d+) messages$", done.stdout.splitlines()[0]).group(1))
        assert announced == 20 + 20 * 50
        assert f"sent {announced} of {announced} messages" in done.stdout
        assert "; 0 errors" in done.stdout
        wait_for(lambda: committed_count(tmp_path / "logs", "all") >= announced, 20, message="every message")
    finally:
        assert attic.stop() == 0, attic.log_text()
    rows = all_rows(tmp_path / "logs", "all")
    assert len(rows) == announced  # none lost, none twice
    assert sum(topic.endswith("/event") for _, topic, *_ in rows) == 20


def test_simulate_modbus_serves_a_meter_whose_changing_values_attic_logs(tmp_path):
    port = free_port()
    meter = subprocess.Popen([sys.executable, "-m", "attic", "simulate", "--modbus", "--port", str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert meter.stdout.readline().startswith(f"simulated eastron_sdm630 units 1 on 127.0.0.1:{port}")
        config = write_config(tmp_path, f"""
            storage: {{root: logs}}
            streams:
              - {{name: meter, every: 1s, modbus: {{host: 127.0.0.1, port: {port}, device: eastron_sdm630}}}}
        """)
        attic = AtticProcess(config).start()
        try:
            wait_for(lambda: committed_count(tmp_path / "logs", "meter") >= 3, 15, message="three polls")
        finally:
            assert attic.stop() == 0, attic.log_text()
    finally:
        meter.send_signal(signal.SIGTERM)
        out, err = meter.communicate(timeout=15)
    assert meter.returncode == 0, out + err
    rows = all_rows(tmp_path / "logs", "meter", "SELECT topic, scheduled_us, l1_voltage, frequency FROM messages")
    assert len(rows) >= 3 and {row[0] for row in rows} == {"modbus/meter/1"}
    assert all(row[1] % 1_000_000 == 0 for row in rows)  # polled on whole seconds
    assert all(220 < row[2] < 240 and 49.9 < row[3] < 50.1 for row in rows)  # plausible
    assert len({row[2] for row in rows}) >= 2  # and changing (every second, at the half second)
