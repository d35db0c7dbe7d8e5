"""FilterChain: a stream's filters, run in order over each record of a batch on the writer thread.

Nothing a filter does may stop the stream or lose a record without a trace. A filter that
raises sends the record — its raw topic and payload as received — to ``attic_rejects`` with
the filter's name as ``stage`` and the exception as ``error``; the next record goes on. A
filter that returns None drops the record on purpose: that is counted (``filtered``), not
lost. Records that come out of the chain are checked before they reach SQLite (``stage`` =
``store``): a value SQLite cannot bind, a field named like a base column or a reserved table
would otherwise fail the whole batch's commit and be retried for ever.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attic.record import Record, Reject

log = logging.getLogger("attic.filters")

BASE_COLUMNS = ("ts_us", "topic", "payload", "qos", "retain")
SQL_TYPES = ("INTEGER", "REAL", "TEXT", "BLOB")
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NAMES_CACHE = 4096


class Rejected(Exception):
    """Raise this from a filter to send the record to ``attic_rejects`` on purpose.

    Its message is stored as the ``error`` as it stands (other exceptions get their type and the
    file and line they came from).
    """


def fold(name: str) -> str:
    """The name as SQLite compares identifiers: ASCII letters case-insensitive, nothing else."""
    return name.translate(_ASCII_LOWER)


def where(exc: BaseException, filename: str | None = None) -> str:
    """Given an exception, return `` (file.py:line)``, or ``""`` without a traceback.

    The line is the last one in ``filename`` (the filter's own file) when the traceback passes
    through it, so an error raised deep inside ``json`` still points at the filter's line.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    own = [f for f in frames if f.filename == filename] if filename else []
    frame = own[-1] if own else frames[-1]
    return f" ({Path(frame.filename).name}:{frame.lineno})"


def error_text(exc: BaseException, filename: str | None = None) -> str:
    """The ``error`` column for a record a filter (defined in ``filename``) raised on."""
    if isinstance(exc, Rejected):
        return str(exc)
    return f"{type(exc).__name__}: {exc}{where(exc, filename)}"


def names_problem(names: tuple) -> str | None:
    """Given a record's field names, return why they cannot all be columns, or None."""
    seen: dict[str, str] = {}
    for name in names:
        if type(name) is not str or not name or "\0" in name:
            return f"field name {name!r} must be non-empty text"
        folded = fold(name)
        if folded in BASE_COLUMNS:
            return f"field {name!r} would overwrite the column {folded}; rename it"
        if folded in seen:
            return f"fields {seen[folded]!r} and {name!r} are one column to SQLite (it ignores case); rename one"
        seen[folded] = name
    return None


def table_problem(table: object) -> str | None:
    """Given ``record.table``, return why Attic cannot write there, or None."""
    if type(table) is not str or not table or "\0" in table:
        return f"table {table!r} must be non-empty text"
    folded = fold(table)
    if folded.startswith(("attic_", "sqlite_")) or folded == "messages_ts":
        return f"table {table!r} is reserved (attic_*, sqlite_*, messages_ts); route to another name"
    return None


def value_problem(name: str, value: object) -> str | None:
    """Given a field value, return why SQLite cannot store it, or None."""
    if isinstance(value, int):  # bool too
        if INT_MIN <= value <= INT_MAX:
            return None
        return f"field {name!r}: {value} does not fit a 64-bit integer; make it a float or text"
    if isinstance(value, (float, str, bytes, bytearray, memoryview)):
        return None
    return (f"field {name!r}: cannot store a {type(value).__name__} ({value!r:.60}); "
            "make it a number, text or bytes (json.dumps for structures)")


class FilterChain:
    """The loaded filters of one stream; ``process`` runs on the writer thread only."""

    def __init__(self, steps: list[tuple[str, str, Callable[[Any], Any]]]):
        self.steps = steps  # (name, place, function) in config order
        self.names = [name for name, _, _ in steps]
        self.filtered = 0  # records dropped on purpose (a filter returned None or [])
        self.filtered_by: dict[str, int] = dict.fromkeys(self.names, 0)
        self.last_drop: str | None = None  # the filter that dropped the latest record (for `attic try`)
        self._logged: set[str] = set()
        self._names_ok: dict[tuple, str | None] = {}
        self._tables_ok: set[str] = {"messages"}

    def process(self, batch: list) -> tuple[list[Record], list[Reject]]:
        """Given queue items (MQTT tuples or Records), return (records to store, rejects)."""
        records: list[Record] = []
        rejects: list[Reject] = []
        steps = self.steps
        for item in batch:
            if type(item) is tuple:
                ts, topic, payload = item[0], item[1], item[2]
                current = [Record(ts, topic, payload, item[3], item[4])]
            else:
                ts, topic, payload = item.ts_us, item.topic, item.payload
                if payload is None and item.fields:  # a Modbus row: a reject keeps its values, as JSON
                    payload = json.dumps(item.fields, default=str).encode()
                current = [item]
            for name, place, fn in steps:
                following: list[Record] = []
                for record in current:
                    try:
                        result = fn(record)
                    except Exception as exc:  # noqa: BLE001 - any filter bug becomes a reject, never a stop
                        rejects.append(Reject(ts, topic, payload, name, self._error(name, place, fn, exc, topic)))
                        continue
                    if isinstance(result, Record):
                        following.append(result)
                    elif result is None or (isinstance(result, list) and not result):
                        self.filtered += 1
                        self.filtered_by[name] += 1
                        self.last_drop = name
                    elif isinstance(result, list) and all(isinstance(r, Record) for r in result):
                        following.extend(result)
                    else:
                        rejects.append(Reject(ts, topic, payload, name, f"returned {result!r:.80}; a filter "
                                              "returns a record, None or a list of records"))
                current = following
                if not current:
                    break
            for record in current:
                problem = self._check(record, ts)
                if problem is None:
                    records.append(record)
                else:
                    rejects.append(Reject(ts, topic, payload, "store", problem))
        return records, rejects

    def _error(self, name: str, place: str, fn: Callable[[Any], Any], exc: Exception, topic: str) -> str:
        text = error_text(exc, getattr(getattr(fn, "__code__", None), "co_filename", None))
        if place not in self._logged and not isinstance(exc, Rejected):
            self._logged.add(place)  # once per filter: a broken drop-in must not flood the journal
            log.warning("%s: filter %s raised on topic %r: %s; such records go to attic_rejects "
                        "(stage %s); logged once", place, name, topic, text, name)
        return text

    def _check(self, record: Record, ts: int) -> str | None:
        """Return why ``record`` cannot be written as it stands, or None (normalises declared types)."""
        if record.ts_us != ts or type(record.ts_us) is not int:
            return ("a filter changed ts_us (the reception time decides the file); "
                    "keep other times in a field (see device_time)")
        if type(record.topic) is not str:
            return f"topic must be text, got {record.topic!r:.60}"
        if record.payload is not None and not isinstance(record.payload, (bytes, bytearray, memoryview)):
            return f"payload must be bytes or None, got {type(record.payload).__name__}"
        table = record.table
        if table not in self._tables_ok:
            problem = table_problem(table)
            if problem:
                return problem
            if fold(table) == "messages":
                record.table = "messages"
            else:
                self._tables_ok.add(table)
        fields = record.fields
        if type(fields) is not dict:
            return f"fields must be a dict, got {type(fields).__name__}"
        if fields:
            names = tuple(fields)
            problem = self._names_ok.get(names, "")
            if problem == "":
                problem = names_problem(names)
                if len(self._names_ok) >= _NAMES_CACHE:
                    self._names_ok.clear()
                self._names_ok[names] = problem
            if problem:
                return problem
            for name, value in fields.items():
                if value is not None and type(value) is not float and type(value) is not str:
                    problem = value_problem(name, value)
                    if problem:
                        return problem
        if record.types:
            for name, sql_type in record.types.items():
                if sql_type not in SQL_TYPES:
                    upper = sql_type.upper() if isinstance(sql_type, str) else None
                    if upper not in SQL_TYPES:
                        return f"field {name!r}: type {sql_type!r} is not one of integer, real, text, blob"
                    record.types[name] = upper
        return None

    def close(self) -> None:
        """Call each filter's optional ``close()`` (at stop or reload), logging failures."""
        for name, place, fn in self.steps:
            close = getattr(fn, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing one filter must not keep the others open
                    log.exception("%s: closing filter %s failed", place, name)
