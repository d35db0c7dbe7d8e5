"""``workers: N``: one MQTT stream shared by N processes through an MQTT 5 shared subscription.

One Python process gets about one core (the GIL), and a busy stream's network and writer
threads fill it. With ``workers: N`` the parent ``attic run`` starts N worker processes for the
stream; each is a paho client subscribed to ``$share/attic-<stream>/<topic>`` with a
persistent session of its own (client id ``<the stream's id>-w<n>``) and writes files of its
own (``<start>.w<n>.sqlite``). The broker hands each message to one member of the group, the
OS spreads the processes over the cores, and ``attic query`` / ``attic.read`` merge the
writers' files again. Streams with ``workers: 1`` keep running inside the parent.

**Why subprocesses** (``python -m attic run -c FILE --worker tele.w2``) rather than
``multiprocessing``: forking a process that already runs paho and writer threads can copy
locks held by those threads, and the spawn method re-imports the parent's ``__main__``;
a plain ``sys.executable -m attic`` is a fresh interpreter with a command line one can
recognise in ``ps``. The parent writes the worker's job on its stdin (the exact config the
parent checked, pickled, so a worker restarted after a crash never picks up edits the parent
has not reloaded) and keeps that pipe open as the control channel: ``stop``, ``hurry`` and
``event <kind> <detail>`` lines; end of file (the parent died, even by SIGKILL) means stop.
Workers report on their stdout: ``subscribed`` and, for a drain, ``drained``.

**Signals.** Workers run in a session of their own, so a Ctrl-C in a terminal reaches only
the parent, which forwards it: SIGTERM/SIGINT become ``stop`` (drain, commit, ack, close,
exit 0), a second one ``hurry``. A worker that gets a SIGTERM itself (``KillMode=control-group``)
treats it and the parent's ``stop`` as one stop. SIGHUP: the parent reloads the config and
applies it to the workers (see ``Supervisor.resize`` and the service's reload): unchanged
groups keep running, changed ones restart, and a changed worker count adds or removes workers
without touching the others. Workers ignore SIGHUP sent to them directly.

**Crashes.** Mosquitto keeps queueing a share of the group's messages for a member whose
session exists while it is offline, so a crashed worker is restarted at once (then after
0.5 s, 1 s, 2 s ...); five crashes of one worker within a minute fail the service, which
exits 1 so that systemd restarts it.

**Sessions of removed workers.** When ``workers`` is lowered (at a reload, or between runs),
the sessions of the workers no longer wanted still hold a share of the messages. They are
drained: a drain process connects with that client id (clean start off, no new subscription),
unsubscribes from the group so no new share arrives, stores what the session held into that
writer's files (``<start>.w3.sqlite``), acknowledges it, and disconnects with session expiry 0,
which ends the session. A switch between ``workers: 1`` and ``workers: N`` drains the other
kind's session(s) the same way, but only once the new subscription is confirmed, so no message
falls between the two (messages of that moment may be stored twice, once by each side). Which
sessions a stream has is recorded in ``<root>/<stream>/.sessions.json``, so an interrupted
drain is finished at the next start.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from attic.config import Config, StreamConfig, client_id_for
from attic.store import StoreLocked

log = logging.getLogger("attic.workers")

EXIT_LOCKED = 3               # a worker found its files locked by another process: no point restarting
RESTART_DELAYS_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # after the 1st, 2nd, ... crash within CRASH_WINDOW_S
MAX_CRASHES = 5               # this many crashes of one worker within CRASH_WINDOW_S fail the service
CRASH_WINDOW_S = 60.0
DRAIN_IDLE_S = 1.0            # a drain ends once nothing arrived for this long after the unsubscribe
DRAIN_RETRY_S = (5.0, 60.0)   # a failed drain is tried again after 5 s, doubling up to 60 s
SESSIONS_FILE = ".sessions.json"


def shared_topic(stream: str, topic: str) -> str:
    return f"$share/attic-{stream}/{topic}"


# --------------------------------------------------------------------------- the job of one process

@dataclasses.dataclass
class Job:
    """What one worker process does; pickled onto its stdin."""

    config: Config                 # the parent's config, with only this stream
    stream: str
    writer: str | None             # "w2"; None: the stream's plain session (only ever drained here)
    workers: int
    run_id: str
    drain: dict | None = None      # a session to drain: {"client_id", "topic"}; None: run as a worker

    @property
    def label(self) -> str:
        name = f"{self.stream}.{self.writer}" if self.writer else self.stream
        return f"{name}.drain" if self.drain else name

    @property
    def index(self) -> int | None:
        return int(self.writer[1:]) if self.writer else None


def sessions_for(stream: StreamConfig) -> list[dict]:
    """The persistent sessions a stream uses with its current config (client id, topic, writer)."""
    broker = f"{stream.broker.host}:{stream.broker.port}"
    if stream.workers > 1:
        return [{"writer": f"w{n}", "client_id": client_id_for(stream.broker.client_id, stream.name, n),
                 "topic": shared_topic(stream.name, stream.topic), "broker": broker}
                for n in range(1, stream.workers + 1)]
    return [{"writer": None, "client_id": client_id_for(stream.broker.client_id, stream.name),
             "topic": stream.topic, "broker": broker}]


def key_without_workers(stream: StreamConfig, config: Config) -> tuple:
    """The stream's reload key as if ``workers`` were not set: equal keys differ at most in the count."""
    from attic.service import stream_key
    settings = {k: v for k, v in stream.settings.items() if k != "workers"}
    return stream_key(dataclasses.replace(stream, workers=1, settings=settings), config)


