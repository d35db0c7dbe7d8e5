"""The Modbus source of one stream: aligned polls, block reads, one row per unit per poll.

Scheduling: one APScheduler ``BackgroundScheduler`` per stream, with a pool of one thread.
Per stream rather than per service because a stream is started, stopped and reloaded on its
own, and because the default shared pool of 10 threads would make the eleventh stream
misfire; a stream's polls never overlap anyway (``max_instances=1``). ``every:`` is an
``IntervalTrigger`` whose ``start_date`` is midnight in the storage time zone, so ``1s``
fires on whole seconds and ``15m`` at :00, :15, ...; ``cron:`` is a ``CronTrigger``. The
misfire grace is explicit (half the interval, at most 30 s). A slot that does not run — too
late, still busy with the previous one, or coalesced away after a stall — becomes a
``poll_missed`` event and a counter.

Bus discipline: streams on one TCP gateway or serial port share one ``Bus`` (one pymodbus
client) and take turns, one unit's requests at a time; separate buses poll in parallel.
A unit that fails gets backoff of its own (1 s doubling to 60 s) and is polled after the
units that answer, with a timeout cut to end before the next slot, so it never delays them
again. After ``REOPEN_AFTER`` failed requests in a row with no answer in between, the
connection is closed and reopened.

pymodbus and APScheduler are imported only here: both change their APIs between releases.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from attic.modbusconfig import ModbusSettings, resolve_device
from attic.record import Record
from attic.sources.registers import BIT_TABLES, Block, decode_block, plan_blocks

log = logging.getLogger("attic.modbus")
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs every failed attempt; we log state changes
logging.getLogger("apscheduler").setLevel(logging.ERROR)  # it logs every run at INFO; we record misses ourselves

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BACKOFF_MAX_S = 60.0
REOPEN_AFTER = 3        # failed requests in a row on one bus before its connection is reopened
PROBE_MARGIN_S = 0.02   # a failing unit's retry must end this long before the next slot
MIN_PROBE_S = 0.05      # ... and gets at least this long, or waits for a slot with more room
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure",
              5: "acknowledge", 6: "device busy", 10: "gateway path unavailable",
              11: "gateway target failed to respond"}
EventSink = Callable[[str, str], None]


def to_us(moment: datetime) -> int:
    """Exact µs since the epoch (``timestamp()`` would round through a float)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def storage_tz(name: str) -> tzinfo:
    if name == "utc":
        return timezone.utc
    if name == "local":
        from tzlocal import get_localzone  # an APScheduler dependency; knows DST rules, unlike astimezone()
        return get_localzone()
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


class Schedule:
    """The stream's slots: an APScheduler trigger plus the arithmetic to name a poll's slot."""

    def __init__(self, every_s: float | None, cron_fields: tuple | None, tz: tzinfo):
        if every_s:
            today = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
            self.trigger: Any = IntervalTrigger(seconds=every_s, start_date=today, timezone=tz)
            self.grace_s = max(1, min(int(every_s / 2), 30))  # APScheduler takes whole seconds only
        else:
            self.trigger = CronTrigger(timezone=tz, **dict(cron_fields or ()))
            self.grace_s = 30

    def slot_at(self, now: datetime) -> datetime | None:
        """The slot a poll running at ``now`` serves: the latest one not after ``now`` and at most the misfire
        grace before it (APScheduler runs a job no later than that), else None."""
        slot = self.trigger.get_next_fire_time(None, now - timedelta(seconds=self.grace_s))
        if slot is None or slot > now:
            return None
        while (later := self.next_after(slot)) is not None and later <= now:
            slot = later
        return slot

    def next_after(self, slot: datetime) -> datetime:
        return self.trigger.get_next_fire_time(slot, slot)

    def between(self, first: datetime, last: datetime, limit: int = 10_000) -> list[int]:
        """Slots strictly between two slots (at most ``limit`` of them), in µs."""
        slots: list[int] = []
        moment = self.next_after(first)
        end_us = to_us(last) - 500  # float rounding in the trigger may land a µs off
        while moment is not None and to_us(moment) < end_us and len(slots) < limit:
            slots.append(to_us(moment))
            moment = self.next_after(moment)
        return slots


class PollError(Exception):
    """A unit's poll failed; ``connection`` says whether the link itself is in doubt."""

    def __init__(self, message: str, connection: bool = False):
        super().__init__(message)
        self.connection = connection


