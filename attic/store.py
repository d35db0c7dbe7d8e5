"""RotatingStore: which file a record goes to, and opening, rotating, closing and recovering files.

Layout: ``<root>/<stream>/<YYYY-MM-DD>/<start>[.<writer>][.<n>].sqlite``. A file named S holds
exactly the records whose ``ts_us`` falls in ``[S, end of its period)``: the first file of a
run is named by the run's start, later ones by their aligned period start. The rare second
file for one start second (a restart right on a boundary, a clock stepped back) gets ``.<n>``.

The store never decides *when* to commit: the writer does (group commit), so that acks follow
commits. Only the writer thread calls a store.

Retention (``storage.keep``) deletes whole day folders whose day ended more than ``keep`` ago,
checked at start and after each rotation: deleting files is only safe on the thread that owns them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path

from attic.durations import format_duration
from attic.logfile import FileBusy, LogFile, recover
from attic.periods import US, Period, period_of

log = logging.getLogger("attic.store")
DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
LATE_US = 250_000  # an idle writer closes a file this long after its period (see tick)


class StoreLocked(Exception):
    """Another Attic process writes this stream's folder."""


def storage_tz(name: str) -> tzinfo | None:
    """Given ``storage.timezone``, return the tzinfo for day folders (None means the local zone)."""
    if name == "utc":
        from datetime import timezone
        return timezone.utc
    if name == "local":
        return None
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def days_past_keep(days: Iterable[str], now_us: int, keep_s: float, tz: tzinfo | None) -> list[str]:
    """Given day folder names (``YYYY-MM-DD``; others are ignored), return, sorted, those whose whole
    day (in ``tz``; None = local) ended at least ``keep_s`` before ``now_us``.

    A day that still holds a moment younger than ``keep`` is kept whole: retention never cuts a day.
    """
    cutoff_us = now_us - int(keep_s * US)
    past = []
    for name in days:
        if not DAY_FOLDER.match(name):
            continue
        try:
            following = date.fromisoformat(name) + timedelta(days=1)
        except ValueError:
            continue
        if int(datetime(following.year, following.month, following.day, tzinfo=tz).timestamp()) * US <= cutoff_us:
            past.append(name)
    return sorted(past)


