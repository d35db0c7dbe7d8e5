"""Drain a QoS 1 backlog from a persistent session: Attic against a bare paho subscriber.

Mosquitto runs with its default window (20 unacknowledged messages in flight per client);
only ``max_queued_messages`` is lifted so the backlog is not dropped. Rows:

- bare paho: auto-ack, counts only, stores nothing (the Python ceiling);
- attic: ack after commit (the product);
- attic with paho's per-message acks on receipt (``ATTIC_BENCH_AUTO_ACK``, benchmark only): no
  delivery guarantee; it shows that batched acks after the commit cost less than paho's own;
- attic, window 1: Mosquitto with ``max_inflight_messages 1`` (strict ordering users).

Rates are messages per second from CONNACK (bare) or the ``connected`` event (Attic) to the
last message received; CPU and peak RSS are Attic's own process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import (
    AtticRun,
    attic_config,
    broker,
    create_session,
    drain_window_s,
    fill_backlog,
    machine,
    median_of,
    print_table,
    wait_rows,
)

HERE = Path(__file__).resolve().parent


def bare(folder: Path, count: int) -> dict:
    mosquitto = broker(folder / "broker")
    try:
        create_session(mosquitto.port, "bench-bare", "bench/bare/#")
        fill_backlog(mosquitto.port, "bench/bare/x", count)
        out = subprocess.run([sys.executable, str(HERE / "bare_paho.py"), str(mosquitto.port), "bench-bare",
                              "bench/bare/#", str(count)], capture_output=True, text=True, check=True)
        seconds = float(out.stdout.strip())
    finally:
        mosquitto.stop()
    return {"rate": count / seconds, "cpu_us": 0.0, "rss": 0.0}


def attic(folder: Path, count: int, env: dict | None = None, broker_extra: str = "", filters: str = "") -> dict:
    mosquitto = broker(folder / "broker", broker_extra)
    try:
        config = attic_config(folder, mosquitto.port, f"""
            - name: drain
              topic: bench/attic/#
              qos: 1
              client_id: bench-drain
              {filters}
        """)
        create_session(mosquitto.port, "bench-drain", "bench/attic/#")
        fill_backlog(mosquitto.port, "bench/attic/x", count)
        run = AtticRun(config, env)
        try:
            wait_rows(folder / "logs", "drain", count)
            cpu, rss = run.cpu_s(), run.peak_rss_mb()
        finally:
            code = run.stop()
        if code != 0:
            raise SystemExit(f"attic exited with {code}; see {config.with_suffix('.log')}")
        seconds = drain_window_s(folder / "logs", "drain")
    finally:
        mosquitto.stop()
    return {"rate": count / seconds, "cpu_us": cpu / count * 1e6, "rss": rss}


BARE = "bare paho (auto-ack, counts only)"
ATTIC = "attic (ack after commit)"
FILTERED = "attic + 3 filters"
CHAIN = "filters: [{topic_fields: {levels: {1: kind}}}, {drop: {topic: 'nothing/#'}}, {rename: {fields: {kind: k}}}]"


def measure(messages: int = 100_000, rounds: int = 3, big: int = 0) -> dict[str, dict]:
    """Every variant's median figures, in one run against fresh private brokers."""
    n = messages
    figures = {
        BARE: median_of(rounds, lambda f: bare(f, n)),
        ATTIC: median_of(rounds, lambda f: attic(f, n)),
        "attic, paho's per-message acks (no guarantee)":
            median_of(rounds, lambda f: attic(f, n, {"ATTIC_BENCH_AUTO_ACK": "1"})),
        "attic, broker window of 1 (1/5 of the backlog)":
            median_of(rounds, lambda f: attic(f, n // 5, broker_extra="max_inflight_messages 1\n")),
        FILTERED: median_of(rounds, lambda f: attic(f, n, filters=CHAIN)),
    }
    if big:
        figures[f"attic, {big:,} backlog (1 round)"] = median_of(1, lambda f: attic(f, big))
    return figures


def table(figures: dict[str, dict], messages: int, rounds: int) -> tuple[str, list[str], list[list[object]]]:
    reference = figures[BARE]["rate"]
    rows = [[name, round(v["rate"]), v["rate"] / reference, v["cpu_us"] or "-", v["rss"] or "-"]
            for name, v in figures.items()]
    return (f"Drain a QoS 1 backlog of {messages:,} messages, Mosquitto default window, median of {rounds} "
            f"({machine()})", ["variant", "msg/s", "vs bare", "CPU µs/msg", "peak RSS MB"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", type=int, default=0, help="also drain this many once and report peak RSS")
    args = parser.parse_args(argv)
    print_table(*table(measure(args.messages, args.rounds, args.big), args.messages, args.rounds))


if __name__ == "__main__":
    main()
