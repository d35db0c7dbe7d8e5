"""Read 1M rows back into pandas: ``attic.read()`` over 24 hourly files against ``pd.read_sql`` on one file.

The same rows (24 h of a stream at ~11.6 msg/s, 40-byte JSON payloads, 100 topics) are written
twice: by the real writer into 24 hourly files (``RotatingStore`` + ``Writer``), and into a
single file with the same schema. Figures are the median of ``rounds`` reads with a warm page
cache, all in the same process run, so the ratio is a same-run comparison. Rows:

- ``pd.read_sql``, 1 file: ``SELECT * FROM messages`` (the baseline: what a user would write);
- ``attic.read``, 24 files: the whole day, with the ``ts`` datetime column and time order;
- the same for a window cutting the first and last file (01:30 to 22:30), against
  ``pd.read_sql`` of that window on the single file (both use the ``ts_us`` index);
- ``attic.rows``, 24 files: plain tuples, no pandas, against ``fetchall`` on the single file.
"""

from __future__ import annotations

import argparse
import queue
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from attic.logfile import LogFile
from attic.periods import US
from attic.store import RotatingStore
from attic.writer import Writer
from benchmarks.harness import machine, print_table

DAY = int(datetime(2031, 1, 1, tzinfo=timezone.utc).timestamp()) * US  # in the future: no file closes by the clock
STREAM = "bench"


def make_rows(count: int, hours: int) -> list[tuple]:
    step = hours * 3600 * US // count
    return [(DAY + i * step, f"site/{i % 10}/dev/{i % 100}", b'{"t": %d.%d, "n": %08d}' % (i % 40, i % 10, i),
             1, 0, 0) for i in range(count)]


def write_rotated(root: Path, records: list[tuple]) -> None:
    """The real writer, hourly files."""
    store = RotatingStore(root, STREAM, 3600, now_us=DAY, meta={"stream": STREAM})
    pending: queue.Queue = queue.Queue()
    writer = Writer(STREAM, store, pending, commit_every_s=1.0, commit_rows=50_000)
    for record in records:
        pending.put(record)
    writer.start()
    if not writer.stop(timeout=600):
        raise RuntimeError("the writer did not finish")


def write_single(path: Path, records: list[tuple]) -> None:
    log = LogFile.create(path, DAY, DAY + 86400 * US, {"stream": STREAM})
    log.write_messages([r[:5] for r in records])
    log.commit()
    log.close(time.time_ns() // 1000, "stop")


def timed(rounds: int, run: Callable[[], int]) -> tuple[float, int]:
    run()  # warm the page cache and imports
    times, count = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        count = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), count


def run(rows: int = 1_000_000, hours: int = 24, rounds: int = 3) -> tuple[str, list[str], list[list[object]]]:
    """Write and read back; return the table (title, header, rows)."""
    import pandas as pd

    import attic

    with tempfile.TemporaryDirectory(prefix="attic-bench-read-") as folder:
        root, single = Path(folder) / "logs", Path(folder) / "single.sqlite"
        records = make_rows(rows, hours)
        started = time.perf_counter()
        write_rotated(root, records)
        wrote_s = time.perf_counter() - started
        write_single(single, records)
        del records
        files = attic.files(root, STREAM)
        since, until = DAY + 5400 * US, DAY + (hours * 3600 - 5400) * US

        def read_sql(sql: str, params: tuple = ()) -> int:
            conn = sqlite3.connect(f"file:{single}?mode=ro", uri=True)
            try:
                return len(pd.read_sql(sql, conn, params=params))
            finally:
                conn.close()

        def fetchall() -> int:
            conn = sqlite3.connect(f"file:{single}?mode=ro", uri=True)
            try:
                return len(conn.execute("SELECT * FROM messages").fetchall())
            finally:
                conn.close()

        window_sql = "SELECT * FROM messages WHERE ts_us >= ? AND ts_us < ?"
        cases = [
            ("pd.read_sql, 1 file", lambda: read_sql("SELECT * FROM messages"), None),
            (f"attic.read, {len(files)} files", lambda: len(attic.read(root, stream=STREAM)), 0),
            ("pd.read_sql window, 1 file", lambda: read_sql(window_sql, (since, until)), None),
            (f"attic.read window, {len(files)} files",
             lambda: len(attic.read(root, stream=STREAM, since=since, until=until)), 2),
            ("fetchall, 1 file", fetchall, None),
            (f"attic.rows, {len(files)} files", lambda: sum(1 for _ in attic.rows(root, stream=STREAM)), 4),
        ]
        results = [timed(rounds, run) for _, run, _ in cases]
        table = []
        for (name, _, baseline), (seconds, count) in zip(cases, results, strict=True):
            ratio = "1.00 (baseline)" if baseline is None else f"{seconds / results[baseline][0]:.2f}"
            table.append([name, count, seconds, int(count / seconds), ratio])
    return (f"Reading {rows:,} rows into pandas ({machine()}; median of {rounds}; "
            f"written by the real writer in {wrote_s:.1f}s)",
            ["read", "rows", "seconds", "rows/s", "time vs baseline"], table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=24, help="one file per hour")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print_table(*run(args.rows, args.hours, args.rounds))


if __name__ == "__main__":
    main()
