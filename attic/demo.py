"""``attic demo``: Attic working end to end in one command, with nothing installed but Python.

It starts a private broker (Mosquitto if installed, else amqtt; see ``attic.demo_broker``),
a simulated Modbus meter, Attic itself in this process with a config written to
``<root>/attic-demo.yaml`` (so the user can copy it), and a simulated fleet; shows live
progress per stream; then stops everything in the order that loses nothing — simulator,
Attic (drains, commits, closes), meter, broker — and prints what is on disk and how to read
it. Every process it started is stopped by its PID, also on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TextIO

from attic.config import load_config
from attic.demo_broker import AmqttBroker, start_broker
from attic.mosquitto import free_port, wait_for
from attic.preflight import preflight
from attic.service import Service
from attic.simulate import Simulation, summary

DEVICES, RATE = 20, 5.0  # 100 messages/s: lively, and easy for the pure-Python broker

CONFIG = """\
# Written by `attic demo`: the config it ran with. Copy it, point `broker` at your broker,
# and run `attic check -c attic-demo.yaml`, then `attic run -c attic-demo.yaml`.
broker:
  host: 127.0.0.1
  port: {broker_port}
  protocol: "{protocol}"{dropped}
storage:
  root: logs            # relative to this file
  rotate: 10s           # short, to show rotation; 1h or 1d in real use
report:
  every: 10s
streams:
  - name: tele          # temperature, humidity, battery as typed columns
    topic: sensors/+/+/telemetry
    qos: 1
    filters:
      - json_fields: {{fields: {{temperature: real, humidity: real, battery: real}}}}
      - topic_fields: {{levels: {{1: site, 2: device}}}}
      - range_check: {{field: temperature, min: -40, max: 85}}   # else to attic_rejects
  - name: everything    # every message, raw
    topic: "#"
    qos: 1
  - name: meter         # a simulated Eastron SDM630, polled on whole seconds
    every: 1s
    modbus: {{host: 127.0.0.1, port: {meter_port}, unit: 1, device: eastron_sdm630, timeout: 500ms}}
"""


def write_config(root: Path, broker_port: int, amqtt: bool, meter_port: int) -> Path:
    """Write the demo's config into ``root`` and return its path."""
    dropped = "\n  dropped_topic: null   # amqtt publishes no drop counter" if amqtt else ""
    path = root / "attic-demo.yaml"
    path.write_text(CONFIG.format(broker_port=broker_port, protocol="3.1.1" if amqtt else "5", dropped=dropped,
                                  meter_port=meter_port))
    return path


def recorded(root: Path, stream: str, kind: str, since_us: int) -> bool:
    """Whether Attic recorded an event of ``kind`` in the stream's files since ``since_us``."""
    for path in (root / stream).glob("*/*.sqlite"):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                if conn.execute("SELECT 1 FROM attic_events WHERE kind = ? AND ts_us >= ?",
                                (kind, since_us)).fetchone():
                    return True
            finally:
                conn.close()
        except sqlite3.Error:
            pass  # a file being created right now
    return False


