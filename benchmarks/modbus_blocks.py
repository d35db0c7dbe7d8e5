"""Modbus block reads against one request per value: requests per poll and poll lag.

A simulated 50-register device (pymodbus's own TCP server on a free loopback port, in this
process): 25 float32 values in input registers 0-49, like a section of an energy meter.
``attic run`` polls it every second (one stream, unit 1), once with the default plan (one
block: 1 request per poll) and once with ``max_block: 1`` (one request per value: 25). Each
variant runs on two "buses":

- loopback: the server answers at once (what the requests cost Attic and the TCP stack);
- RS-485 9600 baud: the server delays each answer by the time the request and response
  frames take on a 9600 baud line (8N1, 3.5-character gaps) plus 5 ms for the meter to
  answer, one request at a time (``SimulatedMeter(bus_baud=9600)``) — an Eastron meter on its
  default line speed behind a gateway.

Lag is ``ts_us - scheduled_us`` of the rows Attic wrote (the response to the poll's last
request against its whole-second slot), read back from the SQLite files; the first poll of
each run (it also opens the connection) is left out. Requests per poll are counted by the
server. Each variant runs ``rounds`` times with ``polls`` polls each, in its own Attic process
so no two variants share a CPU; lags of all rounds are pooled.

    python -m benchmarks.modbus_blocks [--rounds 3] [--polls 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from attic.mosquitto import free_port
from attic.simulate_modbus import SimulatedMeter
from attic.sources.registers import RegisterSpec
from benchmarks.harness import AtticRun, machine, print_table, sql, wait_rows

VALUES = 25  # float32, two registers each: 50 registers
REGISTERS = tuple(RegisterSpec(f"v{i:02d}", 2 * i, "float32", "input") for i in range(VALUES))
BUSES = {"loopback": None, "RS-485 9600 baud": 9600}
READS = {"block reads": None, "one per value": 1}  # max_block
STREAM = "bench"


def one_run(folder: Path, baud: int | None, plan: str, polls: int) -> dict:
    """One Attic process polling a fresh simulated device ``polls`` + 1 times; its rows' lags and requests."""
    meter = SimulatedMeter("127.0.0.1", free_port(), REGISTERS, units=(1,), changing=False, bus_baud=baud).start()
    try:
        plan_line = f"\n    max_block: {plan}" if plan else ""
        registers = "".join(f"\n      - {{name: {s.name}, address: {s.address}, type: float32, table: input}}"
                            for s in REGISTERS)
        config = folder / "config.yaml"
        config.write_text(f"""storage: {{root: logs}}
report: {{every: 1h}}
streams:
- name: {STREAM}
  every: 1s
  modbus:
    host: 127.0.0.1
    port: {meter.port}
    unit: 1
    timeout: 0.9s{plan_line}
    registers:{registers}
""")
        run = AtticRun(config)
        try:
            wait_rows(folder / "logs", STREAM, polls + 1, timeout=polls + 30)
        finally:
            code = run.stop()
        if code != 0:
            raise SystemExit(f"attic exited with {code}; see {config.with_suffix('.log')}")
        rows = sql(folder / "logs", STREAM, "SELECT ts_us, scheduled_us FROM messages ORDER BY scheduled_us")
        missed = sql(folder / "logs", STREAM, "SELECT count(*) FROM attic_events WHERE kind = 'poll_missed'")
        return {"lags_ms": [(ts - slot) / 1000 for ts, slot in rows[1:]], "polls": len(rows),
                "requests": meter.requests, "missed": sum(n for (n,) in missed)}
    finally:
        meter.stop()


def run(rounds: int = 3, polls: int = 5, progress: bool = False) -> list[dict]:
    """Every bus × read plan, ``rounds`` runs of ``polls`` measured polls each; one dict per variant."""
    results = []
    for bus, baud in BUSES.items():
        for reads, plan in READS.items():
            runs = []
            for i in range(rounds):
                if progress:
                    print(f"  {bus}, {reads}: round {i + 1} of {rounds}", file=sys.stderr, flush=True)
                with tempfile.TemporaryDirectory(prefix="attic-bench-modbus-") as folder:
                    runs.append(one_run(Path(folder), baud, plan, polls))
            lags = sorted(lag for r in runs for lag in r["lags_ms"])
            results.append({
                "bus": bus, "reads": reads, "values": VALUES, "registers": 2 * VALUES,
                "requests_per_poll": sum(r["requests"] for r in runs) / sum(r["polls"] for r in runs),
                "lag_median_ms": statistics.median(lags),
                "lag_p95_ms": statistics.quantiles(lags, n=20, method="inclusive")[-1] if len(lags) > 1 else lags[0],
                "lag_max_ms": lags[-1], "polls": len(lags), "missed": sum(r["missed"] for r in runs),
                "rounds": rounds, "polls_per_run": polls,
            })
    return results


def table(rows: list[dict]) -> tuple[str, list[str], list[list[object]]]:
    """``run()``'s rows as ``print_table`` arguments (title, header, rows)."""
    first = rows[0]
    title = (f"Modbus: {first['values']} float32 values in {first['registers']} registers, polled every 1s, "
             f"{first['rounds']} runs x {first['polls_per_run']} polls per variant ({machine()})")
    header = ["bus", "reads", "requests/poll", "lag median ms", "lag p95 ms", "lag max ms", "polls", "missed"]
    return title, header, [[r["bus"], r["reads"], round(r["requests_per_poll"], 1), r["lag_median_ms"],
                            r["lag_p95_ms"], r["lag_max_ms"], r["polls"], r["missed"]] for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Attic runs per variant (default 3)")
    parser.add_argument("--polls", type=int, default=5, help="measured polls per run (default 5)")
    args = parser.parse_args(argv)
    print_table(*table(run(args.rounds, args.polls, progress=True)))


if __name__ == "__main__":
    main()
