"""The self-report: every ``report.every``, one log line per stream, rows in its ``attic_stats``,
and optionally a JSON document on ``report.topic`` and Prometheus metrics on ``report.prometheus``.

Only a writer touches its files, so the report reaches each writer as a ``Call`` on its queue:
on the writer thread it swaps out the commit latencies, takes the counters and writes the
``attic_stats`` rows in a transaction of its own. A writer that does not answer in time (queue
full, disk failing) gets a report from its counters alone and no rows for that round.

Commit latencies are drained at least every ``DRAIN_S`` into a fixed-size histogram, so memory
stays bounded with ``report.every: 1h`` on a busy stream. Process CPU and RSS come from
``getrusage`` and ``/proc``: psutil is not needed. prometheus-client is imported only here.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import os
import queue
import resource
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attic.config import Broker, Report, client_id_for
from attic.writer import Call, Writer

log = logging.getLogger("attic.report")

DRAIN_S = 10.0        # commit latencies leave the writer at least this often
ANSWER_S = 2.0        # how long a round waits for the writers' answers
GROWTH = 1.05         # latency histogram buckets grow by 5%: percentiles within ~2.5%
PROM_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COUNTER_DOCS = {
    "received": "Messages (or Modbus rows) the stream received",
    "written": "Rows committed to the stream's files",
    "rejected": "Records a filter sent to attic_rejects",
    "dropped": "QoS 0 messages refused while stopping",
    "reconnects": "Connections lost after they were up",
}
COUNTERS = tuple(COUNTER_DOCS)


def snapshot(stream: Any) -> dict:
    """A Stream's totals now (``t`` in monotonic seconds), readable from any thread (plain int reads)."""
    source, stats, current = stream.source, stream.writer.stats, stream.writer.store.current
    return {"t": time.monotonic(), "received": source.received, "written": stats.written,
            "rejected": stats.rejected, "dropped": source.dropped, "reconnects": source.reconnects,
            "commits": stats.commits, "queue": stream.queue.qsize(), "file": current.path if current else None,
            "extra": source.counters() if hasattr(source, "counters") else {}}  # Modbus: polls, poll_failed, ...


class Latency:
    """Commit latencies in geometric buckets: bounded memory, percentiles to a few percent."""

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0

    def add(self, values_us: list[int]) -> None:
        for value in values_us:
            index = int(math.log(value, GROWTH)) if value > 1 else 0
            self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += len(values_us)

    def percentile_ms(self, q: float) -> float | None:
        """The nearest-rank ``q`` percentile (0..1) in ms, or None without commits."""
        rank, seen = max(1, math.ceil(q * self.count)), 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return round(GROWTH ** (index + 0.5) / 1000, 3)
        return None


def figures(prev: dict, now: dict, latency: Latency, cpu_percent: float, rss_mb: float) -> dict:
    """Given two snapshots and the latencies between them, return the report's figures (attic_stats keys)."""
    span = max(now["t"] - prev["t"], 1e-6)
    return {"received_per_s": round((now["received"] - prev["received"]) / span, 1),
            "written_per_s": round((now["written"] - prev["written"]) / span, 1),
            "queue": now["queue"], "commit_p50_ms": latency.percentile_ms(0.50),
            "commit_p95_ms": latency.percentile_ms(0.95), "commits": now["commits"],
            **{key: now[key] for key in COUNTERS}, **now.get("extra", {}), "cpu_percent": cpu_percent,
            "rss_mb": rss_mb}


def log_line(name: str, values: dict, file: str) -> str:
    """``stream tele: report received_per_s=812.0 ... file=tele/2026-11-23/1763892000.sqlite``."""
    pairs = " ".join(f"{key}={'-' if value is None else value}" for key, value in values.items())
    return f"stream {name}: report {pairs} file={file}"