# --------------------------------------------------------------------------- the worker process

def worker_main(label: str, log_level: str) -> int:
    """``attic run --worker LABEL``: read the job from stdin, run it, return the exit status."""
    control = _Control(sys.stdin.fileno())
    header = control.read(8)
    if len(header) < 8:
        print(f"attic worker {label}: no job on stdin (workers are started by 'attic run')", file=sys.stderr)
        return 2
    job: Job = pickle.loads(control.read(struct.unpack(">Q", header)[0]))
    status = os.fdopen(os.dup(1), "w", buffering=1)  # status lines to the parent ...
    os.dup2(2, 1)                                    # ... and any stray print to the log
    from attic.cli import LOG_FORMAT
    logging.basicConfig(level=getattr(logging, log_level.upper()), stream=sys.stderr, force=True,
                        format=LOG_FORMAT.replace("%(message)s", f"[{job.label}] %(message)s"))
    logging.captureWarnings(True)
    return WorkerRun(job, control, status).run()


class _Control:
    """The parent's pipe, read with plain ``os.read``: a daemon thread blocked in a buffered read
    would make the interpreter abort at exit."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = os.read(self.fd, max(65536, size - len(self.buffer)))
            if not chunk:
                break
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def __iter__(self):
        while True:
            while b"\n" not in self.buffer:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    return
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            yield line


class WorkerRun:
    """One stream writer (or one drain) in a worker process, until told to stop."""

    def __init__(self, job: Job, control: Any, status: Any):
        self.job = job
        self.control = control
        self.status = status
        self.stream: Any = None
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._signals = 0

    # ------------------------------------------------------------------ controls

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        if self._signals > 1:
            self._hurry.set()
        self._stop.set()

    def _read_control(self) -> None:
        """Commands from the parent, one per line; end of file means the parent is gone."""
        for raw in self.control:
            line = raw.decode(errors="replace")
            command, _, rest = line.partition(" ")
            if command == "stop":
                self._stop.set()
            elif command == "hurry":
                self._hurry.set()
                self._stop.set()
                if self.stream is not None:
                    self.stream.hurry()
            elif command == "event" and self.stream is not None:
                kind, _, detail = rest.partition(" ")
                self.stream.writer.event(kind, detail)
        if not self._stop.is_set():
            log.warning("the parent attic process is gone; stopping")
            self._stop.set()

    def _tell(self, message: str) -> None:
        try:
            self.status.write(message + "\n")
        except OSError:
            pass  # the parent is gone; the control thread stops us

    # ------------------------------------------------------------------ running

    def _build(self) -> Any:
        from attic.stream import Stream
        job = self.job
        stream_config = job.config.stream(job.stream)
        stream = Stream(stream_config, job.config, job.run_id, worker=job.index, workers=job.workers)
        if job.drain:
            source = DrainSource(stream_config, job.drain["client_id"], job.drain["topic"], stream.queue,
                                 stream.writer.event)
            stream.source = source
            stream.writer.ack = source.ack if source.manual_ack else None
        return stream

    def run(self) -> int:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the parent reloads; a stray SIGHUP must not kill us
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        threading.Thread(target=self._read_control, name="attic-worker-control", daemon=True).start()
        self.stream = stream = self._build()
        try:
            stream.start()
        except StoreLocked as exc:
            log.error("%s", exc)
            stream.store.unlock()
            return EXIT_LOCKED
        log.info("%s %s started (pid %d)", "drain" if self.job.drain else "worker", self.job.label, os.getpid())
        reporter = None
        if not self.job.drain:
            from attic.report import Reporter
            config = self.job.config
            # /metrics is served by the parent only (one port); each worker logs and stores its own report
            reporter = Reporter(dataclasses.replace(config.report, prometheus=None), config.broker,
                                lambda: {self.job.label: stream}, self.job.run_id, config.storage.root)
            reporter.start()
        told = False
        failed = False
        drained = False
        while not self._stop.is_set():
            self._stop.wait(0.05)
            if not told and stream.source.subscribed.is_set():
                self._tell("subscribed")
                told = True
            if not stream.writer.alive:
                failed = True
                break
            if self.job.drain and stream.source.done():
                drained = True
                break
        if self._hurry.is_set():
            stream.hurry()
        if reporter is not None:
            reporter.stop()
        if drained:
            return self._end_drain()
        finished = stream.stop(hurry=self._hurry.is_set(), why="worker stopped")
        if failed:
            log.error("writer failed (see above); exiting so the parent restarts this worker")
        return 0 if finished and not failed else 1

    def _end_drain(self) -> int:
        """Everything the session held is stored: commit, acknowledge, then end the session."""
        stream, source = self.stream, self.stream.source
        source.stop_intake()
        stream.writer.event("stop", f"drained session {source.client_id}: ending it (session expiry 0)")
        if not stream.writer.stop(timeout=30.0):
            source.close()  # the session stays; the next start drains it again
            return 1
        source.end_session()
        log.info("drained session %s: %d message(s) stored; the session is ended", source.client_id,
                 stream.writer.stats.written)
        self._tell("drained")
        return 0


def _drain_source_class() -> type:
    from attic.sources.mqtt import MqttSource

    class _DrainSource(MqttSource):
        """Resumes a session without subscribing, leaves the group, and counts down to idle."""

        def __init__(self, stream: StreamConfig, client_id: str, topic: str, records: Any, event: Any):
            broker = dataclasses.replace(stream.broker, client_id=client_id, protocol="5")
            super().__init__(stream.name, topic, stream.qos, broker, records, event)
            self.client_id = client_id
            self.subscribe_on_connect = False
            self.drain_topic = topic
            self.left = threading.Event()         # unsubscribed (or nothing to leave)
            self._seen = (-1, 0.0)                # (received, monotonic time it last changed)
            self.client.on_unsubscribe = self._on_unsubscribe

        def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
            super()._on_connect(client, userdata, flags, reason_code, properties)
            if reason_code.is_failure:
                return
            if self.session_present:
                log.info("draining session %s: leaving %s, storing what it holds", self.client_id, self.drain_topic)
                client.unsubscribe(self.drain_topic)
            else:
                log.info("session %s is not on the broker: nothing to drain", self.client_id)
                self.left.set()

        def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
            self.left.set()

        def done(self) -> bool:
            """Left the group, and nothing arrived for DRAIN_IDLE_S with the writer's queue empty."""
            if not self.left.is_set():
                return False
            now = time.monotonic()
            if self.received != self._seen[0] or self.queue.qsize():
                self._seen = (self.received, now)
                return False
            return now - self._seen[1] >= DRAIN_IDLE_S

        def end_session(self) -> None:
            """Disconnect with session expiry 0 (after the acks already queued): the broker drops the session."""
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties
            self._closing.set()
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
            self.client.disconnect(properties=properties)
            self.client.loop_stop()

    return _DrainSource


