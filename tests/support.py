"""Test helpers: a private Mosquitto, an `attic run` subprocess, waiting with deadlines, reading files.

Everything started here is stopped by its own PID; nothing talks to the machine's shared broker.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from attic.mosquitto import Mosquitto, free_port, wait_for  # noqa: F401 - re-exported for tests


class AtticProcess:
    """``attic run`` in a subprocess, stopped by its PID."""

    def __init__(self, config: Path, log: Path | None = None, args: tuple[str, ...] = ()):
        self.config = Path(config)
        self.logfile = log or self.config.with_suffix(".log")
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> AtticProcess:
        out = open(self.logfile, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "attic", "run", "-c", str(self.config), *self.args],
                                     stdout=out, stderr=out, cwd=self.config.parent)
        out.close()
        return self

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"attic exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return self.log_text().count(text) >= count
        wait_for(seen, timeout, message=f"{text!r} in attic's log")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"attic did not stop within {timeout}s:\n{self.log_text()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def publish(port: int, messages: list[tuple[str, bytes]], qos: int = 1, seconds: float = 0.0,
            client_id: str = "", retain: bool = False, protocol: int = mqtt.MQTTv5) -> None:
    """Publish ``messages`` (topic, payload), spread over ``seconds``; return once the broker has all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.max_inflight_messages_set(20)  # the broker's receive maximum; Mosquitto drops QoS 2 beyond it
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        started = time.monotonic()
        infos = []
        step = max(1, len(messages) // 100)
        for i, (topic, payload) in enumerate(messages):
            infos.append(client.publish(topic, payload, qos=qos, retain=retain))
            if seconds and i % step == step - 1:  # pacing the load, not waiting for a result
                ahead = started + seconds * (i + 1) / len(messages) - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published(), f"the broker did not take message {info.mid}"
    finally:
        client.disconnect()
        client.loop_stop()


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text))
    return path


def stream_files(root: Path, stream: str) -> list[Path]:
    """Every file of a stream, in time order: ``<start>[.<writer>][.<n>].sqlite``, S before S.2 before S.3."""
    def order(path: Path) -> tuple:
        parts = path.name.split(".")[:-1]
        n = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        return int(parts[0]), n, path.name
    return sorted((Path(root) / stream).glob("*/*.sqlite"), key=order)


def query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one read-only query and close the connection (an open reader keeps a file in WAL mode)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def meta(path: Path) -> dict[str, str]:
    return dict(query(path, "SELECT key, value FROM attic_meta"))


def all_rows(root: Path, stream: str, sql: str = "SELECT ts_us, topic, payload, qos, retain FROM messages") -> list:
    rows = []
    for path in stream_files(root, stream):
        rows.extend(query(path, sql))
    return rows


def committed_count(root: Path, stream: str) -> int:
    """Rows committed so far across the stream's files (readable while Attic writes)."""
    total = 0
    for path in stream_files(root, stream):
        try:
            total += query(path, "SELECT count(*) FROM messages")[0][0]
        except sqlite3.Error:
            pass  # a file being created right now
    return total