class Demo:
    """One demo run; ``run()`` returns the exit status."""

    def __init__(self, seconds: float = 30.0, root: str | Path = "attic-demo", out: TextIO = sys.stdout,
                 err: TextIO = sys.stderr):
        self.seconds = seconds
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.out, self.err = out, err
        self.stop = threading.Event()
        self.signals = 0
        self.broker = self.meter = self.service = self.sim = None
        self.sim_thread: threading.Thread | None = None
        self.sim_error: BaseException | None = None
        self.tty = err.isatty()
        self.drawn = 0  # progress lines on screen to redraw
        self.t0 = 0.0   # when the fleet started

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _signal(self, signum: int, frame: object) -> None:
        self.signals += 1
        self.stop.set()
        if self.signals > 1 and self.service is not None:
            for stream in list(self.service.streams.values()):
                stream.hurry()  # a second Ctrl-C: commit what is in hand and go

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._signal)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            log = logging.FileHandler(self.root / "attic.log")
        except OSError as exc:
            raise OSError(f"--root {self.root}: cannot write there ({exc.strerror}); give a folder you can "
                          "write, e.g. --root ./attic-demo") from None
        log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[log], force=True)
        try:
            self._start()
            self._watch()
        finally:
            self._shutdown()
        return self._summary()

    def _start(self) -> None:
        from attic.simulate_modbus import serve_meter
        self.broker = start_broker(self.root / "broker")
        amqtt = isinstance(self.broker, AmqttBroker)
        self.say(f"broker: {'amqtt (pure Python)' if amqtt else 'mosquitto'} on 127.0.0.1:{self.broker.port}")
        meter_port = free_port()
        self.meter = serve_meter("127.0.0.1", meter_port, "eastron_sdm630")
        self.say(f"meter:  simulated Eastron SDM630 (Modbus TCP) on 127.0.0.1:{meter_port}")
        path = write_config(self.root, self.broker.port, amqtt, meter_port)
        config = load_config(path)
        preflight(config)
        self.say(f"attic:  {path} -> files under {self.logs}")
        started_us = time.time_ns() // 1000
        self.service = Service(config)
        self.service.start()
        mqtt = [s.name for s in config.streams if s.source == "mqtt"]
        wait_for(lambda: self.stop.is_set() or all(recorded(self.logs, s, "subscribed", started_us) for s in mqtt),
                 20, message="attic subscribing")
        self.sim = Simulation("127.0.0.1", self.broker.port, DEVICES, RATE, seed=1)
        self.sim_thread = threading.Thread(target=self._simulate, name="attic-demo-simulate")
        self.sim_thread.start()
        self.say(f"fleet:  {DEVICES} simulated devices, {RATE:g} messages/s each, for {self.seconds:g}s "
                 "(Ctrl-C stops early)\n")

    def _simulate(self) -> None:
        try:
            self.sim.run(flush_s=5.0)
        except BaseException as exc:  # noqa: BLE001 - reported by the summary
            self.sim_error = exc
            self.stop.set()

    def _watch(self) -> None:
        self.t0 = time.monotonic()
        deadline = self.t0 + self.seconds
        every = 0.5 if self.tty else 5.0
        while not self.stop.wait(max(0.0, min(every, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
            self._draw()

    def _draw(self) -> None:
        sim = self.sim
        lines = [f"{time.monotonic() - self.t0:5.1f}s of {self.seconds:g}s   simulator sent {sim.publisher.acked if sim else 0}, "
                 f"errors {sim.publisher.errors if sim else 0}"]
        for name, stream in self.service.streams.items():
            stats = stream.writer.stats
            files = len(list((self.logs / name).glob("*/*.sqlite")))
            lines.append(f"  {name:<11} received {stream.source.received:>7}   written {stats.written:>7}   "
                         f"rejected {stats.rejected:>4}   files {files:>3}")
        if self.tty:
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            print(up + "".join(f"{line}\x1b[K\n" for line in lines), end="", file=self.err, flush=True)
            self.drawn = len(lines)
        else:
            print("\n".join(lines), file=self.err, flush=True)

    def _shutdown(self) -> None:
        """Stop in the order that loses nothing: intake first, then Attic, then what it listens to."""
        if self.sim is not None:
            self.sim.stop()
            self.sim_thread.join(15)
        if self.service is not None:
            self._settle()
            if self.t0:
                self._draw()  # the final figures
            self.service.stop()
        for part in (self.meter, self.broker):
            if part is not None:
                part.stop()

    def _settle(self, quiet_s: float = 0.5, timeout: float = 5.0) -> None:
        """Give the broker time to hand Attic what the simulator sent: until nothing arrives for a while."""
        def counts() -> tuple:
            return tuple(s.source.received for s in self.service.streams.values() if s.config.source == "mqtt")
        last, since = counts(), time.monotonic()

        def quiet() -> bool:
            nonlocal last, since
            now = counts()
            if now != last:
                last, since = now, time.monotonic()
            return self.signals > 1 or time.monotonic() - since >= quiet_s
        try:
            wait_for(quiet, timeout, interval=0.05)
        except AssertionError:
            pass  # still arriving: stop anyway; the broker keeps the rest for the next run

    def _summary(self) -> int:
        """Print what is on disk and how to read it; return 0 if every stream has rows."""
        say, sim = self.say, self.sim
        if sim is not None:
            say("\n" + summary(sim, sim.progress()))
        if self.sim_error is not None:
            say(f"simulator failed: {self.sim_error}")
        logs = shown(self.logs)
        say(f"\nfiles under {logs}/ (config: {shown(self.root / 'attic-demo.yaml')}, "
            f"log: {shown(self.root / 'attic.log')}):")
        totals = {}
        for folder in sorted(p for p in self.logs.iterdir() if p.is_dir()) if self.logs.is_dir() else []:
            files = sorted(folder.glob("*/*.sqlite"))
            counts = [table_counts(path) for path in files]
            totals[folder.name] = rows = sum(c[0] for c in counts)
            rejects = sum(c[1] for c in counts)
            say(f"  {folder.name}/  {rows} rows in {len(files)} file(s)"
                + (f", {rejects} rejected by filters" if rejects else ""))
            for path, (n, _) in zip(files, counts, strict=True):
                say(f"    {path.relative_to(folder)}  {n:>6} rows")
        query = ["attic", "query", logs, "--stream", "tele", "--columns", "site,device,temperature,humidity",
                 "--limit", "5"]
        say(f"\nread them back:\n  {shlex.join(query)}")
        done = subprocess.run([sys.executable, "-m", *query], capture_output=True, text=True, timeout=60)
        say(textwrap.indent((done.stdout + done.stderr).rstrip(), "    "))
        say(f"  attic query {logs} --stream tele --table attic_rejects --columns stage,error --limit 5\n"
            f"  attic files {logs}\n"
            f"  sqlite3 {latest(self.logs, 'meter')} 'SELECT * FROM messages LIMIT 5'")
        say("\nor in Python (pip install 'attic[pandas]'):\n"
            "  import attic\n"
            f"  df = attic.read({logs!r}, stream='tele')\n"
            "  df.groupby('site').temperature.describe()\n"
            f"  meter = attic.read({logs!r}, stream='meter')")
        empty = [name for name in ("tele", "everything", "meter") if not totals.get(name)]
        if self.sim_error is not None or (empty and not self.signals):
            say(f"\nError: {'no rows for ' + ', '.join(empty) if empty else 'the simulator failed'}; "
                f"see {shown(self.root / 'attic.log')}")
            return 1
        return 0


def shown(path: Path) -> str:
    """``path`` as the user would type it: relative when below the current folder."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def table_counts(path: Path) -> tuple[int, int]:
    """(messages, attic_rejects) rows in one file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return tuple(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[return-value]
                     for table in ("messages", "attic_rejects"))
    finally:
        conn.close()


def latest(logs: Path, stream: str) -> str:
    files = sorted((logs / stream).glob("*/*.sqlite"))
    return shown(files[-1] if files else logs / stream / "<day>" / "<start>.sqlite")
