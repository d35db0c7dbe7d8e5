"""The files of a stream: which ones a window needs (by their names), and what each holds (its meta).

Names: ``<root>/<stream>/<YYYY-MM-DD>/<start>[.<writer>][.<n>].sqlite``; the part after the start
is a writer id when it is not all digits (``w1``), and a trailing number is a collision suffix.

Which files a window ``[since, until)`` needs, without trusting the rotation length (it may change
between runs, and a clock stepped back makes a run write into a file named before its start):

- A file named S never holds a row before S, so files named ``>= until`` are skipped by name.
- A file never spans two days and its folder names that day in the storage time zone (UTC, local
  or a zone: unknown to a reader), so none of its rows is later than the folder's date + 1 day
  + 14 h (the largest UTC offset). Folders that end before ``since`` are skipped by name.
- The few files left over (at most a day and a half before ``since``) are opened: ``period_end_us``
  from ``attic_meta`` (the writer checks every row against it) drops those that end before
  ``since``. The reader's ``WHERE ts_us`` on the indexed column keeps every read exact anyway.

Closed files (read-only, no ``-wal``) are opened with ``immutable=1``: they never change, so SQLite
takes no locks. Open files are read read-only in WAL mode while Attic writes them (the reader must
be able to write the ``-shm`` file, as the files' owner can).
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from attic.logfile import SCHEMA, quote
from attic.periods import US
from attic.window import parse_time

DAY_SLACK_US = (24 + 14) * 3600 * US  # a day folder's rows end before its date + 1 day + the largest UTC offset


class ReadError(Exception):
    """What was asked for is not in the files (no such stream, table or column); ``option`` names the argument."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@dataclass
class FileInfo:
    """One file of a stream, from its name (and, once inspected, its ``attic_meta``)."""

    path: Path
    stream: str
    day: str
    start_us: int
    writer: str | None
    n: int = 1  # collision suffix: 2 for ``<start>.2.sqlite``
    end_us: int | None = None  # period_end_us
    rows: int | None = None  # rows in messages (counted while the file is open)
    size: int = 0  # bytes, with the -wal file
    closed: bool = False
    closed_by: str | None = None
    problem: str | None = None  # why it could not be read
    columns: dict[str, list[str]] = field(default_factory=dict, repr=False)  # table -> columns

    @property
    def final(self) -> bool:
        """Closed and immutable: read-only and without a -wal file."""
        return not os.stat(self.path).st_mode & 0o222 and not os.path.exists(f"{self.path}-wal")


def connect(path: Path, final: bool = False) -> sqlite3.Connection:
    """A read-only connection; ``final`` (a closed file) adds ``immutable=1``, so no locks are taken."""
    uri = f"file:{urllib.parse.quote(str(Path(path).absolute()))}?mode=ro" + ("&immutable=1" if final else "")
    return sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)


@lru_cache(maxsize=1)
def schema_columns() -> dict[str, tuple[str, ...]]:
    """The columns of every table an Attic file starts with (from the writer's own schema)."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    found = {t: tuple(row[1] for row in conn.execute(f"PRAGMA table_info({quote(t)})")) for t in tables}
    conn.close()
    return found


def _parse_name(path: Path, stream: str, day: str) -> FileInfo | None:
    parts = path.name[: -len(".sqlite")].split(".")
    if not parts[0].isdigit():
        return None
    writer, n = None, 1
    rest = parts[1:]
    if rest and not rest[0].isdigit():
        writer, rest = rest[0], rest[1:]
    if rest:
        if len(rest) > 1 or not rest[0].isdigit():
            return None
        n = int(rest[0])
    return FileInfo(path, stream, day, int(parts[0]) * US, writer, n)


def day_start_us(day: str) -> int | None:
    """Midnight UTC of a day folder's date, in µs (None for a folder that is not a date)."""
    try:
        return (date.fromisoformat(day) - date(1970, 1, 1)) // timedelta(days=1) * 86400 * US
    except ValueError:
        return None


def streams(root: Path) -> list[str]:
    """The stream folders under ``root``."""
    if not Path(root).is_dir():
        raise ReadError(f"no folder {root}", "root")
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def named_files(root: Path, stream: str, since_us: int | None = None, until_us: int | None = None,
                days_from: str = "") -> list[FileInfo]:
    """The files of a stream that may hold rows of ``[since_us, until_us)``, judged by names alone, in order.

    ``days_from`` skips day folders named before it (the follower watches only the newest days).
    """
    folder = Path(root) / stream
    if not folder.is_dir():
        known = ", ".join(streams(root)) or "none"
        raise ReadError(f"no stream {stream!r} under {root} (streams: {known})", "stream")
    found = []
    for day_dir in folder.iterdir():
        day_us = day_start_us(day_dir.name)
        if day_us is None or day_dir.name < days_from or not day_dir.is_dir():
            continue
        if since_us is not None and day_us + DAY_SLACK_US <= since_us:
            continue
        if until_us is not None and day_us - DAY_SLACK_US >= until_us:
            continue
        for path in day_dir.glob("*.sqlite"):
            info = _parse_name(path, stream, day_dir.name)
            if info is not None and (until_us is None or info.start_us < until_us):
                found.append(info)
    found.sort(key=lambda f: (f.start_us, f.writer or "", f.n))
    return found


def inspect(info: FileInfo, count: bool = False) -> FileInfo:
    """Fill in meta, size and table columns from the file; ``count`` counts the rows of an open file."""
    try:
        info.size = os.path.getsize(info.path) + (os.path.getsize(f"{info.path}-wal")
                                                  if os.path.exists(f"{info.path}-wal") else 0)
        conn = connect(info.path, info.final)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            info.columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({quote(t)})")] for t in tables}
            meta = dict(conn.execute("SELECT key, value FROM attic_meta")) if "attic_meta" in tables else {}
            info.closed = "closed_at_us" in meta
            info.closed_by = meta.get("closed_by")
            if meta.get("period_end_us"):
                info.end_us = int(meta["period_end_us"])
            if meta.get("rows") and info.closed:
                info.rows = int(meta["rows"])
            elif count and "messages" in tables:
                info.rows = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            conn.close()
    except (sqlite3.Error, OSError, ValueError) as exc:
        info.problem = str(exc)
    return info


def files(root: str | Path, stream: str | None = None, since: Any = None, until: Any = None) -> list[FileInfo]:
    """Given the storage root (and optionally a stream and a window), return its files with their meta.

    ``rows`` comes from ``attic_meta`` for closed files and is counted for open ones. A file that
    cannot be read is listed with ``problem`` set. Raise ReadError for an unknown stream.
    """
    now = time.time_ns() // 1000
    since_us = None if since is None else parse_time(since, now)
    until_us = None if until is None else parse_time(until, now)
    found = []
    for name in [stream] if stream else streams(Path(root)):
        for info in named_files(Path(root), name, since_us, until_us):
            inspect(info, count=True)
            if since_us is None or info.end_us is None or info.end_us > since_us:
                found.append(info)
    return found
