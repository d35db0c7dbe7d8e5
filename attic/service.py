"""The running service: builds the streams of a config, handles signals, reloads, shuts down in order.

Signal handlers only set flags; all work happens on the main thread after it wakes up.
SIGHUP re-reads the config: if it has problems, they are logged and the running config stays;
else added streams start, removed ones stop like at shutdown, changed ones restart, and
unchanged ones are not touched at all (no reconnect, nothing lost or written twice).
Shutdown order (the one thing worth keeping from older loggers): stop intake → writers
drain, commit, ack and close → bounded join → disconnect → exit 0. A second SIGTERM/SIGINT
makes writers commit what they hold and stop without draining (unacked messages are
redelivered by the broker at the next start).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from attic.config import Config, ConfigError, StreamConfig, load_config
from attic.durations import format_duration
from attic.stream import Stream
from attic.workers import Supervisor

log = logging.getLogger("attic.service")


def _plain(value: Any) -> Any:
    """A comparable form of a config value without places and line numbers (they move when a
    stream is added above another one, which must not count as a change)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,) + tuple(
            (f.name, _plain(getattr(value, f.name))) for f in dataclasses.fields(value)
            if f.name not in ("place", "line") and not f.name.endswith("_line"))
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def stream_key(stream: StreamConfig, config: Config) -> tuple:
    """Everything a running stream depends on: if this differs after a reload, the stream restarts.

    That is its own settings (with the broker defaults it inherits), the storage section, the
    filters folder and the drop-in files it uses (an edited filter takes effect at a reload), and
    the devices folder for Modbus streams.
    """
    key: list[Any] = [_plain(stream), _plain(config.storage)]
    if stream.filters:
        key.append(str(config.filters_dir))
        for spec in stream.filters:
            try:
                info = (config.filters_dir / f"{spec.name}.py").stat()
                key.append((spec.name, info.st_mtime_ns, info.st_size))
            except OSError:
                pass  # a built-in
    if stream.source == "modbus":
        key.append(str(config.devices_dir))
    return tuple(key)


@dataclasses.dataclass
class ReloadPlan:
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]
    reporter: bool  # the report section (or what it uses) changed: restart the reporter


def plan_reload(old: Config, new: Config, running: Mapping[str, tuple]) -> ReloadPlan:
    """Given the running config, the new one and the running streams (name → the stream_key each
    was started with), say what to do. A stream that is not running (it failed to start at a
    reload) counts as added.
    """
    names = [stream.name for stream in new.streams]
    plan = ReloadPlan([n for n in names if n not in running], [n for n in running if n not in names], [], [],
                      (old.report, old.broker, old.storage.root) != (new.report, new.broker, new.storage.root))
    for name in names:
        if name in running:
            (plan.unchanged if running[name] == stream_key(new.stream(name), new) else plan.changed).append(name)
    return plan


