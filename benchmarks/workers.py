"""``workers: 2`` against one worker: draining a QoS 1 backlog through a shared subscription.

Each round: Attic starts once so its session(s) exist and are subscribed, stops, the backlog
is published (Mosquitto queues each message for one member of the share group, online or
not), and Attic starts again and drains it. The rate runs from the first ``connected`` event
to the reception of the last row, over every writer's files; "busiest share" is the largest
fraction of rows one writer stored (0.5 is an even split). "cores busy" is the whole machine's
CPU use while draining (from /proc/stat; 2.0 = both cores of this machine), "broker cores" the
part Mosquitto took: what is left for Attic bounds what a second worker can add.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from pathlib import Path

from benchmarks.harness import (
    AtticRun,
    attic_config,
    broker,
    drain_window_s,
    files_of,
    fill_backlog,
    machine,
    machine_busy,
    median_of,
    print_table,
    process_cpu_s,
    wait_rows,
)

ONE, TWO = "attic, workers: 1", "attic, workers: 2"


def drain(folder: Path, count: int, workers: int) -> dict:
    mosquitto = broker(folder / "broker")
    try:
        config = attic_config(folder, mosquitto.port, f"""
            - name: drain
              topic: bench/workers/#
              qos: 1
              client_id: bench-drain
              workers: {workers}
        """)
        first = AtticRun(config)
        try:  # create the sessions and their subscriptions
            ids = [f"bench-drain-w{n}" for n in range(1, workers + 1)] if workers > 1 else ["bench-drain"]
            for client_id in ids:
                mosquitto.wait_subscribed(client_id, "bench/workers/#" if workers == 1 else
                                          "$share/attic-drain/bench/workers/#", 60)
        finally:
            if first.stop() != 0:
                raise SystemExit(f"attic exited non-zero; see {config.with_suffix('.log')}")
        fill_backlog(mosquitto.port, "bench/workers/x", count)
        restarted_us = time.time_ns() // 1000
        busy_before, broker_before = machine_busy(), process_cpu_s(mosquitto.proc.pid)
        run = AtticRun(config)
        try:
            wait_rows(folder / "logs", "drain", count)
            busy_after, broker_cpu = machine_busy(), process_cpu_s(mosquitto.proc.pid) - broker_before
        finally:
            code = run.stop()
        if code != 0:
            raise SystemExit(f"attic exited with {code}; see {config.with_suffix('.log')}")
        seconds = drain_window_s(folder / "logs", "drain", restarted_us)
        shares = _shares(folder / "logs")
    finally:
        mosquitto.stop()
    cores = os.cpu_count() or 1
    busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1]) * cores
    wall = (busy_after[1] - busy_before[1]) / cores / os.sysconf("SC_CLK_TCK")
    return {"rate": count / seconds, "busiest": max(shares.values()) / count, "busy": busy,
            "broker": broker_cpu / wall}


def _shares(root: Path) -> dict[str, int]:
    """Rows per writer (``w1``, ``w2``; ``-`` for a single writer)."""
    shares: dict[str, int] = {}
    for path in files_of(root, "drain"):
        parts = path.name.split(".")
        writer = parts[1] if len(parts) > 2 and not parts[1].isdigit() else "-"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            shares[writer] = shares.get(writer, 0) + conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            conn.close()
    return shares


def measure(messages: int = 100_000, rounds: int = 3) -> dict[str, dict]:
    return {ONE: median_of(rounds, lambda f: drain(f, messages, 1)),
            TWO: median_of(rounds, lambda f: drain(f, messages, 2))}


def table(figures: dict[str, dict], messages: int, rounds: int) -> tuple[str, list[str], list[list[object]]]:
    one = figures[ONE]["rate"]
    rows = [[name, round(v["rate"]), v["rate"] / one, v["busiest"], v["busy"], v["broker"]]
            for name, v in figures.items()]
    return (f"Drain {messages:,} QoS 1 messages with 1 and 2 worker processes (shared subscription), "
            f"median of {rounds} ({machine()})",
            ["variant", "msg/s", "vs 1 worker", "busiest share", "cores busy", "broker cores"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print_table(*table(measure(args.messages, args.rounds), args.messages, args.rounds))


if __name__ == "__main__":
    main()
