"""Following a stream live (``attic query --follow``): new rows as they are committed, across rotations.

Like ``tail -f``: without ``since`` only rows committed after the follower started come out;
with ``since`` the rows of the window so far come first, then the new ones. Each file is tracked
by the last ``rowid`` read (rows are only ever appended, so rowids grow with commits); a poll
reads ``max(rowid)`` first and then the rows up to it, so a commit landing in between is left for
the next poll instead of being half-seen. New files (rotation, another writer) are found in the
newest two day folders; a file is dropped once it was read after being closed for good. Each
poll's rows are sorted by ``ts_us``, so the output is in time order as far as commits allow.

A follower polls (every ``poll_s``) and holds no connection between polls: an open reader would
keep a file in WAL mode and delay its final close.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from attic.catalog import FileInfo, connect, inspect, named_files
from attic.logfile import quote
from attic.read import Rows, want_columns
from attic.window import check_filter, parse_time


class Follower:
    """Iterate to get new rows as tuples (``columns`` names them); stops on ``stop`` or after ``seconds``."""

    def __init__(self, root: str | Path, *, stream: str, since: Any = None, topic: str | None = None,
                 columns: Iterable[str] | str | None = None, table: str = "messages", poll_s: float = 0.5,
                 seconds: float | None = None, stop: threading.Event | None = None):
        self.root, self.stream, self.table = Path(root), stream, table
        since_us = None if since is None else parse_time(since, time.time_ns() // 1000)
        if topic is not None:
            check_filter(topic)
        self.poll_s = poll_s
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.stop = stop or threading.Event()
        existing = named_files(self.root, stream)  # the baseline is taken now, not at the first next()
        days = sorted({info.day for info in existing})
        self.floor_day = days[-2] if len(days) > 1 else (days[0] if days else "")
        self.last: dict[Path, int] = {}  # file -> last rowid read
        self.infos: dict[Path, FileInfo] = {}
        self.done: set[Path] = set()
        window = set() if since_us is None else {i.path for i in named_files(self.root, stream, since_us)}
        for info in existing:
            if info.path in window:
                inspect(info)
                if info.end_us is None or info.end_us > since_us:
                    self.last[info.path], self.infos[info.path] = 0, info
                    continue
            if info.day >= self.floor_day:
                if since_us is None and not info.final:
                    inspect(info)
                    self.last[info.path], self.infos[info.path] = self._max_rowid(info), info
                else:
                    self.done.add(info.path)
        planned = [i for i in self.infos.values() if table in i.columns]
        self.rows = Rows([], want_columns(planned, table, columns), table, since_us, None, topic)
        self.columns = self.rows.columns

    def _max_rowid(self, info: FileInfo) -> int:
        if self.table not in info.columns:
            return 0
        conn = connect(info.path)
        try:
            return conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {quote(self.table)}").fetchone()[0]
        finally:
            conn.close()

    def _discover(self) -> None:
        for info in named_files(self.root, self.stream, days_from=self.floor_day):
            if info.path not in self.done and info.path not in self.last:
                self.last[info.path], self.infos[info.path] = 0, info

    def _read(self, path: Path) -> list[tuple]:
        """New rows of one file since the last poll; the file is dropped after a read once it is final."""
        info = self.infos[path]
        try:
            final = info.final  # looked at before reading: a file closing right after this read is read again
        except OSError:  # removed (storage.keep)
            self._drop(path)
            return []
        if self.table not in info.columns:
            inspect(info)
            if self.table not in info.columns:  # being created, or never had the table
                if final:
                    self._drop(path)
                return []
        conn = self.rows.open(info, final)
        try:
            top = conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {quote(self.table)}").fetchone()[0]
            have = info.columns[self.table]
            if not set(self.rows.columns) <= set(have):  # a column may have been added since (ALTER TABLE)
                have[:] = [r[1] for r in conn.execute(f"PRAGMA table_info({quote(self.table)})")]
            found = conn.execute(*self.rows.select(info, False, [("rowid > ?", self.last[path]),
                                                                 ("rowid <= ?", top)])).fetchall()
        except sqlite3.OperationalError:  # e.g. locked for a moment while Attic closes the file: next poll
            return []
        finally:
            conn.close()
        self.last[path] = top
        if final:
            self._drop(path)
        return found

    def _drop(self, path: Path) -> None:
        self.done.add(path)
        self.last.pop(path, None)
        self.infos.pop(path, None)

    def poll(self) -> list[tuple]:
        """Read what was committed since the last poll, in ``ts_us`` order."""
        self._discover()
        found: list[tuple] = []
        for path in sorted(self.last, key=lambda p: (self.infos[p].start_us, p.name)):
            found.extend(self._read(path))
        found.sort(key=itemgetter(0))
        return found

    def batches(self) -> Iterator[list[tuple]]:
        """Each poll's new rows (polls that found nothing are skipped), until stopped."""
        while True:
            found = self.poll()
            if found:
                yield found
            wait = self.poll_s
            if self.deadline is not None:
                wait = min(wait, self.deadline - time.monotonic())
                if wait <= 0:
                    return
            if self.stop.wait(wait):
                return

    def __iter__(self) -> Iterator[tuple]:
        for batch in self.batches():
            yield from batch


def follow(root: str | Path, *, stream: str, since: Any = None, topic: str | None = None,
           columns: Iterable[str] | str | None = None, table: str = "messages", poll_s: float = 0.5,
           seconds: float | None = None, stop: threading.Event | None = None) -> Follower:
    """Given a stream, return a Follower: iterate it for rows as they are committed (see the module docstring).

    The starting point is fixed when this returns. Raise ValueError for a bad argument and ReadError
    for an unknown stream.
    """
    return Follower(root, stream=stream, since=since, topic=topic, columns=columns, table=table,
                    poll_s=poll_s, seconds=seconds, stop=stop)