class Service:
    """All streams of one config."""

    def __init__(self, config: Config, run_id: str | None = None):
        self.config = config
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.streams: dict[str, Stream] = {}
        self.watches: list = []  # BrokerDropWatch per broker that publishes a drop counter
        self.reporter: Any = None
        self._wake = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._signals = 0
        # streams with workers > 1 run in worker processes (attic/workers.py); the rest run here
        self.supervisor = Supervisor(self.run_id, self._wake.set, lambda: self.streams)

    def start(self) -> None:
        """Start every stream; if one cannot start, stop the ones started and re-raise."""
        try:
            for stream_config in self.config.streams:
                if stream_config.workers > 1:
                    self.supervisor.start_group(stream_config, self.config, stream_key(stream_config, self.config))
                    continue
                stream = Stream(stream_config, self.config, self.run_id)
                stream.key = stream_key(stream_config, self.config)
                stream.start()
                self.streams[stream.name] = stream
            self.supervisor.reconcile(self.config)  # sessions earlier runs left (fewer workers now): drained
        except BaseException:
            self.stop()
            raise
        self._watch_brokers()
        self._start_reporter()
        log.info("attic running %d stream(s), run %s, files under %s", len(self.config.streams), self.run_id,
                 self.config.storage.root)

    def _start_reporter(self) -> None:
        from attic.report import Reporter
        self.reporter = Reporter(self.config.report, self.config.broker, lambda: dict(self.streams),
                                 self.run_id, self.config.storage.root)
        self.reporter.start()

    def _watch_brokers(self) -> None:
        """One drop-counter watch per broker, feeding broker_dropped events to its streams.

        Rebuilt after a reload; a watch of the same broker keeps the last total it saw, so an
        increase during the reload is still recorded.
        """
        last = {(w.broker.host, w.broker.port, w.topic): w.last for w in self.watches}
        for watch in self.watches:
            watch.close()
        self.watches = []
        groups: dict[tuple, tuple] = {}
        for stream in self.streams.values():
            broker = stream.config.broker
            if stream.config.source == "mqtt" and broker.dropped_topic:
                key = (broker.host, broker.port, broker.dropped_topic)
                groups.setdefault(key, (broker, []))[1].append(stream.writer.event)
        if groups:
            from attic.sources.mqtt import BrokerDropWatch
        for key, (broker, sinks) in groups.items():
            watch = BrokerDropWatch(broker, key[2], sinks, "watch")
            watch.last = last.get(key)
            watch.start()
            self.watches.append(watch)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every stream in order within one shared ``timeout`` (so that several slow streams
        still finish inside systemd's TimeoutStopSec); return False if one did not finish in time."""
        deadline = time.monotonic() + timeout
        if self.reporter is not None:
            self.reporter.stop()
            self.reporter = None
        for watch in self.watches:
            watch.close()
        self.watches = []
        finished = True
        self.supervisor.stop_intake()
        for stream in self.streams.values():
            stream.source.stop_intake()
        for stream in list(self.streams.values()):
            finished &= stream.stop(timeout=max(1.0, deadline - time.monotonic()))
        self.streams.clear()
        finished &= self.supervisor.stop(max(1.0, deadline - time.monotonic()))
        return finished

    def reload_from_file(self) -> bool:
        """Re-read and check the config file; apply it, or log its problems and keep the running one."""
        from attic.preflight import preflight
        path = self.config.path
        log.info("reload: reading %s", path)
        try:
            new = load_config(path)
            preflight(new)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error("reload: %d problem(s) in %s; still running the previous config", len(exc.problems), path)
            detail = json.dumps({"problems": exc.problems[:20]})
            for stream in self.streams.values():
                stream.writer.event("reload_failed", detail)
            return False
        try:
            self.reload(new)
        except Exception:  # noqa: BLE001 - a bug must not take the running streams down
            log.exception("reload: failed while applying %s; check the streams above", path)
            return False
        return True

    def reload(self, new: Config) -> ReloadPlan:
        """Apply ``new`` (already checked): stop removed and changed streams, start changed and added ones."""
        resized = self.supervisor.resize(new)  # only the number of workers changed: no restart
        plan = plan_reload(self.config, new, {**{name: stream.key for name, stream in self.streams.items()},
                                              **self.supervisor.keys()})
        if plan.reporter:  # workers run their own report: they restart to take the new settings
            plan.changed += [name for name in plan.unchanged if name in self.supervisor.groups]
            plan.unchanged = [name for name in plan.unchanged if name not in self.supervisor.groups]
        stopping = plan.removed + plan.changed
        for name in stopping:
            if name in self.streams:
                self.streams[name].source.stop_intake()
            else:
                self.supervisor.stop_intake(name)
        for name in stopping:
            if name not in self.streams:
                self.supervisor.stop_group(name, removed=name in plan.removed)
                continue
            stream = self.streams.pop(name)
            stream.stop(why=f"reload: {'removed' if name in plan.removed else 'changed'}")
            if name in plan.removed and stream.config.source == "mqtt" and stream.config.qos > 0:
                broker = stream.config.broker
                until = format_duration(broker.session_expiry_s) if broker.protocol == "5" else \
                    "the broker's persistent_client_expiration"
                log.warning("stream %s: removed; the broker keeps its session %s and queues messages for it "
                            "until it expires (%s)", name, stream.source.client_id, until)
        self.config = new
        self.supervisor.reconcile(new)  # sessions no longer used (fewer workers) are drained
        failed = []
        for name in plan.changed + plan.added:
            if not self._start_stream(name):
                failed.append(name)
        self.streams = {s.name: self.streams[s.name] for s in new.streams if s.name in self.streams}
        self._watch_brokers()
        if plan.reporter:
            self.reporter.stop()
            self._start_reporter()
        detail = {"added": plan.added, "removed": plan.removed, "changed": plan.changed,
                  "unchanged": plan.unchanged, "failed": failed, "report": plan.reporter}
        if resized:
            detail["resized"] = resized
        for stream in self.streams.values():
            stream.writer.event("reload", json.dumps(detail))
        self.supervisor.event("reload", json.dumps(detail))
        log.info("reload: added %s; removed %s; changed %s; %d unchanged%s%s", ", ".join(plan.added) or "-",
                 ", ".join(plan.removed) or "-", ", ".join(plan.changed) or "-", len(plan.unchanged),
                 "; report restarted" if plan.reporter else "",
                 f"; FAILED to start {', '.join(failed)}" if failed else "")
        return plan

    def _start_stream(self, name: str) -> bool:
        """Start one stream of the current config after a reload; log and return False if it cannot."""
        stream = None
        try:
            if self.config.stream(name).workers > 1:
                self.supervisor.start_group(self.config.stream(name), self.config,
                                            stream_key(self.config.stream(name), self.config))
                return True
            stream = Stream(self.config.stream(name), self.config, self.run_id)
            stream.key = stream_key(self.config.stream(name), self.config)
            stream.start()
        except Exception as exc:  # noqa: BLE001 - e.g. StoreLocked; the other streams keep running
            log.error("stream %s: cannot start (%s); it stays stopped until the next reload", name, exc)
            try:
                if stream is not None:
                    stream.stop(timeout=5.0)
            except Exception:  # noqa: BLE001 - its writer never started
                stream.store.unlock()
            return False
        self.streams[name] = stream
        return True

    def request_reload(self) -> None:
        """Ask the main loop to reload the config file (what the SIGHUP handler does)."""
        self._reload_requested = True
        self._wake.set()

    def request_stop(self) -> None:
        """Ask the main loop to stop (thread-safe; what the signal handlers do)."""
        self._signals += 1
        self._stop_requested = True
        if self._signals > 1:
            log.warning("second signal: committing what is in hand and exiting")
            for stream in list(self.streams.values()):
                stream.hurry()
            self.supervisor.hurry()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())

    def run(self) -> int:
        """Start, wait for signals (SIGHUP reloads), stop. Return the exit status."""
        self.install_signal_handlers()
        self.start()
        failed: list[str] = []
        while not self._stop_requested and not failed:
            self._wake.wait(1.0)
            self._wake.clear()
            if self._reload_requested and not self._stop_requested:
                self._reload_requested = False
                self.reload_from_file()
            failed = [name for name, stream in self.streams.items() if not stream.writer.alive]
            failed += self.supervisor.failed()
        if failed:
            log.error("stream(s) %s failed (see above); stopping so the service manager restarts Attic",
                      ", ".join(failed))
        log.info("stopping: draining queues and closing files")
        finished = self.stop()
        log.info("attic stopped")
        return 0 if finished and not failed else 1
