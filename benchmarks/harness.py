"""Shared pieces of the benchmarks: a private Mosquitto, backlogs, Attic runs, and the table.

Every comparison runs in the same process run against the same broker, so ratios are
same-run figures; each figure is the median of ``rounds`` rounds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from attic.mosquitto import Mosquitto, wait_for

ROOT = Path(__file__).resolve().parent.parent


def broker(folder: Path, extra: str = "") -> Mosquitto:
    """Mosquitto with default settings except the queue limit: a backlog must not be dropped."""
    return Mosquitto(folder, extra="max_queued_messages 0\n" + extra, persistence=False).start()


def fill_backlog(port: int, topic: str, count: int, size: int = 64) -> None:
    """Publish ``count`` QoS 1 messages, each carrying its number, and wait until the broker has all.

    Not ``mosquitto_pub -l``: it exits at end of input before its QoS 1 messages are acknowledged
    and lost two thirds of a 100k backlog here.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(20)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    pad = b"x" * max(0, size - 8)
    for chunk in range(0, count, 30_000):  # paho's message ids wrap at 65535 outstanding messages
        infos = [client.publish(topic, b"%07d %s" % (i, pad), qos=1) for i in range(chunk, min(count, chunk + 30_000))]
        for info in infos:
            info.wait_for_publish(120)
            if not info.is_published():
                raise SystemExit("the broker did not take the whole backlog")
    client.disconnect()
    client.loop_stop()


def create_session(port: int, client_id: str, topic: str) -> None:
    """Subscribe a persistent session and leave, so the broker queues the backlog for it."""
    subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-c",
                    "-i", client_id, "-V", "mqttv5", "-x", "3600", "-W", "1", "-E"], check=False,
                   capture_output=True)


def attic_config(folder: Path, port: int, streams: str, storage: str = "") -> Path:
    path = folder / "config.yaml"
    path.write_text(textwrap.dedent(f"""
        broker: {{host: 127.0.0.1, port: {port}, dropped_topic: null}}
        storage: {{root: logs, rotate: 1h {storage}}}
        report: {{every: 1h}}
        filters_dir: {ROOT / 'filters'}
        streams:
    """) + textwrap.indent(textwrap.dedent(streams), "  "))
    return path


def machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat: diff two to get a load."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class AtticRun:
    """``attic run`` as a subprocess, with its CPU time and peak RSS read from /proc."""

    def __init__(self, config: Path, env: dict | None = None):
        self.config = config
        self.log = open(config.with_suffix(".log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "attic", "run", "-c", str(config)],
                                     cwd=config.parent, stdout=self.log, stderr=self.log,
                                     env={**os.environ, **(env or {})})

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        self.log.close()
        return code


def files_of(root: Path, stream: str) -> list[Path]:
    return sorted((root / stream).glob("*/*.sqlite"))


def count_rows(root: Path, stream: str) -> int:
    total = 0
    for path in files_of(root, stream):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            total += conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        except sqlite3.Error:
            pass
        finally:
            conn.close()
    return total


def sql(root: Path, stream: str, query: str) -> list[tuple]:
    rows: list[tuple] = []
    for path in files_of(root, stream):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows.extend(conn.execute(query).fetchall())
        finally:
            conn.close()
    return rows


def drain_window_s(root: Path, stream: str, since_us: int = 0) -> float:
    """From the stream's first `connected` event after ``since_us`` to the reception of its last row, in seconds."""
    connected = min(ts for (ts,) in sql(root, stream, "SELECT ts_us FROM attic_events WHERE kind='connected'")
                    if ts >= since_us)
    last = max(ts for (ts,) in sql(root, stream, "SELECT max(ts_us) FROM messages") if ts is not None)
    return (last - connected) / 1e6


def wait_rows(root: Path, stream: str, count: int, timeout: float = 300) -> None:
    wait_for(lambda: count_rows(root, stream) >= count, timeout, interval=0.2, message=f"{count} rows")


def median_of(rounds: int, run: Callable[[Path], dict]) -> dict:
    """Run ``run(folder)`` ``rounds`` times in fresh folders; return the median of each figure."""
    results = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="attic-bench-") as folder:
            results.append(run(Path(folder)))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n{title}")
    cells = [header] + [[f"{c:,.2f}" if isinstance(c, float) else f"{c:,}" if isinstance(c, int) else str(c)
                         for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