class Bus:
    """One pymodbus client for a TCP gateway or serial port, shared by every stream on it.

    ``turn()`` hands the bus to one unit's requests at a time; retries of failing units
    (``probe=True``) wait while any regular poll is waiting, so a dead unit goes last.
    """

    def __init__(self, settings: ModbusSettings):
        self.address = settings.address
        self.serial = settings.serial is not None
        if settings.serial is not None:
            s = settings.serial
            self.client: Any = ModbusSerialClient(s.port, baudrate=s.baudrate, parity=s.parity, stopbits=s.stopbits,
                                                  bytesize=s.bytesize, timeout=settings.timeout_s, retries=0)
        else:
            self.client = ModbusTcpClient(settings.host, port=settings.port, timeout=settings.timeout_s, retries=0)
        self.sources: list[ModbusSource] = []
        self.up: bool | None = None   # None until the first answer or connection error
        self.failures = 0             # failed requests in a row, any unit
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = 0

    @contextmanager
    def turn(self, probe: bool = False):
        with self._cond:
            self._waiting += not probe
            while self._busy or (probe and self._waiting):
                self._cond.wait()
            self._waiting -= not probe
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def read(self, source: ModbusSource, unit: int, blocks: tuple[Block, ...], timeout_s: float,
             probe: bool = False) -> tuple[list, int]:
        """Read every block of one unit; return (what each request returned, arrival time of the last in µs)."""
        with self.turn(probe):
            self.client.comm_params.timeout_connect = timeout_s  # the one client serves streams with their own timeouts
            try:
                results = []
                for block in blocks:
                    source.requests += 1
                    results.append(self._request(unit, block, timeout_s))
            except PollError as exc:
                self._failed(exc)
                raise
            ts_us = time.time_ns() // 1000
            self.failures = 0
            if not self.up:
                self._state(True, f"{self.address}")
            return results, ts_us

    def _request(self, unit: int, block: Block, timeout_s: float) -> list:
        client = self.client
        read = {"holding": client.read_holding_registers, "input": client.read_input_registers,
                "coil": client.read_coils, "discrete": client.read_discrete_inputs}[block.table]
        try:
            response = read(block.address, count=block.count, device_id=unit)
        except ConnectionException:
            client.close()
            raise PollError(f"cannot connect to {self.address}{self._why()}" if self.up is not True
                            else f"connection to {self.address} lost", connection=True) from None
        except ModbusIOException:
            raise PollError(f"no response within {timeout_s:g}s") from None
        except (ModbusException, OSError) as exc:
            client.close()
            raise PollError(f"{self.address}: {exc}", connection=True) from None
        if response.isError():
            code = getattr(response, "exception_code", 0)
            raise PollError(f"answered exception {code} ({EXCEPTIONS.get(code, 'unknown')}) to a read of "
                            f"{block.table} {block.address}-{block.address + block.count - 1}")
        return response.bits[:block.count] if block.table in BIT_TABLES else response.registers

    def _why(self) -> str:
        """For a serial port that cannot be opened, the likely reason (pymodbus keeps it to itself)."""
        if not self.serial or "://" in self.address:
            return ""
        if not os.path.exists(self.address):
            return " (no such device; is the adapter plugged in?)"
        if not os.access(self.address, os.R_OK | os.W_OK):
            return " (permission denied; add the user to the port's group, usually dialout)"
        return ""

    def _failed(self, exc: PollError) -> None:
        self.failures += 1
        if exc.connection:
            if self.up is not False:
                self._state(False, str(exc))
        elif self.failures >= REOPEN_AFTER and self.client.connected:
            self.client.close()  # a gateway stuck on a half-open connection often recovers on a new one
            self.failures = 0
            self._state(False, f"{self.address}: {REOPEN_AFTER} requests in a row unanswered; reopening the "
                        "connection")

    def _state(self, up: bool, detail: str) -> None:
        """Log a connection change once and record it in every stream on this bus."""
        was, self.up = self.up, up
        for source in list(self.sources):
            if up and was is False:
                source.reconnects += 1
            source.connection_changed(up, detail)


_BUSES: dict[tuple, Bus] = {}
_BUSES_LOCK = threading.Lock()


def _bus_key(settings: ModbusSettings) -> tuple:
    if settings.serial is not None:
        return ("serial", settings.serial.port)
    return ("tcp", (settings.host or "").lower(), settings.port)


def attach(settings: ModbusSettings, source: ModbusSource) -> Bus:
    """The shared bus for these settings (created on first use)."""
    with _BUSES_LOCK:
        bus = _BUSES.get(_bus_key(settings))
        if bus is None:
            bus = _BUSES[_bus_key(settings)] = Bus(settings)
        bus.sources.append(source)
        return bus