def DrainSource(*args: Any) -> Any:  # noqa: N802 - a class, built on first use (paho loads lazily)
    return _drain_source_class()(*args)


# --------------------------------------------------------------------------- the parent's side

class WorkerProc:
    """One worker (or drain) process as the parent sees it."""

    def __init__(self, job: Job):
        self.job = job
        self.proc: subprocess.Popen | None = None
        self.subscribed = threading.Event()
        self.drained = threading.Event()
        self.stopping = False
        self._write = threading.Lock()

    def start(self, config_path: Path, log_level: str) -> WorkerProc:
        argv = [sys.executable, "-m", "attic", "run", "-c", str(config_path), "--log-level", log_level,
                "--worker", self.job.label]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        data = pickle.dumps(self.job)
        self.proc.stdin.write(struct.pack(">Q", len(data)) + data)
        self.proc.stdin.flush()
        threading.Thread(target=self._read_status, name=f"attic-status-{self.job.label}", daemon=True).start()
        return self

    def _read_status(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line == "subscribed":
                self.subscribed.set()
            elif line == "drained":
                self.drained.set()
        self.proc.stdout.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        with self._write:
            try:
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass  # it exited; the monitor sees that

    def stop(self) -> None:
        self.stopping = True
        self.send("stop")

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass


class Group:
    """The workers of one stream."""

    def __init__(self, stream: StreamConfig, config: Config, key: tuple):
        self.stream = stream
        self.config = dataclasses.replace(config, streams=(stream,))
        self.key = key
        self.procs: dict[int, WorkerProc] = {}
        self.crashes: dict[int, list[float]] = {}
        self.restart_at: dict[int, float] = {}
        self.failed: str | None = None

    @property
    def name(self) -> str:
        return self.stream.name

    @property
    def client_ids(self) -> list[str]:
        return [s["client_id"] for s in sessions_for(self.stream)]


class Drain:
    """A session to drain, waiting for its precondition, running, or waiting to retry."""

    def __init__(self, stream: str, session: dict):
        self.stream = stream
        self.session = session
        self.proc: WorkerProc | None = None
        self.not_before = 0.0
        self.failures = 0


def _probe_lock(folder: Path, writer: str) -> None:
    """Raise StoreLocked if another process holds this writer's lock (a second Attic on the same folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f".lock.{writer}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        raise StoreLocked(f"{folder} is being written by pid {holder} (worker {writer}); stop that Attic first, "
                          "or give this stream another name or storage.root") from None
    finally:
        os.close(fd)


class Supervisor:
    """Starts, watches, restarts and stops the worker groups of a service, and drains stale sessions."""

    def __init__(self, run_id: str, wake: Callable[[], None], in_process: Callable[[], Mapping[str, Any]]):
        self.run_id = run_id
        self.wake = wake                # wakes the service's main loop (a group failed)
        self.in_process = in_process    # the service's in-process streams by name
        self.config: Config | None = None  # the latest config given to reconcile()
        self.groups: dict[str, Group] = {}
        self.drains: dict[str, Drain] = {}  # by client id
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @staticmethod
    def _log_level() -> str:
        level = logging.getLogger().getEffectiveLevel()
        return {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}.get(level, "error")

    def _spawn(self, job: Job) -> WorkerProc:
        return WorkerProc(job).start(job.config.path, self._log_level())

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._monitor, name="attic-supervisor", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ groups

    def keys(self) -> dict[str, tuple]:
        with self._lock:
            return {name: group.key for name, group in self.groups.items()}

    def start_group(self, stream: StreamConfig, config: Config, key: tuple) -> None:
        """Start every worker of ``stream``; raise StoreLocked if another Attic writes its files."""
        group = Group(stream, config, key)
        with self._lock:
            self._take_over(group.client_ids)
            folder = config.storage.root / stream.name
            for n in range(1, stream.workers + 1):
                _probe_lock(folder, f"w{n}")
            for n in range(1, stream.workers + 1):
                self._start_worker(group, n)
            self.groups[stream.name] = group
        self._ensure_thread()
        log.info("stream %s: %d workers sharing %s (pids %s)", stream.name, stream.workers,
                 shared_topic(stream.name, stream.topic), ", ".join(str(p.pid) for p in group.procs.values()))

    def _start_worker(self, group: Group, n: int) -> None:
        job = Job(group.config, group.name, f"w{n}", group.stream.workers, self.run_id)
        group.procs[n] = self._spawn(job)

    def _take_over(self, client_ids: list[str]) -> None:
        """Sessions wanted again: cancel their pending drains and stop running ones first."""
        for client_id in client_ids:
            drain = self.drains.pop(client_id, None)
            if drain is not None and drain.proc is not None:
                log.info("stream %s: session %s is wanted again; stopping its drain", drain.stream, client_id)
                drain.proc.stop()
                if not drain.proc.wait(35.0):
                    drain.proc.kill()
                drain.proc.close()

    def stop_intake(self, name: str | None = None) -> None:
        """Tell the workers of one group (or of all, and every drain) to stop; returns at once."""
        with self._lock:
            if name is None:
                self._stopping = True
            for group in ([self.groups[name]] if name is not None else list(self.groups.values())):
                for proc in group.procs.values():
                    proc.stop()
            if name is None:
                for drain in self.drains.values():
                    if drain.proc is not None:
                        drain.proc.stop()

    def stop_group(self, name: str, timeout: float = 35.0, removed: bool = False) -> bool:
        """Stop a group's workers (they drain, commit, ack and close) and wait for them."""
        with self._lock:
            group = self.groups.pop(name)
        finished = self._stop_procs(list(group.procs.values()), timeout)
        if removed and group.stream.qos > 0:
            log.warning("stream %s: removed; the broker keeps the sessions of its workers (%s) and queues "
                        "messages for them until they expire", name, ", ".join(group.client_ids))
        return finished

    def _stop_procs(self, procs: list[WorkerProc], timeout: float) -> bool:
        for proc in procs:
            proc.stop()
        deadline = time.monotonic() + timeout
        finished = True
        for proc in procs:
            if not proc.wait(max(0.0, deadline - time.monotonic())):
                log.error("worker %s (pid %d) did not stop within %.0fs; killing it (the broker redelivers what "
                          "it had not acknowledged)", proc.job.label, proc.pid, timeout)
                proc.kill()
                finished = False
            elif proc.proc.returncode != 0:
                finished = False
            proc.close()
        return finished

    def resize(self, config: Config) -> list[str]:
        """Groups whose only change in ``config`` is the number of workers (still > 1): start the added
        workers, stop the removed ones (their sessions are drained by ``reconcile``). Return their names."""
        resized = []
        with self._lock:
            for name, group in list(self.groups.items()):
                try:
                    stream = config.stream(name)
                except KeyError:
                    continue
                old, new = group.stream.workers, stream.workers
                if new <= 1 or new == old or key_without_workers(stream, config) != \
                        key_without_workers(group.stream, group.config):
                    continue
                from attic.service import stream_key
                group.stream, group.config = stream, dataclasses.replace(config, streams=(stream,))
                group.key = stream_key(stream, config)
                if new > old:
                    self._take_over(group.client_ids[old:])
                    for n in range(old + 1, new + 1):
                        _probe_lock(config.storage.root / name, f"w{n}")
                        self._start_worker(group, n)
                else:
                    gone = [group.procs.pop(n) for n in range(new + 1, old + 1) if n in group.procs]
                    for n in range(new + 1, old + 1):
                        group.crashes.pop(n, None)
                        group.restart_at.pop(n, None)
                    self._stop_procs(gone, 35.0)
                log.info("stream %s: workers %d → %d", name, old, new)
                resized.append(name)
        return resized

    def event(self, kind: str, detail: str) -> None:
        """An attic_events row in every worker's current file."""
        with self._lock:
            for group in self.groups.values():
                for proc in group.procs.values():
                    proc.send(f"event {kind} {detail}")

    def hurry(self) -> None:
        """A second signal: every worker commits what it has in hand and exits (called from a signal handler)."""
        for group in list(self.groups.values()):
            for proc in list(group.procs.values()):
                proc.send("hurry")
        for drain in list(self.drains.values()):
            if drain.proc is not None:
                drain.proc.send("hurry")

    def failed(self) -> list[str]:
        with self._lock:
            return [name for name, group in self.groups.items() if group.failed]

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every worker and drain (a drain left unfinished is finished at the next start); wait for them."""
        self.stop_intake()
        with self._lock:
            procs = [p for g in self.groups.values() for p in g.procs.values()]
            drains = [d for d in self.drains.values() if d.proc is not None]
            self.groups.clear()
            self.drains.clear()
        finished = self._stop_procs(procs + [d.proc for d in drains], timeout + 5.0)
        for drain in drains:
            if drain.proc.drained.is_set():  # done just before the stop: still take it off the record
                self._forget(drain)
        self._closed.set()
        if self._thread is not None:
            self._thread.join(5.0)
        return finished

    # ------------------------------------------------------------------ sessions

    def reconcile(self, config: Config) -> None:
        """Find the persistent sessions of every MQTT stream that its config no longer uses, and queue
        their drains (each starts once the stream's new subscription is confirmed)."""
        with self._lock:
            self.config = config
            names = {stream.name for stream in config.streams}
            for client_id, drain in list(self.drains.items()):
                if drain.stream not in names and drain.proc is None:
                    del self.drains[client_id]  # the stream was removed: its sessions stay, like its own
            for stream in config.streams:
                if stream.source == "mqtt":
                    self._take_over([s["client_id"] for s in sessions_for(stream)])
            for stream in config.streams:
                if stream.source != "mqtt" or stream.qos == 0:
                    continue
                try:
                    self._reconcile_stream(stream, config.storage.root / stream.name, config)
                except OSError as exc:
                    log.error("stream %s: cannot read or write %s (%s); sessions of removed workers are "
                              "not drained", stream.name, config.storage.root / stream.name / SESSIONS_FILE, exc)
            if self.drains:
                self._ensure_thread()

    def _reconcile_stream(self, stream: StreamConfig, folder: Path, config: Config) -> None:
        wanted = sessions_for(stream)
        recorded = read_sessions(folder)
        if recorded is None:  # no record yet: guess from the lock files of earlier runs
            if stream.workers == 1 and not any(folder.glob(".lock.w*")):
                return  # a plain stream that never had workers: nothing to record
            recorded = guessed_sessions(stream, folder)
        wanted_ids = {s["client_id"] for s in wanted}
        broker = f"{stream.broker.host}:{stream.broker.port}"
        keep = []
        for session in recorded:
            client_id = session["client_id"]
            if client_id in wanted_ids or any(s["client_id"] == client_id for s in keep):
                continue
            if session.get("broker") != broker:
                log.warning("stream %s: session %s is on %s, not on this stream's broker; it is not drained",
                            stream.name, client_id, session.get("broker"))
                continue
            keep.append(session)
            if client_id not in self.drains:
                log.info("stream %s: session %s is no longer used; draining it once the stream is subscribed",
                         stream.name, client_id)
                self.drains[client_id] = Drain(stream.name, session)
        for drain in self.drains.values():  # a drain still queued or running stays recorded
            if drain.stream == stream.name and drain.session not in keep:
                keep.append(drain.session)
        write_sessions(folder, wanted + keep)

    def _ready(self, name: str) -> bool:
        """The stream's current subscription is confirmed: its old sessions can leave without a gap."""
        group = self.groups.get(name)
        if group is not None:
            return any(p.subscribed.is_set() for p in group.procs.values())
        stream = self.in_process().get(name)
        return stream is not None and getattr(stream.source, "subscribed", None) is not None \
            and stream.source.subscribed.is_set()

    def _drain_job(self, drain: Drain) -> Job | None:
        """The job for a drain: the stream's current config, the old session's writer id, client id and topic."""
        group = self.groups.get(drain.stream)
        if group is not None:
            config, stream = group.config, group.stream
        else:
            try:
                stream = self.config.stream(drain.stream)
            except (AttributeError, KeyError):
                return None
            config = dataclasses.replace(self.config, streams=(stream,))
        session = drain.session
        return Job(config, drain.stream, session["writer"], stream.workers, self.run_id,
                   drain={"client_id": session["client_id"], "topic": session["topic"]})

    # ------------------------------------------------------------------ the monitor thread

    def _monitor(self) -> None:
        while not self._closed.wait(0.1):
            try:
                with self._lock:
                    if self._stopping:
                        continue
                    for group in list(self.groups.values()):
                        self._watch_group(group)
                    for client_id, drain in list(self.drains.items()):
                        self._watch_drain(client_id, drain)
            except Exception:  # noqa: BLE001 - the supervisor must keep watching
                log.exception("supervisor: unexpected error; still watching the workers")

    def _watch_group(self, group: Group) -> None:
        now = time.monotonic()
        for n, proc in list(group.procs.items()):
            if proc.stopping:
                continue
            code = proc.proc.poll()
            if code is None:
                continue
            proc.close()
            how = f"signal {-code}" if code < 0 else f"status {code}"
            crashes = [t for t in group.crashes.get(n, []) if now - t < CRASH_WINDOW_S] + [now]
            group.crashes[n] = crashes
            del group.procs[n]
            if code == EXIT_LOCKED:
                group.failed = f"worker w{n} found its files locked"
            elif len(crashes) >= MAX_CRASHES:
                group.failed = f"worker w{n} crashed {len(crashes)} times within {CRASH_WINDOW_S:.0f}s"
            if group.failed:
                log.error("stream %s: %s (last: %s); giving up", group.name, group.failed, how)
                self.wake()
                continue
            delay = RESTART_DELAYS_S[min(len(crashes) - 1, len(RESTART_DELAYS_S) - 1)]
            log.error("stream %s: worker w%d (pid %d) exited with %s; restarting it%s", group.name, n, proc.pid,
                      how, f" in {delay:g}s" if delay else "")
            group.restart_at[n] = now + delay
        for n, at in list(group.restart_at.items()):
            if now >= at and not group.failed:
                del group.restart_at[n]
                self._start_worker(group, n)
                log.info("stream %s: worker w%d restarted (pid %d)", group.name, n, group.procs[n].pid)

    def _watch_drain(self, client_id: str, drain: Drain) -> None:
        if drain.proc is None:
            if time.monotonic() < drain.not_before or not self._ready(drain.stream):
                return
            job = self._drain_job(drain)
            if job is None:
                return
            drain.proc = self._spawn(job)
            log.info("stream %s: draining session %s (pid %d)", drain.stream, client_id, drain.proc.pid)
            return
        code = drain.proc.proc.poll()
        if code is None:
            return
        drain.proc.close()
        if drain.proc.drained.is_set():
            del self.drains[client_id]
            self._forget(drain)
            return
        drain.failures += 1
        delay = min(DRAIN_RETRY_S[0] * 2 ** (drain.failures - 1), DRAIN_RETRY_S[1])
        log.warning("stream %s: draining session %s ended with status %s before it was done; trying again in %gs",
                    drain.stream, client_id, code, delay)
        drain.proc = None
        drain.not_before = time.monotonic() + delay

    @staticmethod
    def _forget(drain: Drain) -> None:
        """A drained session is gone from the broker: take it off the stream's record."""
        folder = drain.proc.job.config.storage.root / drain.stream
        client_id = drain.session["client_id"]
        try:
            write_sessions(folder, [s for s in read_sessions(folder) or [] if s["client_id"] != client_id])
        except OSError as exc:
            log.warning("stream %s: cannot update %s (%s)", drain.stream, folder / SESSIONS_FILE, exc)


# --------------------------------------------------------------------------- the sessions record

def read_sessions(folder: Path) -> list[dict] | None:
    """The sessions recorded for a stream folder, or None when there is no record."""
    try:
        data = json.loads((folder / SESSIONS_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("%s is not valid JSON; ignoring it", folder / SESSIONS_FILE)
        return None
    return [s for s in data.get("sessions", []) if isinstance(s, dict) and "client_id" in s and "topic" in s]


def write_sessions(folder: Path, sessions: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{SESSIONS_FILE}.tmp"
    tmp.write_text(json.dumps({"sessions": sessions}, indent=1) + "\n")
    os.replace(tmp, folder / SESSIONS_FILE)


def guessed_sessions(stream: StreamConfig, folder: Path) -> list[dict]:
    """Sessions earlier runs probably left, from their lock files (``.lock``, ``.lock.w<n>``)."""
    broker = f"{stream.broker.host}:{stream.broker.port}"
    sessions = []
    if (folder / ".lock").exists():
        sessions.append({"writer": None, "client_id": client_id_for(stream.broker.client_id, stream.name),
                         "topic": stream.topic, "broker": broker})
    for path in sorted(folder.glob(".lock.w*")):
        number = path.name[len(".lock.w"):]
        if number.isdigit():
            sessions.append({"writer": f"w{number}",
                             "client_id": client_id_for(stream.broker.client_id, stream.name, int(number)),
                             "topic": shared_topic(stream.name, stream.topic), "broker": broker})
    return sessions
