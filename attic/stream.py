"""A stream: one source (MQTT subscription or Modbus poller) feeding one writer through one queue."""

from __future__ import annotations

import json
import logging
import queue
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from attic import __version__
from attic.config import Config, StreamConfig, settings_json
from attic.store import RotatingStore
from attic.writer import Writer

log = logging.getLogger("attic.stream")


def build_chain(stream: StreamConfig, config: Config) -> Any:
    """The stream's filter chain, or None when it has no filters (the writer's fast path)."""
    if not stream.filters:
        return None
    from attic.filters import load_chain
    return load_chain(stream.filters, config.filters_dir)


def earlier_topic(store: RotatingStore) -> str | None:
    """The topic in the stream config of this writer's newest file (an earlier run or config), if any."""
    def order(path: Path) -> tuple[int, int]:
        parts = path.name.split(".")[:-1]
        return int(parts[0]), int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    newest = max((p for p in store.own_files() if p.name.split(".")[0].isdigit()), key=order, default=None)
    if newest is None:
        return None
    try:
        conn = sqlite3.connect(f"file:{newest}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM attic_meta WHERE key = 'stream_config'").fetchone()
        finally:
            conn.close()
        return json.loads(row[0]).get("topic") if row else None
    except (sqlite3.Error, ValueError, AttributeError):
        return None  # a damaged or foreign file: nothing to compare with


class Stream:
    """Owns a stream's queue, store, writer and source, and starts and stops them in order."""

    def __init__(self, stream: StreamConfig, config: Config, run_id: str, worker: int | None = None,
                 workers: int = 1):
        self.config = stream
        self.name = stream.name
        storage = config.storage
        self.queue: queue.Queue = queue.Queue(storage.queue)
        writer_id = f"w{worker}" if worker is not None else None
        meta = {
            "stream": stream.name, "source": stream.source, "host": socket.gethostname(),
            "writer_id": writer_id, "attic_version": __version__, "run_id": run_id,
            "rotate_s": storage.rotate_s, "timezone": storage.timezone, "durability": storage.durability,
            "stream_config": settings_json(stream),
        }
        self.store = RotatingStore(storage.root, stream.name, storage.rotate_s, storage.timezone,
                                   storage.durability, {k: v for k, v in meta.items() if v is not None},
                                   writer_id, keep_s=storage.keep_s)
        self.writer = Writer(stream.name, self.store, self.queue, commit_every_s=storage.commit_every_s,
                             commit_rows=storage.commit_rows, chain=build_chain(stream, config))
        self.store.on_event = self.writer.event  # retention events
        self.started = time.monotonic()  # the report's first rates count from here
        if stream.source == "mqtt":
            from attic.sources.mqtt import MqttSource
            self.source = MqttSource(stream.name, stream.topic, stream.qos, stream.broker, self.queue,
                                     self.writer.event, stream.stall_after_s, worker, workers)
            if self.source.manual_ack:
                self.writer.ack = self.source.ack
            earlier = earlier_topic(self.store)
            if self.source.persistent and earlier is not None and earlier != stream.topic:
                self.source.unsubscribe = [f"$share/attic-{stream.name}/{earlier}" if workers > 1 else earlier]
        else:
            from attic.sources.modbus import ModbusSource
            self.source = ModbusSource(stream, config, self.queue, self.writer.event)

    def start(self) -> None:
        """Lock the folder, start the writer (it recovers files first), then the source."""
        self.store.lock()
        self.started = time.monotonic()
        self.writer.start()
        self.writer.event("start", f"attic {__version__} pid {__import__('os').getpid()}")
        self.source.start()

    def stop(self, timeout: float = 30.0, hurry: bool = False, why: str = "stop") -> bool:
        """Stop intake, let the writer drain and commit (acks go out), then disconnect."""
        started = time.monotonic()
        self.source.stop_intake()
        self.writer.event("stop", why)
        finished = self.writer.stop(timeout=timeout, hurry=hurry)
        self.source.close()
        log.info("stream %s: stopped in %.1fs (%d rows written)", self.name, time.monotonic() - started,
                 self.writer.stats.written)
        return finished

    def hurry(self) -> None:
        self.writer.hurry()