def rss_mb() -> float:
    """Resident memory of this process in MiB (/proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as statm:
            return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Exporter:
    """Prometheus /metrics: counters and gauges read live at each scrape, commit latency histograms.

    A stream that a reload restarts starts its counters at 0 again: Prometheus sees a counter reset.
    """

    def __init__(self, address: str, streams: Callable[[], dict]):
        try:
            from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
        except ImportError:
            raise RuntimeError("needs prometheus-client: pip install 'attic[prometheus]'") from None
        host, _, port = address.rpartition(":")
        self.address = f"{host or '0.0.0.0'}:{port}"
        self.streams = streams
        self.lock = threading.Lock()
        self.hist: dict[str, list] = {}  # name -> [count per bucket (+Inf last), sum in seconds]
        registry = CollectorRegistry()
        registry.register(self)
        ProcessCollector(registry=registry)
        self.server, _ = start_http_server(int(port), host or "0.0.0.0", registry)

    def describe(self) -> list:
        return []  # else the registry collects once at registration

    def observe(self, name: str, values_us: list[int]) -> None:
        with self.lock:
            hist = self.hist.setdefault(name, [[0] * (len(PROM_BUCKETS_S) + 1), 0.0])
            for value in values_us:
                hist[0][bisect.bisect_left(PROM_BUCKETS_S, value / 1e6)] += 1
            hist[1] += sum(values_us) / 1e6

    def collect(self) -> list:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        counters = {key: CounterMetricFamily(f"attic_{key}", doc, labels=["stream"])
                    for key, doc in COUNTER_DOCS.items()}
        depth = GaugeMetricFamily("attic_queue_depth", "Records waiting for the writer", labels=["stream"])
        latency = HistogramMetricFamily("attic_commit_seconds", "Commit latency", labels=["stream"])
        bounds = [str(b) for b in PROM_BUCKETS_S] + ["+Inf"]
        with self.lock:
            for name, stream in self.streams().items():
                now = snapshot(stream)
                for key in COUNTERS:
                    counters[key].add_metric([name], now[key])
                depth.add_metric([name], now["queue"])
                counts, total = self.hist.get(name) or [[0] * len(bounds), 0.0]
                latency.add_metric([name], list(zip(bounds, itertools.accumulate(counts), strict=True)), total)
        return [*counters.values(), depth, latency]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Ask(Call):
    """One round's question to one writer; ``guard`` makes a late answer a no-op once given up on."""

    def __init__(self, reporter: Reporter, state: _State, report: bool, usage: tuple[float, float]):
        super().__init__(self.answer)
        self.reporter, self.state, self.report, self.usage = reporter, state, report, usage
        self.done, self.guard = threading.Event(), threading.Lock()
        self.figures: dict | None = None
        self.given_up = False

    def answer(self, writer: Writer) -> None:
        with self.guard:
            if self.given_up:
                return
            values, writer.stats.commit_us = writer.stats.commit_us, []
            self.state.latency.add(values)
            if self.reporter.exporter is not None:
                self.reporter.exporter.observe(writer.name, values)
            if self.report:
                self.figures = self.state.figures(self.usage)
                self.write_stats(writer, self.figures)
            self.done.set()

    @staticmethod
    def write_stats(writer: Writer, values: dict) -> None:
        """The figures as attic_stats rows, committed in a transaction of their own."""
        ts_us = time.time_ns() // 1000
        try:
            writer.store.file_for(ts_us).add_stats([(ts_us, k, float(v)) for k, v in values.items() if v is not None])
            writer.store.commit()
        except (sqlite3.Error, OSError) as exc:
            log.warning("stream %s: cannot write attic_stats (%s); skipped this round", writer.name, exc)
            try:
                writer.store.rollback()
            except sqlite3.Error:
                pass

    def give_up(self) -> bool:
        """After waiting: return whether the writer answered; a later answer does nothing."""
        with self.guard:
            self.given_up = True
            return self.done.is_set()


