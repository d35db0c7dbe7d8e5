"""How ``attic query`` and ``attic files`` print: an aligned table for people, CSV and JSON lines for
programs, Parquet for pandas, Spark or DuckDB.

Payloads are raw bytes. CSV and JSON give them as text when they are valid UTF-8 (almost every
MQTT payload: JSON, numbers, words); other bytes become ``base64:<data>`` in CSV and
``{"$base64": true, "encoded": "<data>"}`` in JSON (the convention of sqlite-utils), so nothing is
lost. The table shows such bytes with ``\\x`` escapes, and ``ts_us`` as a UTC time under ``ts``.

Rows arrive in batches (a poll of ``--follow``, or chunks of a query) and each batch is printed as
soon as it is formatted, so ``--follow`` output is live; table widths are found from the first
batch and widen later if needed.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from itertools import islice
from typing import Any, TextIO

from attic.catalog import FileInfo

CELL_MAX = 80
FORMATS = ("table", "csv", "json", "parquet")


def utc_text(ts_us: int, time_only: bool = False) -> str:
    """``2026-11-23 10:00:00.123456`` (UTC; no fraction when it is zero)."""
    moment = datetime.fromtimestamp(ts_us // 1_000_000, timezone.utc).replace(microsecond=ts_us % 1_000_000)
    text = moment.strftime("%H:%M:%S" if time_only else "%Y-%m-%d %H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if moment.microsecond else "")


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value).replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text if len(text) <= CELL_MAX else text[: CELL_MAX - 1] + "…"


class Output:
    """Prints batches of rows in one format to ``out``; ``columns`` name the tuple fields (``ts_us`` first)."""

    def __init__(self, columns: list[str], fmt: str, out: TextIO):
        self.columns, self.fmt, self.out = columns, fmt, out
        self.widths: list[int] | None = None
        self.csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writerow(columns)

    def write(self, batch: list[tuple]) -> None:
        if self.fmt == "csv":
            self.csv.writerows([[self._csv(v) for v in row] for row in batch])
        elif self.fmt == "json":
            names = self.columns
            self.out.write("".join(json.dumps(dict(zip(names, map(self._json, row), strict=True)), ensure_ascii=False) + "\n"
                                   for row in batch))
        else:
            self._table(batch)
        self.out.flush()

    @staticmethod
    def _csv(value: Any) -> Any:
        if isinstance(value, bytes):
            text = _text(value)
            return text if text is not None else "base64:" + base64.b64encode(value).decode()
        return value

    @staticmethod
    def _json(value: Any) -> Any:
        if isinstance(value, bytes):
            text = _text(value)
            return text if text is not None else {"$base64": True, "encoded": base64.b64encode(value).decode()}
        return value

    def _table(self, batch: list[tuple]) -> None:
        header = ["ts" if c == "ts_us" else c for c in self.columns]
        cells = [[utc_text(row[0])] + [_cell(v) for v in row[1:]] for row in batch]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
        if self.widths is None:
            self.widths = widths
            self.out.write(_line(header, widths) + _line(["-" * w for w in widths], widths))
        else:
            self.widths = [max(a, b) for a, b in zip(self.widths, widths, strict=True)]
        self.out.write("".join(_line(r, self.widths) for r in cells))


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n"


def chunks(rows: Iterable[tuple], size: int = 1000) -> Iterator[list[tuple]]:
    """Batches of up to ``size`` rows."""
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} TB"  # pragma: no cover


def files_table(infos: list[FileInfo]) -> str:
    """The ``attic files`` listing: one line per file, then the totals."""
    header = ["stream", "day", "file", "start (UTC)", "end", "rows", "size", "state"]
    lines = []
    for f in infos:
        state = ("closed" if f.closed else "open") if f.problem is None else f"unreadable: {f.problem}"
        lines.append([f.stream, f.day, f.path.name, utc_text(f.start_us),
                      "" if f.end_us is None else utc_text(f.end_us, time_only=True),
                      "" if f.rows is None else f"{f.rows:,}", human_size(f.size), state])
    widths = [max([len(h)] + [len(r[i]) for r in lines]) for i, h in enumerate(header)]
    text = _line(header, widths) + "".join(_line(r, widths) for r in lines)
    rows = sum(f.rows or 0 for f in infos)
    opened = sum(1 for f in infos if not f.closed and f.problem is None)
    streams = len({f.stream for f in infos})
    return text + (f"{len(infos)} files in {streams} stream(s), {rows:,} rows, "
                   f"{human_size(sum(f.size for f in infos))}; {opened} open\n")


def write_parquet(frame: Any, path: str) -> None:
    """Write a DataFrame from ``attic.read()`` to Parquet (needs pyarrow: ``pip install 'attic[parquet]'``)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError("--format parquet needs pyarrow: pip install 'attic[parquet]'") from None
    frame.to_parquet(path, index=False)


def print_query(root: str, *, stream: str, since: Any = None, until: Any = None, topic: str | None = None,
                columns: str | None = None, table: str = "messages", limit: int | None = None,
                fmt: str = "table", output: str | None = None, out: TextIO | None = None,
                follow: bool = False, follow_for: float | None = None, poll_s: float = 0.5) -> int:
    """Print the rows of a window (or follow the stream) in ``fmt`` to ``output`` or ``out``; return the row count.

    Raise ValueError for arguments that do not fit together, ReadError when the files lack what
    was asked for, ImportError when pandas or pyarrow is needed and missing.
    """
    if fmt == "parquet":
        if not output or follow:
            raise ValueError("--format parquet writes a file: give --output FILE (and no --follow)")
        from attic.read import read
        frame = read(root, stream=stream, since=since, until=until, topic=topic, columns=columns, table=table)
        frame = frame.head(limit) if limit else frame
        write_parquet(frame, output)
        return len(frame)
    if follow:
        if until is not None:
            raise ValueError("--follow prints new rows as they come: it takes no --until")
        from attic.follow import follow as start
        follower = start(root, stream=stream, since=since, topic=topic, columns=columns, table=table,
                         poll_s=poll_s, seconds=follow_for)
        names, batches = follower.columns, follower.batches()
    else:
        from attic.read import rows
        selection = rows(root, stream=stream, since=since, until=until, topic=topic, columns=columns, table=table)
        names, batches = selection.columns, chunks(selection)
    target = open(output, "w", newline="", encoding="utf-8") if output else out  # noqa: SIM115 - closed below
    try:
        printer = Output(names, fmt, target)
        count = 0
        for batch in batches:
            batch = batch[: limit - count] if limit else batch
            printer.write(batch)
            count += len(batch)
            if limit and count >= limit:
                break
        if count == 0 and fmt == "table":
            printer.write([])
        return count
    finally:
        if output:
            target.close()
