"""Reading the logs back: ``files()``, ``rows()`` (plain tuples) and ``read()`` (a pandas DataFrame).

A window ``[since, until)`` is read from every file of the stream that can hold rows of it (see
``attic.catalog`` for how names decide that), across every writer (``<start>.<writer>.sqlite``)
and collision (``<start>.2.sqlite``) file, and the rows come back in ``ts_us`` order (ties: file
order, then insertion order). Files whose periods do not overlap are simply read one after the
other; overlapping ones (several writers) are merged.

A reader should not hold a live file for long (it delays that file's final close), so each file
is read and let go in turn. ``read()`` fetches each file in storage order into one list and builds
one DataFrame, which costs about what ``pd.read_sql`` costs on a single file holding the same rows
(``benchmarks/read_pandas.py``); where the window covers a whole file, its table is scanned
without the index.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from attic.catalog import (
    DAY_SLACK_US,
    FileInfo,
    ReadError,
    connect,
    day_start_us,
    files,
    inspect,
    named_files,
    schema_columns,
)
from attic.logfile import quote
from attic.window import check_filter, parse_time, topic_matches, topic_sql


class Rows:
    """The rows of a window, as plain tuples in ``ts_us`` order; ``columns`` names their fields."""

    def __init__(self, parts: list[FileInfo], columns: list[str], table: str, since_us: int | None,
                 until_us: int | None, topic: str | None):
        self.parts, self.columns, self.table = parts, columns, table
        self.since_us, self.until_us, self.topic = since_us, until_us, topic
        self.bounded = bounded(table)

    def select(self, info: FileInfo, ordered: bool, extra: Sequence[tuple[str, int]] = ()) -> tuple[str, list]:
        """The SQL for one file: every file gives the same columns (NULL where it lacks one).

        ``extra`` adds ``(condition, parameter)`` pairs (the follower's rowid range).
        """
        have = info.columns.get(self.table, ())
        names = ", ".join(quote(c) if c in have else f"NULL AS {quote(c)}" for c in self.columns)
        conditions, params = [c for c, _ in extra], [p for _, p in extra]
        starts_inside = self.since_us is None or self.since_us <= info.start_us
        ends_inside = self.until_us is None or (info.end_us is not None and info.end_us <= self.until_us)
        whole = starts_inside and ends_inside and self.bounded
        if not whole:  # only where the window cuts the file: a full read scans the table, no index lookups
            if self.since_us is not None:
                conditions.append("ts_us >= ?")
                params.append(self.since_us)
            if self.until_us is not None:
                conditions.append("ts_us < ?")
                params.append(self.until_us)
        if self.topic is not None:
            sql, topic_params, _ = topic_sql(self.topic)
            conditions.append(sql)
            params.extend(topic_params)
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        return f"SELECT {names} FROM {quote(self.table)}{where}" + (" ORDER BY ts_us, rowid" if ordered else ""), params

    def open(self, info: FileInfo, final: bool) -> sqlite3.Connection:
        """A read-only connection to one file, with ``mqtt_match`` when the topic filter needs it."""
        conn = connect(info.path, final)
        if self.topic is not None and topic_sql(self.topic)[2]:
            conn.create_function("mqtt_match", 2, topic_matches, deterministic=True)
        return conn

    def file_rows(self, info: FileInfo, ordered: bool = True) -> Iterator[tuple]:
        """The window's rows of one file; the connection is closed as soon as they are read."""
        conn = self.open(info, info.final)
        try:
            cursor = conn.execute(*self.select(info, ordered))
            while chunk := cursor.fetchmany(20_000):
                yield from chunk
        except sqlite3.Error as exc:
            raise ReadError(f"cannot read {info.path}: {exc}") from exc
        finally:
            conn.close()

    def fetch_all(self) -> list[tuple]:
        """Every row, file after file, each file in storage order (the caller sorts; used by read())."""
        records: list[tuple] = []
        for info in self.parts:
            conn = self.open(info, info.final)
            try:
                records.extend(conn.execute(*self.select(info, ordered=False)).fetchall())
            except sqlite3.Error as exc:
                raise ReadError(f"cannot read {info.path}: {exc}") from exc
            finally:
                conn.close()
        return records

    def __iter__(self) -> Iterator[tuple]:
        if not self.bounded:  # small tables whose rows may sit in a neighbouring file: sort them all
            yield from sorted(self.fetch_all(), key=itemgetter(0))
            return
        # Files whose periods overlap (several writers, collisions) are merged; others follow each other.
        cluster: list[FileInfo] = []
        cluster_end = None
        for info in [*self.parts, None]:
            if info is None or cluster_end is None or info.start_us >= cluster_end:
                if len(cluster) == 1:
                    yield from self.file_rows(cluster[0])
                elif cluster:
                    yield from heapq.merge(*(self.file_rows(f) for f in cluster), key=itemgetter(0))
                cluster, cluster_end = [], None
            if info is not None:
                cluster.append(info)
                end = info.end_us if info.end_us is not None else (day_start_us(info.day) or 0) + DAY_SLACK_US
                cluster_end = end if cluster_end is None else max(cluster_end, end)


def bounded(table: str) -> bool:
    """Are the table's rows inside their file's period? Not for attic_* tables.

    Messages (and tables filters route records to) go to the file of their ``ts_us``. Events, rejects
    and stats are written to the file open when they are committed, usually within seconds of their
    time but possibly later (a commit retried through a storage failure), or before a rotation that
    is due: for them the reader looks ``DAY_SLACK_US`` beyond both edges of the window.
    """
    return not table.startswith("attic_")


def want_columns(parts: Sequence[FileInfo], table: str, columns: Iterable[str] | str | None) -> list[str]:
    present: dict[str, None] = {}
    for info in parts:
        present.update(dict.fromkeys(info.columns.get(table, ())))
    if not present:
        present = dict.fromkeys(schema_columns().get(table, ("ts_us",)))
    if columns is None:
        wanted = list(present)
    else:
        wanted = [c.strip() for c in columns.split(",")] if isinstance(columns, str) else list(columns)
        unknown = [c for c in wanted if c not in present]
        if unknown and parts:
            raise ReadError(f"no column {unknown[0]!r} in table {table} (columns: {', '.join(present)})", "columns")
    return ["ts_us"] + [c for c in dict.fromkeys(wanted) if c != "ts_us"]


def rows(root: str | Path, *, stream: str, since: Any = None, until: Any = None, topic: str | None = None,
         columns: Iterable[str] | str | None = None, table: str = "messages") -> Rows:
    """Given a stream and a window, return its rows as plain tuples in time order (no pandas needed).

    ``since`` is inclusive, ``until`` exclusive (datetimes, ISO strings, ``-1h``, µs integers; naive
    means UTC). ``topic`` is an MQTT filter (``+``, ``#``). ``columns`` picks columns; ``ts_us``
    always comes first. Iterate the result for tuples; ``.columns`` names them. Raise ValueError for
    a bad argument, ReadError when the stream, table or a column is not in the files.
    """
    now = time.time_ns() // 1000
    since_us = None if since is None else parse_time(since, now)
    until_us = None if until is None else parse_time(until, now)
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise ValueError("since must be before until")
    if topic is not None:
        check_filter(topic)
    slack = 0 if bounded(table) else DAY_SLACK_US
    inspected = [inspect(info) for info in named_files(Path(root), stream, since_us and since_us - slack,
                                                       until_us and until_us + slack)]
    for info in inspected:
        if info.problem is not None:
            raise ReadError(f"cannot read {info.path}: {info.problem}")
    parts = [info for info in inspected
             if table in info.columns and (since_us is None or info.end_us is None or info.end_us > since_us
                                           or slack)]
    if inspected and table not in schema_columns() and not any(table in i.columns for i in inspected):
        tables = ", ".join(sorted(set().union(*(i.columns for i in inspected))))
        raise ReadError(f"no table {table!r} in the files of stream {stream} (tables: {tables})", "table")
    wanted = want_columns(parts, table, columns)
    if topic is not None and parts and not any("topic" in i.columns[table] for i in parts):
        raise ReadError(f"table {table} has no topic column", "topic")
    return Rows(parts, wanted, table, since_us, until_us, topic)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def read(root: str | Path, *, stream: str, since: Any = None, until: Any = None, topic: str | None = None,
         columns: Iterable[str] | str | None = None, table: str = "messages", decode: bool = False) -> Any:
    """Given a stream and a window, return its rows as a pandas DataFrame sorted by ``ts_us``.

    Arguments as for ``rows()``. A ``ts`` column (UTC datetimes) comes first; ``decode=True`` turns
    payloads that are valid UTF-8 into ``str`` (others stay ``bytes``). Needs pandas
    (``pip install 'attic[pandas]'``).
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("attic.read() needs pandas: pip install 'attic[pandas]' "
                          "(attic.rows() gives plain tuples without it)") from None
    selection = rows(root, stream=stream, since=since, until=until, topic=topic, columns=columns, table=table)
    # One fetch per file into one list and one DataFrame: the same work as pd.read_sql on one file.
    frame = pd.DataFrame.from_records(selection.fetch_all(), columns=selection.columns)
    if frame.empty:
        frame["ts_us"] = frame["ts_us"].astype("int64")
    elif not frame["ts_us"].is_monotonic_increasing:  # overlapping writers; a stable sort keeps file order
        frame = frame.sort_values("ts_us", kind="stable", ignore_index=True)
    if decode and "payload" in frame.columns:
        frame["payload"] = frame["payload"].map(_decode)
    if "ts" not in frame.columns:
        frame.insert(0, "ts", pd.to_datetime(frame["ts_us"], unit="us", utc=True))
    return frame


__all__ = ["files", "rows", "read", "Rows", "FileInfo", "ReadError"]