class _State:
    """What the reporter keeps per Stream object (a stream restarted by a reload starts afresh)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.prev = {"t": getattr(stream, "started", time.monotonic()), "file": None,
                     **dict.fromkeys(COUNTERS, 0)}
        self.latency = Latency()

    def figures(self, usage: tuple[float, float]) -> dict:
        now = snapshot(self.stream)
        values = figures(self.prev, now, self.latency, *usage)
        self.prev, self.latency = now, Latency()
        return values


class Reporter:
    """The report thread: drains latencies at least every DRAIN_S, reports every ``report.every``."""

    def __init__(self, report: Report, broker: Broker, streams: Callable[[], dict], run_id: str, root: Path):
        self.report, self.broker, self.streams, self.run_id = report, broker, streams, run_id
        self.root = Path(root)
        self.host = socket.gethostname()
        self.topic = report.topic.replace("{host}", self.host) if report.topic else None
        self.states: dict[str, _State] = {}
        self.cpu = (time.monotonic(), cpu_seconds())
        self.publisher: Any = None
        self.exporter: Exporter | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="attic-report")

    def start(self) -> None:
        """Serve /metrics and connect the JSON publisher if configured, then start the thread."""
        if self.report.prometheus:
            address = self.report.prometheus if ":" in self.report.prometheus else f":{self.report.prometheus}"
            try:
                self.exporter = Exporter(address, self.streams)
                log.info("report: serving Prometheus metrics on http://%s/metrics", self.exporter.address)
            except (OSError, RuntimeError) as exc:
                log.error("report: cannot serve /metrics on %s (%s); running without it", address, exc)
        if self.topic:
            from attic.sources.mqtt import Publisher
            self.publisher = Publisher(self.broker, f"{client_id_for(self.broker.client_id, 'report')}-{os.getpid()}")
            self.publisher.start(timeout=0)  # connects in the background; a report waits for nothing
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.exporter is not None:
            self.exporter.close()
        if self.publisher is not None:
            self.publisher.close()

    def _main(self) -> None:
        every = self.report.every_s
        due = time.monotonic() + every
        while not self._stop.wait(max(0.0, min(DRAIN_S, due - time.monotonic()))):
            report = time.monotonic() >= due - 0.001
            if report:
                due = max(due + every, time.monotonic() + every / 2)
            try:
                self.round(report)
            except Exception:  # noqa: BLE001 - a failed report must not end the reports
                log.exception("report: round failed; trying again at the next one")

    def round(self, report: bool = True) -> dict[str, dict | None]:
        """Drain every stream's latencies; when ``report``, also log, write rows and publish. Return figures."""
        states = {}
        for name, stream in self.streams().items():
            state = self.states.get(name)
            states[name] = state if state is not None and state.stream is stream else _State(stream)
        self.states = states
        usage = (0.0, 0.0)
        if report:
            (then, before), self.cpu = self.cpu, (time.monotonic(), cpu_seconds())
            usage = (round(100 * (self.cpu[1] - before) / max(self.cpu[0] - then, 1e-6), 1), rss_mb())
        asks = {name: _Ask(self, state, report, usage) for name, state in states.items()}
        for name, ask in asks.items():
            writer = states[name].stream.writer
            try:
                writer.queue.put_nowait(ask)
                ask.given_up = not writer.alive
            except queue.Full:  # the writer is behind: this round reports from its counters
                ask.given_up = True
        deadline = time.monotonic() + ANSWER_S
        out: dict[str, dict | None] = {}
        for name, ask in asks.items():
            if not ask.given_up:
                ask.done.wait(max(0.0, deadline - time.monotonic()))
            if ask.give_up() or not report:
                out[name] = ask.figures
                continue
            log.debug("stream %s: writer busy (queue full or no answer within %.0fs); report from its counters, "
                      "no attic_stats rows this round", name, ANSWER_S)
            out[name] = states[name].figures(usage)
        if report:
            for name, values in out.items():
                log.info(log_line(name, values, self._file(states[name].prev["file"])))
            self._publish(out, usage)
        return out

    def _file(self, path: Path | None) -> str:
        if path is None:
            return "-"
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def _publish(self, out: dict, usage: tuple[float, float]) -> None:
        if self.publisher is None:
            return
        if not self.publisher.connected.is_set():
            log.debug("report: not connected to %s:%d; this report is not published", self.broker.host,
                      self.broker.port)
            return
        streams = {name: {**{k: v for k, v in values.items() if k not in ("cpu_percent", "rss_mb")},
                          "file": self._file(self.states[name].prev["file"])} for name, values in out.items()}
        document = {"host": self.host, "run_id": self.run_id, "ts_us": time.time_ns() // 1000,
                    "every_s": self.report.every_s, "cpu_percent": usage[0], "rss_mb": usage[1], "streams": streams}
        self.publisher.publish(self.topic, json.dumps(document, separators=(",", ":")).encode(), qos=1)
