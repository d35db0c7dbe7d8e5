"""Live load: latency from publish to committed, at fixed rates, Mosquitto with default settings.

A publisher subprocess sends QoS 1 messages at a steady rate, each carrying its publish time.
Attic (``attic run``, one stream, QoS 1, ack after commit) writes them. Meanwhile this process
polls the stream's files every ``POLL_S`` (one read-only connection per file, ``max(rowid)``),
so each row's commit time is the first poll that saw it: what a reader of the files sees,
within one poll interval (reported). Latency = that time − the publish time in the payload.
"""

from __future__ import annotations

import argparse
import bisect
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.harness import (
    AtticRun,
    attic_config,
    broker,
    files_of,
    machine,
    median_of,
    print_table,
    wait_rows,
)

HERE = Path(__file__).resolve().parent
POLL_S = 0.002


class Visibility:
    """Polls a stream's files; remembers when each file's max(rowid) first reached each value."""

    def __init__(self, root: Path, stream: str):
        self.root, self.stream = root, stream
        self.samples: dict[Path, tuple[list[int], list[int]]] = {}  # path -> (max rowids, times µs)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conns: dict[Path, sqlite3.Connection] = {}
        last_glob = 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_glob > 0.05:
                last_glob = time.monotonic()
                for path in files_of(self.root, self.stream):
                    if path not in conns:
                        conns[path] = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
                        self.samples[path] = ([], [])
            for path, conn in conns.items():
                try:
                    (top,) = conn.execute("SELECT max(rowid) FROM messages").fetchone()
                except sqlite3.Error:
                    continue  # the file is being created or closed
                now = time.time_ns() // 1000
                rowids, times = self.samples[path]
                if top is not None and (not rowids or top > rowids[-1]):
                    rowids.append(top)
                    times.append(now)
            time.sleep(POLL_S)
        for conn in conns.values():
            conn.close()

    def latencies_ms(self) -> tuple[list[float], list[float]]:
        """(publish → received by Attic, publish → visible in the file) per row, in ms."""
        self.stop.set()
        self.thread.join()
        received, visible = [], []
        for path, (rowids, times) in self.samples.items():
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                for rowid, ts_us, payload in conn.execute("SELECT rowid, ts_us, payload FROM messages"):
                    seen = bisect.bisect_left(rowids, rowid)
                    if seen < len(times):
                        published = int(payload.split()[1])
                        received.append((ts_us - published) / 1000)
                        visible.append((times[seen] - published) / 1000)
            finally:
                conn.close()
        return received, visible


def live(folder: Path, rate: float, seconds: float) -> dict:
    mosquitto = broker(folder / "broker")
    try:
        config = attic_config(folder, mosquitto.port, """
            - name: live
              topic: bench/live/#
              qos: 1
        """)
        run = AtticRun(config)
        try:
            mosquitto.wait_subscribed("attic-", "bench/live/#", 30)  # nothing published is missed
            watch = Visibility(folder / "logs", "live")
            cpu_before, started = run.cpu_s(), time.monotonic()
            out = subprocess.run([sys.executable, str(HERE / "paced_publisher.py"), str(mosquitto.port),
                                  "bench/live/x", str(rate), str(seconds)], capture_output=True, text=True,
                                 check=True)
            count = int(out.stdout)
            wait_rows(folder / "logs", "live", count, timeout=60)
            received, latencies = (sorted(x) for x in watch.latencies_ms())
            cpu_pct = (run.cpu_s() - cpu_before) / (time.monotonic() - started) * 100
        finally:
            code = run.stop()
        if code != 0:
            raise SystemExit(f"attic exited with {code}; see {config.with_suffix('.log')}")
    finally:
        mosquitto.stop()
    if len(latencies) != count:
        raise SystemExit(f"{count} published, {len(latencies)} rows timed")

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))]

    return {"messages": count, "p50": statistics.median(latencies), "p95": pct(latencies, 0.95),
            "p99": pct(latencies, 0.99), "max": latencies[-1], "received_p95": pct(received, 0.95),
            "cpu_pct": cpu_pct}


def measure(rates: list[float], seconds: float, rounds: int) -> dict[float, dict]:
    """Median figures per rate."""
    return {rate: median_of(rounds, lambda f, r=rate: live(f, r, seconds)) for rate in rates}


def table(figures: dict[float, dict], seconds: float, rounds: int) -> tuple[str, list[str], list[list[object]]]:
    rows = [[f"attic, {rate:,.0f} msg/s for {seconds:.0f} s", v["p50"], v["p95"], v["p99"], v["max"],
             v["received_p95"], v["cpu_pct"]] for rate, v in figures.items()]
    return (f"Publish → committed (visible in the files, polled every {POLL_S * 1000:.0f} ms), QoS 1, "
            f"Mosquitto defaults, median of {rounds} ({machine()})",
            ["load", "p50 ms", "p95 ms", "p99 ms", "max ms", "p95 to receipt ms", "attic CPU %"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="1000,5000", help="messages per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    figures = measure([float(r) for r in args.rates.split(",")], args.seconds, args.rounds)
    print_table(*table(figures, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
