"""The writer thread of one stream: queue → filters → batch → SQLite commit → acks.

One thread owns the stream's files; everything it must do arrives on its queue: records
(plain tuples from MQTT, Records from Modbus), and a few control objects (stop, sync, wake).

Group commit: the writer commits as soon as the queue runs dry, or at ``commit_rows``, or
after ``commit_every`` at the latest. Brokers allow only a small window of unacknowledged
QoS 1 messages per client (Mosquitto: 20), and Attic acks only after the commit that holds a
message, so a writer that waited on a timer would stall the broker at ~20 messages per tick.

Storage failures (disk full, read-only, a locked file) never drop records: the batch stays
in hand, nothing is acked, the queue fills up and the network thread waits (the broker then
holds the rest), and the writer retries with backoff until the write goes through.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from attic.logfile import fold
from attic.record import Record, Reject
from attic.store import RotatingStore

log = logging.getLogger("attic.writer")

US = 1_000_000
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0


class Control:
    """A task for the writer that is not a record."""


class Stop(Control):
    """Commit everything before this, close the files and end the thread."""


class Wake(Control):
    """Nothing to do but look at the event queue (sent with events, dropped when the queue is full)."""


class Sync(Control):
    """Set ``done`` once everything queued before this is committed (tests, reload, `try`)."""

    def __init__(self) -> None:
        self.done = threading.Event()


class Call(Control):
    """Run ``fn(writer)`` on the writer thread (for reports that must write attic_stats)."""

    def __init__(self, fn: Callable[[Writer], Any]):
        self.fn = fn


def sql_type(value: object) -> str:
    """The SQLite column type for a field first seen with this value."""
    if isinstance(value, (bool, int)):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "BLOB"
    return "TEXT"


def _ts(item: Any) -> int:
    return item[0] if type(item) is tuple else item.ts_us


class WriterStats:
    """Counters only the writer thread changes; others read them (int reads are atomic)."""

    def __init__(self) -> None:
        self.written = 0        # rows committed (all tables but attic_*)
        self.rejected = 0       # rows committed to attic_rejects
        self.left = 0           # records still queued at a hurried stop (QoS >= 1: the broker redelivers)
        self.commits = 0
        self.storage_failures = 0
        self.commit_us: list[int] = []  # latency of each commit since the last report; the reporter swaps it


class Writer:
    """Writes one stream's queue into its RotatingStore."""

    def __init__(self, name: str, store: RotatingStore, records: queue.Queue, *, commit_every_s: float,
                 commit_rows: int, ack: Callable[[list[int]], None] | None = None,
                 chain: Any = None, on_stop: Callable[[Writer], None] | None = None):
        self.name = name
        self.store = store
        self.queue = records
        self.commit_every_s = commit_every_s
        self.commit_rows = commit_rows
        self.ack = ack
        self.chain = chain  # attic.filters.FilterChain or None
        self.on_stop = on_stop
        self.stats = WriterStats()
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.failed: BaseException | None = None
        self._hurry = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"attic-writer-{name}")

    # ------------------------------------------------------------------ API for other threads

    def start(self) -> None:
        self._thread.start()

    def event(self, kind: str, detail: str, ts_us: int | None = None) -> None:
        """Record an ``attic_events`` row (thread-safe; written with the next commit)."""
        self.events.put((ts_us if ts_us is not None else time.time_ns() // 1000, kind, detail))
        try:
            self.queue.put_nowait(Wake())
        except queue.Full:
            pass  # the writer is busy with a full queue and will see the event soon anyway

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed. Return False on timeout."""
        task = Sync()
        self.queue.put(task, timeout=timeout)
        return task.done.wait(timeout)

    def stop(self, timeout: float = 30.0, hurry: bool = False) -> bool:
        """Drain, commit, close and end the thread. Return False if it did not end in time."""
        if hurry:
            self._hurry.set()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self.queue.put(Stop(), timeout=0.2)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():  # stuck retrying a failing disk: commit what it can and go
            self._hurry.set()
            self._thread.join(5.0)
        if self._thread.is_alive():
            log.error("stream %s: writer did not finish within %.0fs (%d records queued)",
                      self.name, timeout, self.queue.qsize())
            return False
        return True

    def hurry(self) -> None:
        """Commit what is in hand and stop without draining the queue (a second signal)."""
        self._hurry.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _main(self) -> None:
        try:
            now = time.time_ns() // 1000
            for path, outcome in self.store.recover(now):
                log.warning("stream %s: %s was left open by an earlier run: %s", self.name, path, outcome)
                if outcome.startswith("recovered"):
                    self.event("unclean_shutdown", f"{path.name} was left open by an earlier run: {outcome}", now)
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported, and the service sees .failed
            self.failed = exc
            log.exception("stream %s: writer stopped by an unexpected error; records stay queued", self.name)
        finally:
            try:
                self.store.close(time.time_ns() // 1000, "stop")
            except Exception:  # noqa: BLE001
                log.exception("stream %s: closing files failed; the next start recovers them", self.name)
            self.store.unlock()
            if getattr(self.chain, "close", None) is not None:
                self.chain.close()  # filters' optional close(), on the thread that ran them
            if self.on_stop is not None:
                self.on_stop(self)

    def _timeout(self) -> float:
        deadline = self.store.next_deadline_us()
        if deadline is None:
            return 1.0
        return min(1.0, max(0.0, (deadline - time.time_ns() // 1000) / US))

    def _loop(self) -> None:
        get, get_nowait = self.queue.get, self.queue.get_nowait
        commit_rows, commit_every = self.commit_rows, self.commit_every_s
        while True:
            try:
                item = get(timeout=self._timeout())
            except queue.Empty:
                item = None
            batch: list = []
            control = None
            if item is not None:
                deadline = time.monotonic() + commit_every
                while True:
                    if isinstance(item, Control):
                        control = item
                        break
                    batch.append(item)
                    if len(batch) >= commit_rows or self._hurry.is_set():
                        break
                    if not len(batch) & 63 and time.monotonic() >= deadline:
                        break
                    try:
                        item = get_nowait()
                    except queue.Empty:
                        break  # input went idle: commit now (group commit)
            if batch or not self.events.empty():
                self._flush(batch)
            self.store.tick(time.time_ns() // 1000, idle=self.queue.empty())
            if isinstance(control, Stop) or self._hurry.is_set():
                self._finish()
                return
            if isinstance(control, Sync):
                control.done.set()
            elif isinstance(control, Call):
                control.fn(self)

    def _finish(self) -> None:
        """At stop: whatever is still queued was never acked; count it (QoS >= 1 is redelivered)."""
        left = 0
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Sync):
                item.done.set()
            elif not isinstance(item, Control):
                left += 1
        if left:
            self.stats.left += left
            log.warning("stream %s: stopped with %d records not written; the broker redelivers QoS 1/2 "
                        "messages at the next start, QoS 0 ones are lost", self.name, left)

    # ------------------------------------------------------------------ writing

    def _flush(self, batch: list) -> None:
        """Filter once, then write and commit until it works; then ack."""
        if self.chain is not None and batch:
            items, rejects = self.chain.process(batch)
        else:
            items, rejects = batch, []
        events = []
        while not self.events.empty():
            events.append(self.events.get_nowait())
        chunks = self._split(items) if items else []
        delay = RETRY_MIN_S
        failing = hurried = False
        committed = 0  # chunks already committed (not to be written again on a retry)
        while True:
            chunks = chunks[committed:]
            committed = 0
            started = time.perf_counter_ns()
            written = 0
            try:
                for i, chunk in enumerate(chunks):
                    file = self.store.file_for(_ts(chunk[0]))
                    written = self._insert(file, chunk)
                    if i < len(chunks) - 1:  # the next chunk rotates: make this one durable first
                        file.commit()
                        self.stats.written += written
                        committed += 1
                if rejects or events:
                    now = time.time_ns() // 1000
                    file = self.store.current or self.store.file_for(now)
                    if rejects:
                        file.add_rejects([r.row() for r in rejects])
                    if events:
                        file.add_events(events)
                self.store.commit()
            except (sqlite3.Error, OSError) as exc:
                self._rollback()
                self.stats.storage_failures += 1
                if not failing:
                    where = self.store.current.path if self.store.current else self.store.folder
                    log.error("stream %s: cannot write %s (%s); keeping %d records unacknowledged and "
                              "retrying with backoff", self.name, where, exc, len(batch))
                    failing = True
                if self._hurry.is_set():
                    if hurried:
                        self.stats.left += len(batch)
                        log.error("stream %s: stopping in a hurry with %d records not written (not acked)",
                                  self.name, len(batch))
                        return
                    hurried = True
                    continue
                self._hurry.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            break
        self.stats.commit_us.append((time.perf_counter_ns() - started) // 1000)
        self.stats.commits += 1
        self.stats.written += written
        self.stats.rejected += len(rejects)
        if failing:
            log.warning("stream %s: writing works again; %d records committed", self.name, len(batch))
        if self.ack is not None and batch:
            tokens = [item[5] for item in batch if type(item) is tuple and item[5]]
            if tokens:
                self.ack(tokens)

    def _rollback(self) -> None:
        try:
            self.store.rollback()
        except sqlite3.Error:
            log.exception("stream %s: rollback failed", self.name)

    def _split(self, items: list) -> list[list]:
        """Split items into runs that share one period (the store reads ``ts_us`` as ``item[0]``)."""
        if type(items[0]) is tuple:
            return list(self.store.split(items))
        pairs = [(record.ts_us, record) for record in items]
        return [[record for _, record in chunk] for chunk in self.store.split(pairs)]

    def _insert(self, file: Any, chunk: list) -> int:
        """Insert one period's items into ``file``; return the number of rows.

        Items are all plain MQTT tuples (a stream without filters: the fast path) or all Records.
        A field's column type is its declared type, else the type of its first non-NULL value in
        the group; a field that is NULL throughout and has no column yet is left out (NULL is
        what the column would hold).
        """
        if type(chunk[0]) is tuple:
            file.write_messages([item[:5] for item in chunk])
            return len(chunk)
        groups: dict[tuple, list[Record]] = {}
        for record in chunk:
            groups.setdefault((record.table, tuple(record.fields)), []).append(record)
        for (table, names), records in groups.items():
            first = records[0]
            types = {n: first.types.get(n) or _first_type(records, n) for n in names}
            present = file.ensure_columns(table, types)
            if all(types.values()):
                rows = [(r.ts_us, r.topic, r.payload, r.qos, r.retain, *r.fields.values()) for r in records]
            else:
                names = tuple(n for n in names if types[n] or fold(n) in present)
                rows = [(r.ts_us, r.topic, r.payload, r.qos, r.retain, *(r.fields[n] for n in names))
                        for r in records]
            file.insert(table, ("ts_us", "topic", "payload", "qos", "retain") + names, rows)
        return len(chunk)


def _first_type(records: list[Record], name: str) -> str | None:
    """The SQL type of the first non-NULL value of field ``name``, or None when all are NULL."""
    for record in records:
        value = record.fields[name]
        if value is not None:
            return sql_type(value)
    return None


__all__ = ["Writer", "Stop", "Sync", "Wake", "Call", "Reject", "Record"]
