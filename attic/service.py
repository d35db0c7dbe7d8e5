"""The running service: builds the streams of a config, handles signals, shuts down in order.

Signal handlers only set flags; all work happens on the main thread after it wakes up.
Shutdown order (the one thing worth keeping from older loggers): stop intake → writers
drain, commit, ack and close → bounded join → disconnect → exit 0. A second SIGTERM/SIGINT
makes writers commit what they hold and stop without draining (unacked messages are
redelivered by the broker at the next start).
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from typing import Any

from attic.config import Config
from attic.stream import Stream

log = logging.getLogger("attic.service")


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
        self._signals = 0

    def start(self) -> None:
        """Start every stream; if one cannot start, stop the ones started and re-raise."""
        try:
            for stream_config in self.config.streams:
                stream = Stream(stream_config, self.config, self.run_id)
                stream.start()
                self.streams[stream.name] = stream
        except BaseException:
            self.stop()
            raise
        self._watch_brokers()
        self._start_reporter()
        log.info("attic running %d stream(s), run %s, files under %s", len(self.streams), self.run_id,
                 self.config.storage.root)

    def _start_reporter(self) -> None:
        from attic.report import Reporter
        self.reporter = Reporter(self.config.report, self.config.broker, lambda: dict(self.streams),
                                 self.run_id, self.config.storage.root)
        self.reporter.start()

    def _watch_brokers(self) -> None:
        """One drop-counter watch per broker, feeding broker_dropped events to its streams."""
        groups: dict[tuple, tuple] = {}
        for stream in self.streams.values():
            broker = stream.config.broker
            if stream.config.source == "mqtt" and broker.dropped_topic:
                key = (broker.host, broker.port, broker.dropped_topic)
                groups.setdefault(key, (broker, []))[1].append(stream.writer.event)
        if groups:
            from attic.sources.mqtt import BrokerDropWatch
        for (_, _, topic), (broker, sinks) in groups.items():
            watch = BrokerDropWatch(broker, topic, sinks, "watch")
            watch.start()
            self.watches.append(watch)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop every stream in order; return False if one did not finish in time."""
        if self.reporter is not None:
            self.reporter.stop()
            self.reporter = None
        for watch in self.watches:
            watch.close()
        self.watches = []
        finished = True
        for stream in self.streams.values():
            stream.source.stop_intake()
        for stream in list(self.streams.values()):
            finished &= stream.stop(timeout=timeout)
        self.streams.clear()
        return finished

    def request_stop(self) -> None:
        """Ask the main loop to stop (thread-safe; what the signal handlers do)."""
        self._signals += 1
        self._stop_requested = True
        if self._signals > 1:
            log.warning("second signal: committing what is in hand and exiting")
            for stream in list(self.streams.values()):
                stream.hurry()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.request_stop())

    def run(self) -> int:
        """Start, wait for a signal, stop. Return the exit status."""
        self.install_signal_handlers()
        self.start()
        failed: list[str] = []
        while not self._stop_requested and not failed:
            self._wake.wait(1.0)
            self._wake.clear()
            failed = [name for name, stream in self.streams.items() if not stream.writer.alive]
        if failed:
            log.error("stream(s) %s failed (see above); stopping so the service manager restarts Attic",
                      ", ".join(failed))
        log.info("stopping: draining queues and closing files")
        finished = self.stop()
        log.info("attic stopped")
        return 0 if finished and not failed else 1
