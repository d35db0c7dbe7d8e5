"""`attic demo` end to end: with Mosquitto, with amqtt when Mosquitto is not on PATH, and Ctrl-C."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from attic import demo_broker
from attic.config import load_config
from attic.mosquitto import mosquitto_binary
from attic.preflight import preflight
from tests.support import committed_count, query, stream_files, wait_for

STREAMS = ("tele", "everything", "meter")


def start_demo(root: Path, broker: str, seconds: float = 8, path: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, ATTIC_DEMO_BROKER=broker, PATH=path or os.environ["PATH"])
    return subprocess.Popen([sys.executable, "-m", "attic", "demo", "--seconds", str(seconds), "--root", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group, like a terminal's


def processes_with(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (what the demo must not leave behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def columns(logs: Path, stream: str) -> set[str]:
    """The columns of the stream's files that have rows (filters add theirs with the first row)."""
    found = set()
    for path in stream_files(logs, stream):
        if query(path, "SELECT count(*) FROM messages")[0][0]:
            found |= {row[1] for row in query(path, "PRAGMA table_info(messages)")}
    return found


def check_demo_output(root: Path, out: str, err: str) -> None:
    logs = root / "logs"
    for stream in STREAMS:  # the live progress (on stderr; redrawn in place on a terminal)
        assert re.search(rf"^  {stream} +received +\d+ +written +\d+ +rejected +\d+ +files +\d+$", err, re.M), err
    for stream in STREAMS:
        assert committed_count(logs, stream) > 0, (stream, out)
    files = stream_files(logs, "everything")
    last_us = max(query(path, "SELECT max(ts_us) FROM messages")[0][0] or 0 for path in files)
    first_end_us = int(dict(query(files[0], "SELECT key, value FROM attic_meta"))["period_end_us"])
    if last_us >= first_end_us:  # the run crossed a 10 s boundary (most 8 s runs do): rotation shows
        assert len(files) >= 2, files
    assert {"site", "device", "temperature", "humidity", "battery"} <= columns(logs, "tele")  # the filters ran
    assert {"scheduled_us", "l1_voltage"} <= columns(logs, "meter")
    sent = int(re.search(r"^sent (\d+) messages", out, re.M).group(1))
    assert committed_count(logs, "everything") == sent  # every acknowledged message, once
    for text in ("files under", "attic query", "attic.read(", "temperature"):
        assert text in out
    config = load_config(root / "attic-demo.yaml")  # the config it wrote passes `attic check`
    preflight(config)
    assert [s.name for s in config.streams] == list(STREAMS)


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_demo_with_mosquitto(tmp_path):
    root = tmp_path / "demo"
    demo = start_demo(root, "mosquitto")
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, out + err
    assert "broker: mosquitto" in out
    check_demo_output(root, out, err)
    assert not processes_with(str(root)), "a process of the demo is still running"


@pytest.mark.skipif(importlib.util.find_spec("amqtt") is None, reason="the demo extra (amqtt) is not installed")
def test_demo_without_mosquitto_uses_amqtt(tmp_path):
    root = tmp_path / "demo"
    binary = mosquitto_binary()
    folders = os.environ["PATH"].split(os.pathsep)
    path = os.pathsep.join(f for f in folders if not binary or not os.path.exists(os.path.join(f, "mosquitto")))
    demo = start_demo(root, "amqtt", path=path)
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, out + err
    assert "broker: amqtt" in out
    check_demo_output(root, out, err)
    assert "protocol: \"3.1.1\"" in (root / "attic-demo.yaml").read_text()
    port = re.search(r"amqtt \(pure Python\) on 127\.0\.0\.1:(\d+)", out).group(1)
    assert not processes_with(f"attic.demo_broker --port {port}")


@pytest.mark.skipif(importlib.util.find_spec("amqtt") is None, reason="the demo extra (amqtt) is not installed")
def test_without_mosquitto_the_broker_is_amqtt_and_stops_by_its_pid(tmp_path, monkeypatch):
    """What ``auto`` picks on a machine without mosquitto (the run above forces amqtt, as mosquitto is here)."""
    monkeypatch.setattr(demo_broker, "mosquitto_binary", lambda: None)
    monkeypatch.delenv("ATTIC_DEMO_BROKER", raising=False)
    broker = demo_broker.start_broker(tmp_path)
    try:
        assert isinstance(broker, demo_broker.AmqttBroker)
        assert f"listening on 127.0.0.1:{broker.port}" in broker.log.read_text()
    finally:
        broker.stop()
    assert broker.proc.returncode is not None and not processes_with(f"attic.demo_broker --port {broker.port}")


def test_without_any_broker_the_demo_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_broker, "mosquitto_binary", lambda: None)
    monkeypatch.setattr(demo_broker.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"install mosquitto, or the pure-Python one with pip install 'attic\[demo\]'"):
        demo_broker.start_broker(tmp_path, "auto")
    with pytest.raises(RuntimeError, match="ATTIC_DEMO_BROKER=mosquitto but mosquitto is not installed"):
        demo_broker.start_broker(tmp_path, "mosquitto")


def test_ctrl_c_stops_everything_in_order(tmp_path):
    root = tmp_path / "demo"
    demo = start_demo(root, "auto", seconds=60)
    try:
        wait_for(lambda: demo.poll() is not None or committed_count(root / "logs", "everything") > 50, 30,
                 message="the demo writing rows")
        os.killpg(demo.pid, signal.SIGINT)  # what a Ctrl-C in the terminal does: the whole group
        out, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, out + err
    assert f"broker: {'mosquitto' if mosquitto_binary() else 'amqtt'}" in out  # what auto picks
    sent = int(re.search(r"^sent (\d+) messages", out, re.M).group(1))
    assert committed_count(root / "logs", "everything") == sent  # the broker outlived Attic's drain
    for path in stream_files(root / "logs", "everything"):
        assert not os.access(path, os.W_OK) or os.geteuid() == 0  # closed files are read-only
        assert not Path(f"{path}-wal").exists()
    assert not processes_with(str(root)) and not processes_with("attic.demo_broker")
