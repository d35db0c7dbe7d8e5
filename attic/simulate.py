"""Simulated devices publishing realistic telemetry, for ``attic demo``, tests and benchmarks.

Two halves, kept apart so tests can check one without the other:

- ``Fleet`` is pure: given a seed and timestamps it returns the same ``(topic, payload)``
  messages every time — a startup event per device, then per tick either telemetry
  (temperature, humidity, battery drifting plausibly) or, every ``heartbeat_every`` ticks, a
  heartbeat (uptime, cpu, memory). About one message in a hundred is out of range (a sensor
  reporting 127 °C) or malformed (cut short, not UTF-8, a string where a number belongs), so
  filters and ``attic_rejects`` have something to do.
- ``Simulation`` paces the fleet onto a broker through ``attic.sources.mqtt.Publisher`` and
  counts as "sent" only what the broker acknowledged. It speaks MQTT 3.1.1, which every
  broker understands (amqtt speaks nothing else).

Topics come from a template with ``{site}``, ``{device}`` and ``{kind}`` (telemetry,
heartbeat, event); the default puts telemetry on ``sensors/<site>/<device>/telemetry``.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from attic.config import Broker

DEFAULT_TOPIC = "sensors/{site}/{device}/{kind}"
SITES = ("north", "south", "east", "west", "harbour", "depot", "roof", "cellar")
MAX_PENDING = 2000  # unacknowledged messages before the loop waits for the broker


def parse_rate(text: str) -> float:
    """Given ``10``, ``10/s``, ``30/m`` or ``1/h``, return messages per second. Raise ValueError."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:/\s*([smh]))?\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a rate: {text!r} (e.g. 10/s, 30/m, 0.5)")
    return float(match.group(1)) / {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


@dataclass
class Device:
    name: str
    site: str
    base_temperature: float
    temperature: float
    humidity: float
    battery: float
    memory: float
    ticks: int = 0


class Fleet:
    """The messages of ``devices`` simulated devices; no clock, no I/O, deterministic with ``seed``."""

    def __init__(self, devices: int = 100, seed: int | None = None, topic: str = DEFAULT_TOPIC,
                 heartbeat_every: int = 10, anomalies: float = 0.01):
        self.rng = random.Random(seed)
        self.topic = topic
        self.heartbeat_every = heartbeat_every
        self.anomalies = anomalies
        self.counts: Counter[str] = Counter()
        rng = self.rng
        self.devices = []
        for i in range(devices):
            base = rng.uniform(16.0, 26.0)
            self.devices.append(Device(name=f"dev{i + 1:04d}", site=SITES[i % len(SITES)], base_temperature=base,
                                       temperature=base, humidity=rng.uniform(35.0, 60.0),
                                       battery=rng.uniform(3.7, 4.2), memory=rng.uniform(20.0, 40.0)))

    def topic_for(self, device: Device, kind: str) -> str:
        return self.topic.format(site=device.site, device=device.name, kind=kind)

    def startup(self, ts_us: int) -> list[tuple[str, bytes]]:
        """One startup event per device."""
        out = []
        for device in self.devices:
            body = {"ts": ts_us // 1000, "event": "startup", "firmware": f"2.{self.rng.randint(0, 4)}.1",
                    "reason": self.rng.choice(["power_on", "watchdog", "update"])}
            out.append((self.topic_for(device, "event"), _json(body)))
        self.counts["startup"] += len(out)
        return out

    def tick(self, ts_us: int) -> list[tuple[str, bytes]]:
        """One message per device for one tick at ``ts_us``."""
        return [self.message(device, ts_us) for device in self.devices]

    def message(self, device: Device, ts_us: int) -> tuple[str, bytes]:
        """The next message of one device: a heartbeat every ``heartbeat_every`` ticks, else telemetry."""
        rng = self.rng
        device.ticks += 1
        ts_ms = ts_us // 1000
        if device.ticks % self.heartbeat_every == 0:
            device.memory = min(95.0, max(5.0, device.memory + rng.gauss(0, 0.5)))
            body = {"ts": ts_ms, "uptime_s": device.ticks, "cpu": round(rng.betavariate(2, 8) * 100, 1),
                    "memory": round(device.memory, 1), "rssi": rng.randint(-90, -40)}
            self.counts["heartbeat"] += 1
            return self.topic_for(device, "heartbeat"), _json(body)
        # Drift: a random walk pulled back towards the device's own base temperature.
        device.temperature += rng.gauss(0, 0.08) + 0.02 * (device.base_temperature - device.temperature)
        device.humidity = min(100.0, max(0.0, device.humidity + rng.gauss(0, 0.2)))
        device.battery = max(3.0, device.battery - rng.uniform(0, 0.0004))
        body = {"ts": ts_ms, "seq": device.ticks, "temperature": round(device.temperature, 2),
                "humidity": round(device.humidity, 1), "battery": round(device.battery, 3)}
        topic = self.topic_for(device, "telemetry")
        self.counts["telemetry"] += 1
        roll = rng.random()
        if roll < self.anomalies / 2:
            body["temperature"] = rng.choice([127.0, -99.9, 850.0])  # typical sensor fault values
            self.counts["out_of_range"] += 1
        elif roll < self.anomalies:
            self.counts["malformed"] += 1
            return topic, self._malformed(body)
        return topic, _json(body)

    def _malformed(self, body: dict) -> bytes:
        text = _json(body)
        return self.rng.choice([
            text[: len(text) // 2],                                     # cut short
            b"\xff\xfe" + text,                                         # not UTF-8
            text.replace(b'"temperature":', b'"temperature":"ERR",_:'),  # not JSON
            _json({**body, "temperature": "n/a"}),                      # a string for a number
        ])


def _json(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Progress:
    """What a progress display shows; ``sent`` is what the broker acknowledged."""

    sent: int
    errors: int
    pending: int
    elapsed_s: float
    rate: float         # acknowledged per second over the last interval
    announced: int | None


class Simulation:
    """Publishes a Fleet to a broker at ``rate`` messages per second per device."""

    def __init__(self, host: str, port: int, devices: int = 100, rate: float = 10.0, seconds: float | None = None,
                 qos: int = 1, topic: str = DEFAULT_TOPIC, seed: int | None = None, client_id: str | None = None):
        from attic.sources.mqtt import Publisher
        self.address = f"{host}:{port}"
        self.fleet = Fleet(devices, seed, topic)
        self.rate = rate
        self.seconds = seconds
        self.qos = qos
        self.ticks = None if seconds is None else max(0, round(seconds * rate))
        broker = Broker(host=host, port=port, protocol="3.1.1", dropped_topic=None)
        self.publisher = Publisher(broker, client_id or f"attic-simulate-{time.time_ns() % 10**9}")
        self.stopping = threading.Event()
        self.started = 0.0
        self.elapsed_s = 0.0

    @property
    def announced(self) -> int | None:
        """Messages this run will send (None: until stopped)."""
        devices = len(self.fleet.devices)
        return None if self.ticks is None else devices + devices * self.ticks

    def stop(self) -> None:
        """Stop publishing soon (thread-safe; a signal handler may call it)."""
        self.stopping.set()

    def progress(self, last: tuple[float, int] | None = None) -> Progress:
        now = time.monotonic()
        publisher = self.publisher
        then, sent_then = last or (self.started, 0)
        rate = (publisher.acked - sent_then) / (now - then) if now > then else 0.0
        return Progress(publisher.acked, publisher.errors, publisher.pending(), now - self.started, rate,
                        self.announced)

    def run(self, on_progress: Callable[[Progress], None] | None = None, every_s: float = 1.0,
            connect_timeout: float = 10.0, flush_s: float = 30.0) -> Progress:
        """Connect, publish until done or stopped, wait for every acknowledgement; return the totals.

        Raise ConnectionError when the broker does not accept us within ``connect_timeout``.
        """
        publisher = self.publisher
        if not publisher.start(connect_timeout):
            publisher.close()
            why = publisher.last_error or f"no answer in {connect_timeout:g}s"
            raise ConnectionError(f"cannot connect to the broker at {self.address} ({why})")
        self.started = time.monotonic()
        last = (self.started, 0)
        next_report = self.started + every_s
        try:
            for topic, payload in self.fleet.startup(time.time_ns() // 1000):
                publisher.publish(topic, payload, self.qos)
            n = len(self.fleet.devices)
            tick = 0
            while (self.ticks is None or tick < self.ticks) and not self.stopping.is_set():
                for i, device in enumerate(self.fleet.devices):
                    due = self.started + (tick + i / n) / self.rate
                    while not self.stopping.is_set():
                        now = time.monotonic()
                        if on_progress and now >= next_report:
                            on_progress(self.progress(last))
                            last, next_report = (now, publisher.acked), now + every_s
                        wait = max(due - now, 0.002 if publisher.pending() > MAX_PENDING else 0)
                        if not wait:
                            break
                        self.stopping.wait(min(wait, next_report - now, 0.25))  # pacing, not syncing
                    if self.stopping.is_set():
                        break
                    publisher.publish(*self.fleet.message(device, time.time_ns() // 1000), qos=self.qos)
                tick += 1
            publisher.flush(flush_s)  # "sent" means the broker has it
        finally:
            self.elapsed_s = time.monotonic() - self.started
            publisher.close()
        return self.progress()


def progress_line(p: Progress) -> str:
    of = f"/{p.announced}" if p.announced is not None else ""
    return (f"simulate: {p.elapsed_s:5.1f}s  sent {p.sent}{of}  {p.rate:7.0f} msg/s  "
            f"errors {p.errors}  waiting for the broker {p.pending}")


def summary(sim: Simulation, p: Progress) -> str:
    """The closing line: what was sent, in what mix, and what went wrong."""
    counts = sim.fleet.counts
    rate = p.sent / sim.elapsed_s if sim.elapsed_s else 0.0
    of = f" of {p.announced}" if p.announced is not None else ""
    return (f"sent {p.sent}{of} messages in {sim.elapsed_s:.1f}s ({rate:.0f}/s) to {sim.address}, QoS {sim.qos}: "
            f"{counts['startup']} startup events, {counts['telemetry']} telemetry "
            f"({counts['out_of_range']} out of range, {counts['malformed']} malformed), "
            f"{counts['heartbeat']} heartbeats; {p.errors} errors")
