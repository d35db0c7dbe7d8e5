"""The shared bus in-process, against pymodbus's own server on loopback: failures, reopening, turns."""

from __future__ import annotations

import os
import queue
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from attic.config import load_config
from attic.modbusconfig import ModbusSettings, SerialSettings
from attic.simulate_modbus import SimulatedMeter
from attic.sources.modbus import REOPEN_AFTER, Bus, ModbusSource, PollError
from attic.sources.registers import RegisterSpec, plan_blocks
from tests.support import free_port, wait_for, write_config

SPECS = (RegisterSpec("v", 0, "int16"), RegisterSpec("f", 0, "float32", "input"))
BLOCKS = plan_blocks(SPECS)


class Listener:
    """Stands in for a ModbusSource: counts requests and keeps the connection changes it is told about."""

    def __init__(self):
        self.requests = self.reconnects = 0
        self.changes: list[tuple[bool, str]] = []

    def connection_changed(self, up: bool, detail: str) -> None:
        self.changes.append((up, detail))


@pytest.fixture
def bus():
    meter = SimulatedMeter("127.0.0.1", free_port(), SPECS, units=(1,), values={1: {"v": -7, "f": 1.5}},
                           changing=False).start()
    bus = Bus(ModbusSettings(host="127.0.0.1", port=meter.port, timeout_s=0.1))
    listener = Listener()
    bus.sources.append(listener)
    yield SimpleNamespace(bus=bus, meter=meter, listener=listener)
    bus.client.close()
    meter.stop()


def test_a_gateway_that_stops_answering_is_reopened_after_repeated_failures(bus):
    results, ts_us = bus.bus.read(bus.listener, 1, BLOCKS, 0.5)
    assert [list(r) for r in results] == [[0xFFF9], [0x3FC0, 0]] and ts_us > 0
    assert bus.listener.changes == [(True, f"127.0.0.1:{bus.meter.port}")] and bus.meter.connections == 1
    for attempt in range(REOPEN_AFTER):  # unit 9 never answers: the gateway looks stuck
        with pytest.raises(PollError, match=r"no response within 0.1s"):
            bus.bus.read(bus.listener, 9, BLOCKS, 0.1)
        assert bus.bus.client.connected == (attempt < REOPEN_AFTER - 1)
    assert bus.listener.changes[-1] == (False, f"127.0.0.1:{bus.meter.port}: {REOPEN_AFTER} requests in a row "
                                               "unanswered; reopening the connection")
    bus.bus.read(bus.listener, 1, BLOCKS, 0.5)  # a new connection, and it answers
    assert bus.meter.connections == 2
    assert bus.listener.changes[-1][0] is True and bus.listener.reconnects == 1
    assert bus.listener.requests == 2 + REOPEN_AFTER + 2  # one request per block (the first fails a poll)


def test_a_dead_unit_beside_a_live_one_does_not_reopen_the_connection(bus):
    for _ in range(3 * REOPEN_AFTER):
        with pytest.raises(PollError):
            bus.bus.read(bus.listener, 9, BLOCKS, 0.05)
        results, _ = bus.bus.read(bus.listener, 1, BLOCKS, 0.5)  # each answer shows the gateway is fine
        assert list(results[0]) == [0xFFF9]
    assert bus.meter.connections == 1
    assert [up for up, _ in bus.listener.changes] == [True]


def test_a_refused_connection_is_a_connection_failure(bus):
    port = bus.meter.port
    bus.meter.stop()
    with pytest.raises(PollError, match=f"cannot connect to 127.0.0.1:{port}") as caught:
        bus.bus.read(bus.listener, 1, BLOCKS, 0.2)
    assert caught.value.connection
    assert bus.listener.changes == [(False, f"cannot connect to 127.0.0.1:{port}")]


def test_retries_of_a_failing_unit_wait_for_regular_polls(bus):
    """A probe (a failing unit's retry) never takes the bus while a regular poll waits for it."""
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def holder():
        with bus.bus.turn():
            entered.set()
            release.wait(5)
        order.append("holder")

    def take(name: str, probe: bool, ready: threading.Event):
        ready.set()
        with bus.bus.turn(probe=probe):
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    entered.wait(5)
    for name, probe in (("probe", True), ("regular", False)):  # the probe asks first
        ready = threading.Event()
        threads.append(threading.Thread(target=take, args=(name, probe, ready)))
        threads[-1].start()
        ready.wait(5)
    wait_for(lambda: bus.bus._waiting == 1, 5, message="the regular poll queued")
    release.set()
    for thread in threads:
        thread.join(5)
    assert order[-2:] == ["regular", "probe"]


def test_a_serial_port_that_cannot_be_opened_says_why(tmp_path):
    missing = Bus(ModbusSettings(serial=SerialSettings(str(tmp_path / "ttyUSB9")), timeout_s=0.1))
    listener = Listener()
    missing.sources.append(listener)
    with pytest.raises(PollError, match=r"cannot connect to .*ttyUSB9 \(no such device; is the adapter plugged in\?\)"):
        missing.read(listener, 1, BLOCKS, 0.1)


def test_a_serial_port_without_permission_says_what_to_do(tmp_path):
    listener = Listener()
    locked = tmp_path / "ttyS0"
    locked.write_text("")
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        pytest.skip("running as root: every file is accessible")
    with pytest.raises(PollError, match="permission denied; add the user to the port's group, usually dialout"):
        Bus(ModbusSettings(serial=SerialSettings(str(locked)), timeout_s=0.1)).read(listener, 1, BLOCKS, 0.1)


def test_a_gateway_that_cannot_be_reached_is_tried_once_per_slot_not_once_per_unit(tmp_path):
    port = free_port()  # nothing listens there
    config = load_config(write_config(tmp_path, f"""
        streams:
          - {{name: m, every: 1s, modbus: {{host: 127.0.0.1, port: {port}, units: [1, 2, 3], timeout: 0.2s,
                                            registers: [{{name: v, address: 0}}]}}}}
    """))
    events: list[tuple[str, str]] = []
    source = ModbusSource(config.stream("m"), config, queue.Queue(), lambda kind, detail: events.append((kind, detail)))
    try:
        client, attempts = source.bus.client, []
        connect = client.connect
        client.connect = lambda: attempts.append(1) or connect()
        source._poll_slot(datetime.now(timezone.utc))
        failed = [detail for kind, detail in events if kind == "poll_failed"]
        assert [d.split(":")[0] for d in failed] == ["unit 1 at 127.0.0.1", "unit 2 at 127.0.0.1", "unit 3 at 127.0.0.1"]
        assert all(f"cannot connect to 127.0.0.1:{port} (1 in a row" in d for d in failed), failed
        assert len(attempts) == 1 and source.unit_failed == {1: 1, 2: 1, 3: 1}
    finally:
        source.close()
