"""Every benchmark in one command: ``python -m benchmarks`` (``--quick`` for a smoke run).

Each part starts its own private Mosquitto (default settings but for an unlimited queue, so a
backlog is kept) or pymodbus server, prints its own table, and the run ends with one summary
table of the targets of issue 10 with the figures measured in this run. Figures are medians
of ``--rounds`` rounds; ratios compare variants measured in the same run.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import drain, latency, modbus_blocks, read_pandas, workers
from benchmarks.harness import machine, print_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100_000, help="backlog to drain")
    parser.add_argument("--big", type=int, default=1_000_000, help="backlog for the peak-RSS drain")
    parser.add_argument("--workers-messages", type=int, default=200_000,
                        help="backlog for workers 1 vs 2 (large, so that starting the processes does not count)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each live-load run")
    parser.add_argument("--rates", default="1000,5000", help="live-load rates, messages per second")
    parser.add_argument("--quick", action="store_true", help="small figures, one round: checks the benchmarks run")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.messages, args.big, args.seconds, args.rates = 1, 10_000, 0, 3.0, "1000"
        args.workers_messages = 10_000
    started = time.monotonic()
    rates = [float(r) for r in args.rates.split(",")]

    drained = drain.measure(args.messages, args.rounds, args.big)
    print_table(*drain.table(drained, args.messages, args.rounds))
    live = latency.measure(rates, args.seconds, args.rounds)
    print_table(*latency.table(live, args.seconds, args.rounds))
    scaled = workers.measure(args.workers_messages, args.rounds)
    print_table(*workers.table(scaled, args.workers_messages, args.rounds))
    print_table(*modbus_blocks.table(modbus_blocks.run(rounds=args.rounds)))
    print_table(*read_pandas.run(rows=100_000 if args.quick else 1_000_000, rounds=args.rounds))

    bare, attic, filtered = (drained[k]["rate"] for k in (drain.BARE, drain.ATTIC, drain.FILTERED))
    one, two = (scaled[k]["rate"] for k in (workers.ONE, workers.TWO))
    top = max(rates)
    rows = [
        [f"drain {args.messages:,}: attic / bare paho", attic / bare, "≥ 1.00", attic / bare >= 1.0],
        [f"drain {args.messages:,}: attic + 3 filters / bare paho", filtered / bare, "-", "-"],
        [f"live {top:,.0f} msg/s: p95 publish → committed, ms", live[top]["p95"], "≤ 100", live[top]["p95"] <= 100],
        ["attic CPU per message, µs (drain)", drained[drain.ATTIC]["cpu_us"], "-", "-"],
        ["attic peak RSS, MB (drain)", drained[drain.ATTIC]["rss"], "-", "-"],
        [f"workers 2 / workers 1 (drain {args.workers_messages:,})", two / one, "≥ 1.50", two / one >= 1.5],
    ]
    if args.big:
        big = drained[f"attic, {args.big:,} backlog (1 round)"]["rss"]
        rows.append([f"attic peak RSS draining {args.big:,}, MB", big, "< 150", big < 150])
    print_table(f"Summary ({machine()}, median of {args.rounds}, {time.monotonic() - started:.0f} s in all)",
                ["target", "measured", "target", "met"], [[a, b, c, str(d)] for a, b, c, d in rows])


if __name__ == "__main__":
    main()