def detach(settings: ModbusSettings, source: ModbusSource) -> None:
    """Leave the bus; the last stream to leave closes its client."""
    with _BUSES_LOCK:
        bus = _BUSES.get(_bus_key(settings))
        if bus is None or source not in bus.sources:
            return
        bus.sources.remove(source)
        if bus.sources:
            return
        del _BUSES[_bus_key(settings)]
    with bus.turn():
        bus.client.close()


@dataclass
class UnitState:
    failures: int = 0        # failed polls in a row
    next_try_us: int = 0     # backoff: no retry before this slot
    since_us: int = 0        # first failure of the current run of failures


class ModbusSource:
    """Polls one stream's units on its schedule and puts one Record per unit per poll on the queue."""

    def __init__(self, stream: Any, config: Any, records: queue.Queue, event: EventSink):
        settings: ModbusSettings = stream.modbus
        self.name = stream.name
        self.settings = settings
        self.units = settings.units
        self.queue = records
        self.event = event
        device = resolve_device(settings, config.devices_dir, config.path.resolve().parent)
        self.blocks = plan_blocks(device.registers, device.max_block, device.max_gap)
        self.names = [spec.name for spec in device.registers]
        self.types = {spec.name: spec.sql_type for spec in device.registers} | {"scheduled_us": "INTEGER"}
        self.topics = {unit: f"modbus/{stream.name}/{unit}" for unit in self.units}
        self.tz = storage_tz(config.storage.timezone)
        self.schedule = Schedule(stream.every_s, settings.cron_fields, self.tz)
        self.what = f"every {stream.every_s:g}s" if stream.every_s else f"cron {stream.cron!r}"
        self.received = self.polls = self.requests = self.reconnects = self.dropped = 0
        self.poll_failed = self.poll_missed = 0
        self.unit_failed = {unit: 0 for unit in self.units}
        self.state = {unit: UnitState() for unit in self.units}
        self._reported: set[int] = set()  # missed slots already recorded from scheduler events
        self._last_slot: datetime | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = False
        self.bus = attach(settings, self)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1, pool_kwargs={"thread_name_prefix": f"attic-poll-{self.name}"})},
            timezone=self.tz)
        self.scheduler.add_listener(self._scheduler_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        self.scheduler.add_job(self._poll, self.schedule.trigger, id=self.name, name=f"poll {self.name}",
                               coalesce=True, max_instances=1, misfire_grace_time=self.schedule.grace_s)
        self.scheduler.start()
        self._started = True
        log.info("stream %s: polling unit(s) %s at %s %s: %d values in %d request(s) per unit", self.name,
                 ", ".join(map(str, self.units)), self.settings.address, self.what, len(self.names), len(self.blocks))

    def stop_intake(self) -> None:
        """No new polls; a running poll stops after its current unit (bounded by one timeout)."""
        self._stopping.set()
        if self._started:
            self._started = False
            self.scheduler.shutdown(wait=True)

    def close(self) -> None:
        self.stop_intake()
        detach(self.settings, self)

    def counters(self) -> dict[str, int]:
        """Totals for the self-report (log line and attic_stats): polls, requests, failures (per unit with
        several units) and missed slots."""
        counts = {"polls": self.polls, "requests": self.requests, "poll_failed": self.poll_failed,
                  "poll_missed": self.poll_missed}
        if len(self.units) > 1:
            counts.update({f"poll_failed_unit_{unit}": n for unit, n in self.unit_failed.items()})
        return counts

    # ------------------------------------------------------------------ polling

    def _poll(self) -> None:
        try:
            self._poll_slot(datetime.now(self.tz))
        except Exception:  # noqa: BLE001 - a bug in one poll must not end the schedule
            log.exception("stream %s: poll failed unexpectedly; the next slot polls again", self.name)

    def _poll_slot(self, now: datetime) -> None:
        slot = self.schedule.slot_at(now)
        if slot is None:  # APScheduler runs a job within the grace of its slot; only a clock step gets here
            log.warning("stream %s: a poll started at %s matches no slot (did the clock jump?); skipped", self.name,
                        now.isoformat(timespec="milliseconds"))
            return
        slot_us = to_us(slot)
        self._note_gap(slot)
        self.polls += 1
        deadline_us = to_us(self.schedule.next_after(slot)) - int(PROBE_MARGIN_S * US)
        unreachable = None  # the bus could not be reached in this slot: the other units are not tried again
        for unit in sorted(self.units, key=lambda u: self.state[u].failures > 0):  # answering units first
            state = self.state[unit]
            if self._stopping.is_set():
                return
            if state.failures and slot_us < state.next_try_us:
                continue
            if unreachable is not None:
                self._unit_failed(unit, slot_us, unreachable)
                continue
            timeout_s = self.settings.timeout_s
            if state.failures:
                timeout_s = min(timeout_s, (deadline_us - time.time_ns() // 1000) / US)
                if timeout_s < MIN_PROBE_S:
                    continue  # no room left in this slot; a later one has more
            try:
                results, ts_us = self.bus.read(self, unit, self.blocks, timeout_s, probe=state.failures > 0)
                values: dict[str, Any] = {}
                for block, data in zip(self.blocks, results, strict=True):
                    values.update(decode_block(block, data))
            except (PollError, ValueError) as exc:
                if isinstance(exc, PollError) and exc.connection:
                    unreachable = str(exc)  # each further unit would wait for its own connect timeout
                self._unit_failed(unit, slot_us, str(exc))
                continue
            fields = {name: values[name] for name in self.names}
            fields["scheduled_us"] = slot_us
            self._put(Record(ts_us, self.topics[unit], fields=fields, types=self.types))
            if state.failures:
                self._unit_recovered(unit, ts_us)

    def _put(self, record: Record) -> None:
        while True:  # a blocking put is the backpressure; only a stop gives up on it
            try:
                self.queue.put(record, timeout=0.5)
                self.received += 1
                return
            except queue.Full:
                if self._stopping.is_set():
                    self.dropped += 1
                    log.warning("stream %s: stopping with the queue full; one row not stored", self.name)
                    return

    # ------------------------------------------------------------------ failures, misses, connection

    def _unit_failed(self, unit: int, slot_us: int, why: str) -> None:
        state = self.state[unit]
        state.failures += 1
        self.poll_failed += 1
        self.unit_failed[unit] += 1
        delay_s = min(2.0 ** (state.failures - 1), BACKOFF_MAX_S)
        state.next_try_us = slot_us + int(delay_s * US)
        if state.failures == 1:
            state.since_us = slot_us
            log.warning("stream %s: unit %d at %s: %s; retrying with backoff up to %gs", self.name, unit,
                        self.settings.address, why, BACKOFF_MAX_S)
        self.event("poll_failed", f"unit {unit} at {self.settings.address}: {why} ({state.failures} in a row; "
                                  f"next try in {delay_s:g}s)")

    def _unit_recovered(self, unit: int, ts_us: int) -> None:
        state = self.state[unit]
        detail = (f"unit {unit} at {self.settings.address} answers again after {state.failures} failed polls "
                  f"({(ts_us - state.since_us) / US:.0f}s)")
        log.info("stream %s: %s", self.name, detail)
        self.event("poll_resumed", detail)
        state.failures = 0

    def connection_changed(self, up: bool, detail: str) -> None:
        """Called by the bus on a connection change (from whichever stream's poll saw it)."""
        if up:
            log.info("stream %s: connected to %s", self.name, detail)
            self.event("connected", detail)
        else:
            log.warning("stream %s: %s; units back off and retry", self.name, detail)
            self.event("disconnected", detail)

    def _scheduler_event(self, event: Any) -> None:
        if event.code == EVENT_JOB_MISSED:
            slots, why = [event.scheduled_run_time], "started later than the misfire grace allows"
        else:
            slots, why = list(event.scheduled_run_times), "the previous poll was still running"
        with self._lock:
            self._reported.update(to_us(slot) for slot in slots)
        self._missed([to_us(slot) for slot in slots], why)

    def _note_gap(self, slot: datetime) -> None:
        """Slots skipped since the last poll that no scheduler event reported (coalesced after a stall)."""
        last, self._last_slot = self._last_slot, slot
        if last is None:
            return
        skipped = self.schedule.between(last, slot)
        with self._lock:
            silent = [s for s in skipped if s not in self._reported]
            self._reported = {s for s in self._reported if s > to_us(slot)}
        if silent:
            self._missed(silent, "the scheduler woke too late and coalesced them")

    def _missed(self, slots_us: list[int], why: str) -> None:
        self.poll_missed += len(slots_us)
        first = datetime.fromtimestamp(slots_us[0] / US, timezone.utc).isoformat(timespec="milliseconds")
        span = first if len(slots_us) == 1 else f"{len(slots_us)} slots from {first}"
        log.warning("stream %s: poll missed (%s): %s", self.name, span, why)
        self.event("poll_missed", f"{span}: {why}")
