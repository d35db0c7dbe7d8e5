"""One Attic SQLite file: its schema, its writes, and how it is closed or recovered.

A file is written in WAL mode so readers (sqlite3, pandas, ``attic query --follow``) can
read while Attic writes. Closing makes it one immutable, self-contained file: commit,
``wal_checkpoint(TRUNCATE)``, ``journal_mode=DELETE``, mode 0444. The ``attic_meta`` row
``closed_at_us`` marks a finished close; a file without it was left open by a crash and is
recovered at the next start.

Only the stream's writer thread touches a LogFile (sqlite3 connections are not shared).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

SCHEMA = """
CREATE TABLE messages (
  ts_us   INTEGER NOT NULL,
  topic   TEXT    NOT NULL,
  payload BLOB,
  qos     INTEGER,
  retain  INTEGER
);
CREATE INDEX messages_ts ON messages(ts_us);
CREATE TABLE attic_meta    (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE attic_rejects (ts_us INTEGER, topic TEXT, payload BLOB, stage TEXT, error TEXT);
CREATE TABLE attic_events  (ts_us INTEGER, kind TEXT, detail TEXT);
CREATE TABLE attic_stats   (ts_us INTEGER, key TEXT, value REAL);
"""
BASE_COLUMNS = ("ts_us", "topic", "payload", "qos", "retain")
INSERT_MESSAGES = "INSERT INTO messages(ts_us, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?)"
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class FileBusy(Exception):
    """The file cannot be closed yet because an outside reader holds it; retry later."""


def quote(name: str) -> str:
    """Quote an SQL identifier (table or column names come from filters and configs)."""
    return '"' + name.replace('"', '""') + '"'


def fold(name: str) -> str:
    """An identifier as SQLite compares it: ASCII letters without case, every other character as is."""
    return name.translate(_ASCII_LOWER)


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is exactly one transaction.
    conn = sqlite3.connect(path, isolation_level=None, timeout=1.0)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (the WAL is in the OS cache); FULL fsyncs each commit.
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class LogFile:
    """An open Attic file for one period: ``[start_us, end_us)``."""

    def __init__(self, path: Path, start_us: int, end_us: int, conn: sqlite3.Connection):
        self.path = path
        self.start_us = start_us
        self.end_us = end_us
        self.conn = conn
        self.rows = 0  # committed rows in messages
        self._pending_rows = 0
        self._columns: dict[str, set[str]] = {}  # folded table -> folded columns, for tables written by insert()
        self.closing = False

    @classmethod
    def create(cls, path: Path, start_us: int, end_us: int, meta: dict[str, object],
               durability: str = "process") -> LogFile:
        """Create a new file with the schema and ``meta`` in attic_meta; it stays open for writing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise FileExistsError(path)
        conn = _connect(path, "FULL" if durability == "power" else "NORMAL")
        log = cls(path, start_us, end_us, conn)
        try:  # schema and meta in one transaction: a crash leaves an empty file or a complete one
            conn.execute("BEGIN")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            log.set_meta(meta)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return log

    # ------------------------------------------------------------------ writes (inside a transaction)

    def _begin(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN")

    def write_messages(self, rows: list[tuple]) -> None:
        """Insert ``(ts_us, topic, payload, qos, retain)`` rows into messages (the fast path)."""
        self._begin()
        self.conn.executemany(INSERT_MESSAGES, rows)
        self._pending_rows += len(rows)

    def ensure_columns(self, table: str, columns: dict[str, str | None]) -> set[str]:
        """Make ``table`` exist with the base columns plus ``columns`` ({name: SQL type}).

        A name whose type is None (a field seen only as NULL so far) gets no column yet: its
        type is not known, and a NULL needs no column. Return the table's columns as SQLite
        compares names (ASCII case folded): ``Temp`` and ``temp`` are one column, and asking to
        add the second would fail the whole commit.
        """
        key = fold(table)
        known = self._columns.get(key)
        if known is None:
            known = {fold(row[1]) for row in self.conn.execute(f"PRAGMA table_info({quote(table)})")}
            if not known:
                self._begin()
                base = "ts_us INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB, qos INTEGER, retain INTEGER"
                self.conn.execute(f"CREATE TABLE {quote(table)} ({base})")
                # indexes share the tables' namespace: attic_* names are reserved for Attic, so
                # no table a filter routes to can collide with this index
                self.conn.execute(f"CREATE INDEX {quote('attic_ts_' + table)} ON {quote(table)}(ts_us)")
                known = set(BASE_COLUMNS)
            self._columns[key] = known
        for name, sql_type in columns.items():
            if sql_type is not None and fold(name) not in known:
                self._begin()
                self.conn.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {sql_type}")
                known.add(fold(name))
        return known

    def insert(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert rows into ``table`` (which must exist with those columns; see ensure_columns)."""
        self._begin()
        names = ", ".join(quote(c) for c in columns)
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})", rows)
        if table == "messages":
            self._pending_rows += len(rows)

    def add_events(self, events: list[tuple[int, str, str]]) -> None:
        self._begin()
        self.conn.executemany("INSERT INTO attic_events(ts_us, kind, detail) VALUES (?, ?, ?)", events)

    def add_rejects(self, rejects: list[tuple]) -> None:
        self._begin()
        self.conn.executemany(
            "INSERT INTO attic_rejects(ts_us, topic, payload, stage, error) VALUES (?, ?, ?, ?, ?)", rejects)

    def add_stats(self, stats: list[tuple[int, str, float]]) -> None:
        self._begin()
        self.conn.executemany("INSERT INTO attic_stats(ts_us, key, value) VALUES (?, ?, ?)", stats)

    def set_meta(self, meta: dict[str, object]) -> None:
        self._begin()
        self.conn.executemany("INSERT OR REPLACE INTO attic_meta(key, value) VALUES (?, ?)",
                              [(k, None if v is None else str(v)) for k, v in meta.items()])

    def commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")
        self.rows += self._pending_rows
        self._pending_rows = 0

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self._pending_rows = 0
        self._columns.clear()  # re-read after a rollback: an ALTER TABLE may have been undone

    # ------------------------------------------------------------------ closing

    def close(self, closed_at_us: int, closed_by: str) -> None:
        """Finish the file: meta, checkpoint, DELETE journal, read-only. Raise FileBusy if a reader blocks it."""
        if not self.closing:
            self.commit()
            self.set_meta({"closed_at_us": closed_at_us, "closed_by": closed_by, "rows": self.rows})
            self.commit()
            self.closing = True
        finish(self.conn, self.path)
        self.conn = None


def finish(conn: sqlite3.Connection, path: Path, wait_ms: int = 0) -> None:
    """Checkpoint, leave WAL mode, close and make read-only. Raise FileBusy if readers block it.

    A reader that has read from the file keeps it in WAL mode until it disconnects. By default
    we do not wait for it (``wait_ms=0``): the writer must not stall while a user has a file
    open in pandas; the store retries later and the next start finishes the job at the latest.
    """
    conn.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise FileBusy(f"{path}: a reader holds the file; closing it later")
    try:
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    except sqlite3.OperationalError as exc:
        raise FileBusy(f"{path}: {exc}; closing it later") from None
    if mode != "delete":
        raise FileBusy(f"{path}: a reader holds the file; closing it later")
    conn.close()
    os.chmod(path, READ_ONLY)


def recover(path: Path, now_us: int, detail: str) -> str:
    """Close a file left open (writable) by an earlier run. Return what was done.

    A file without ``closed_at_us`` was left by a crash: it gets ``closed_by = recovery`` and an
    ``unclean_shutdown`` event. A file with it only missed the last step (a reader held it).
    A file that never got its schema (crash while creating) holds nothing and is removed.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:  # a reader may hold the file; then closing waits for it (FileBusy), its rows are safe either way
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "attic_meta" not in tables:
            if not tables:
                conn.close()
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
                return "removed (empty)"
            raise ValueError(f"{path}: not an Attic file (no attic_meta); move it out of the log folder")
        meta = dict(conn.execute("SELECT key, value FROM attic_meta"))
        outcome = "finished closing"
        if "closed_at_us" not in meta:
            last = conn.execute("SELECT max(ts_us), count(*) FROM messages").fetchone()
            closed_at = last[0] if last[0] is not None else int(meta.get("opened_at_us") or now_us)
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO attic_meta(key, value) VALUES (?, ?)",
                             [("closed_at_us", str(closed_at)), ("closed_by", "recovery"), ("rows", str(last[1]))])
            conn.execute("INSERT INTO attic_events(ts_us, kind, detail) VALUES (?, 'unclean_shutdown', ?)",
                         (now_us, detail))
            conn.execute("COMMIT")
            outcome = f"recovered {last[1]} rows"
        finish(conn, path, wait_ms=1000)
        return outcome
    finally:
        try:
            conn.close()
        except sqlite3.Error:
            pass