class RotatingStore:
    """The files of one stream (and one writer of it)."""

    def __init__(self, root: Path, stream: str, rotate_s: float, timezone: str = "utc",
                 durability: str = "process", meta: dict[str, object] | None = None,
                 writer_id: str | None = None, now_us: int | None = None, keep_s: float | None = None):
        self.folder = Path(root) / stream
        self.stream = stream
        self.rotate_us = int(rotate_s * US)
        self.tz = storage_tz(timezone)
        self.durability = durability
        self.meta = dict(meta or {})
        self.writer_id = writer_id
        self.run_start_us = now_us if now_us is not None else time.time_ns() // 1000
        self.current: LogFile | None = None
        self.closing: list[LogFile] = []  # closed for writing, waiting for a reader to let go
        self.unfinished: list[Path] = []  # recovered files a reader kept in WAL mode; retried by tick()
        self._lock_fd: int | None = None
        self.keep_s = keep_s
        self.on_event: Callable[[str, str], None] | None = None  # (kind, detail) → attic_events
        self._retention_due = keep_s is not None

    # ------------------------------------------------------------------ start

    def lock(self) -> None:
        """Take the stream folder's lock so two Attic processes never write the same files."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f".lock.{self.writer_id}" if self.writer_id else ".lock"
        fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreLocked(f"{self.folder} is being written by pid {holder}; stop that Attic first, "
                              "or give this stream another name or storage.root") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def own_files(self) -> Iterator[Path]:
        """Every file of this stream written by this writer (by name), in no particular order."""
        for path in self.folder.glob("*/*.sqlite"):
            parts = path.name.split(".")
            writer = parts[1] if len(parts) > 2 and not parts[1].isdigit() else None
            if writer == self.writer_id:
                yield path

    def recover(self, now_us: int) -> list[tuple[Path, str]]:
        """Close every file of this writer that an earlier run left open. Return (path, outcome) pairs.

        Closed files are read-only, so only writable ones are opened: a start after months of
        logs costs one stat per file.
        """
        done = []
        for path in sorted(self.own_files()):
            if os.stat(path).st_mode & 0o222:
                try:
                    outcome = recover(path, now_us, f"left open by an earlier run; recovered by run "
                                                    f"{self.meta.get('run_id')}")
                except FileBusy as exc:  # its rows are safe; a reader only keeps it in WAL mode for now
                    outcome = f"recovered, but {exc}"
                    self.unfinished.append(path)
                done.append((path, outcome))
        return done

    # ------------------------------------------------------------------ files

    def period(self, ts_us: int) -> Period:
        return period_of(ts_us, self.rotate_us, self.tz)

    def file_for(self, ts_us: int) -> LogFile:
        """The open file whose period holds ``ts_us``, rotating to a new one if needed."""
        current = self.current
        if current is not None and current.start_us <= ts_us < current.end_us:
            return current
        period = self.period(ts_us)
        if current is not None:
            self.current = None
            self._close(current, ts_us, "rotation")
            self._retention_due = self.keep_s is not None
        self.current = self._open(period, ts_us)
        return self.current

    def _open(self, period: Period, ts_us: int) -> LogFile:
        # The first file of a run is named by the run's start (a file never claims time before
        # its run began); a timestamp before the run start (clock stepped back) uses the period.
        start_us = max(period.start_us, self.run_start_us) if ts_us >= self.run_start_us else period.start_us
        start_s = start_us // US
        folder = self.folder / period.day
        base = f"{start_s}.{self.writer_id}" if self.writer_id else str(start_s)
        path = folder / f"{base}.sqlite"
        n = 1
        while path.exists():
            n += 1
            path = folder / f"{base}.{n}.sqlite"
        meta = dict(self.meta, opened_at_us=time.time_ns() // 1000, period_start_us=start_s * US,
                    period_end_us=period.end_us)
        log.debug("stream %s: opening %s", self.stream, path)
        return LogFile.create(path, start_s * US, period.end_us, meta, self.durability)

    def split(self, rows: list[tuple]) -> Iterator[list[tuple]]:
        """Split rows (``ts_us`` first, in arrival order) into runs that share one period."""
        current = self.current
        if current is not None and current.start_us <= rows[0][0] < current.end_us \
                and current.start_us <= rows[-1][0] < current.end_us:
            yield rows  # the common case: the whole batch fits the open file
            return
        chunk: list[tuple] = []
        bounds: tuple[int, int] | None = None
        for row in rows:
            ts = row[0]
            if bounds is None or not bounds[0] <= ts < bounds[1]:
                if chunk:
                    yield chunk
                    chunk = []
                period = self.period(ts)
                bounds = (period.start_us, period.end_us)
            chunk.append(row)
        if chunk:
            yield chunk

    def _close(self, file: LogFile, now_us: int, closed_by: str) -> None:
        try:
            file.close(now_us, closed_by)
            log.debug("stream %s: closed %s (%d rows, %s)", self.stream, file.path, file.rows, closed_by)
        except FileBusy as exc:
            log.warning("stream %s: %s", self.stream, exc)
            self.closing.append(file)
        except (sqlite3.Error, OSError) as exc:  # e.g. disk full while checkpointing: retried by tick()
            log.error("stream %s: cannot close %s yet (%s); retrying", self.stream, file.path, exc)
            self.closing.append(file)

    def tick(self, now_us: int, idle: bool = True) -> None:
        """Close the open file once its period is over; retry files a reader kept from closing.

        The open file is closed by the clock only when the writer is ``idle`` (its queue empty) and
        ``LATE_US`` after its period ended: a record stamped just before the end may still be on its
        way, and closing first would give it a second file of the same period (``<start>.2``). A busy
        stream rotates anyway, on the first record of the next period (``file_for``).
        """
        if self.current is not None and idle and now_us >= self.current.end_us + LATE_US:
            current, self.current = self.current, None
            self._close(current, now_us, "rotation")
            self._retention_due = self.keep_s is not None
        if self._retention_due:
            self._retention_due = False
            self.apply_retention(now_us)
        for file in list(self.closing):
            try:
                file.close(now_us, "rotation")
                self.closing.remove(file)
                log.info("stream %s: closed %s", self.stream, file.path)
            except (FileBusy, sqlite3.Error, OSError):
                pass
        for path in list(self.unfinished):
            try:
                recover(path, now_us, "left open by an earlier run")
                self.unfinished.remove(path)
            except (FileBusy, sqlite3.Error, OSError):
                pass

    def apply_retention(self, now_us: int) -> list[str]:
        """Delete this stream's day folders past ``keep`` (never one holding a file in use); return them."""
        if self.keep_s is None:
            return []
        in_use = {f.path.parent.name for f in [self.current, *self.closing] if f is not None}
        in_use.update(path.parent.name for path in self.unfinished)
        try:
            names = [p.name for p in self.folder.iterdir() if p.is_dir()]
        except OSError as exc:
            log.error("stream %s: retention: cannot list %s (%s)", self.stream, self.folder, exc)
            return []
        deleted = []
        for day in days_past_keep(names, now_us, self.keep_s, self.tz):
            if day in in_use:
                continue
            try:
                shutil.rmtree(self.folder / day)
                deleted.append(day)
            except FileNotFoundError:
                pass  # another writer of this stream deleted it first
            except OSError as exc:
                log.error("stream %s: retention: cannot delete %s (%s); trying again at the next rotation",
                          self.stream, self.folder / day, exc)
        if deleted:
            days = ", ".join(deleted) if len(deleted) <= 5 else f"{deleted[0]} .. {deleted[-1]}"
            detail = f"deleted {len(deleted)} day folder(s) older than {format_duration(self.keep_s)}: {days}"
            log.info("stream %s: retention: %s", self.stream, detail)
            if self.on_event is not None:
                self.on_event("retention", detail)
        return deleted

    def next_deadline_us(self) -> int | None:
        """When tick() next has work to do (end of the open file's period), or None."""
        if self.closing or self.unfinished:
            return time.time_ns() // 1000 + 5 * US
        return self.current.end_us + LATE_US if self.current is not None else None

    def commit(self) -> None:
        if self.current is not None:
            self.current.commit()

    def rollback(self) -> None:
        if self.current is not None:
            self.current.rollback()

    def close(self, now_us: int, closed_by: str = "stop") -> None:
        """Commit and close every file. Files a reader still holds are finished by the next start."""
        if self.current is not None:
            current, self.current = self.current, None
            self._close(current, now_us, closed_by)
        for file in self.closing:
            try:
                file.close(now_us, closed_by)
            except (FileBusy, sqlite3.Error, OSError) as exc:
                log.warning("stream %s: cannot close %s (%s); the next start finishes closing it",
                            self.stream, file.path, exc)
                file.conn.close()
        self.closing = []
