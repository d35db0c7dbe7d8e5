"""End to end: `attic run` polling pymodbus's own TCP server on loopback, read back from the files it leaves."""

from __future__ import annotations

import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import datetime

import pytest

from attic.modbusconfig import load_device_map
from attic.simulate_modbus import SimulatedMeter, device_registers
from tests.support import AtticProcess, all_rows, free_port, stream_files, wait_for, write_config

US = 1_000_000

# Every type, both word orders, both byte orders, all four tables, scale and offset.
REGISTERS = """
    - {name: i16, address: 0, type: int16}
    - {name: u16, address: 1, type: uint16}
    - {name: i32, address: 2, type: int32}
    - {name: i32_le, address: 4, type: int32, word_order: little}
    - {name: u32, address: 6, type: uint32}
    - {name: u32_le, address: 8, type: uint32, word_order: little}
    - {name: i64, address: 10, type: int64}
    - {name: i64_le, address: 14, type: int64, word_order: little}
    - {name: u64, address: 18, type: uint64}
    - {name: u64_le, address: 22, type: uint64, word_order: little, byte_order: little}
    - {name: f32, address: 26, type: float32}
    - {name: f32_le, address: 28, type: float32, word_order: little}
    - {name: f32_bl, address: 30, type: float32, byte_order: little}
    - {name: f64, address: 32, type: float64}
    - {name: f64_le, address: 36, type: float64, word_order: little, byte_order: little}
    - {name: scaled, address: 40, type: int16, scale: 0.1, offset: -40}
    - {name: scaled_int, address: 41, type: uint16, scale: 10}
    - {name: label, address: 42, type: string, count: 5}
    - {name: in_f32, address: 0, type: float32, table: input}
    - {name: in_u16, address: 7, type: uint16, table: input}
    - {name: relay, address: 3, type: bool, table: coil}
    - {name: alarm, address: 0, type: bool, table: discrete}
    - {name: door, address: 1, type: bool, table: discrete}
"""
VALUES = {
    1: {"i16": -12345, "u16": 54321, "i32": -123456789, "i32_le": -123456789, "u32": 4_000_000_000,
        "u32_le": 4_000_000_000, "i64": -(2 ** 62) - 7, "i64_le": -(2 ** 62) - 7, "u64": 2 ** 63 + 2 ** 40,
        "u64_le": 2 ** 63 - 1, "f32": 230.1, "f32_le": 230.1, "f32_bl": -0.015625, "f64": -1234.5678,
        "f64_le": 6.02214076e23, "scaled": 190.5, "scaled_int": 1230, "label": "ATTIC-01", "in_f32": 49.99,
        "in_u16": 7, "relay": 1, "alarm": 0, "door": 1},
}
VALUES[2] = {**VALUES[1], "i16": 32767, "u64": 0, "f32_le": -1.5, "label": "second", "relay": 0, "alarm": 1}
SQL_TYPES = {"i16": "integer", "u64_le": "integer", "f32": "real", "scaled": "real", "scaled_int": "integer",
             "label": "text", "relay": "integer"}


def register_specs(tmp_path, text: str = REGISTERS):
    path = tmp_path / "test_device.yaml"
    path.write_text("registers:\n" + textwrap.indent(textwrap.dedent(text).strip() + "\n", "  "))
    return load_device_map(path).registers


@pytest.fixture
def meters():
    """Start simulated meters on free loopback ports; stop them all at the end."""
    started: list[SimulatedMeter] = []

    def start(registers, units=(1,), **options) -> SimulatedMeter:
        meter = SimulatedMeter("127.0.0.1", free_port(), registers, units, **options).start()
        started.append(meter)
        return meter

    yield start
    for meter in started:
        meter.stop()


def rows_of(root, stream, columns="ts_us, topic, scheduled_us"):
    return all_rows(root, stream, f"SELECT {columns} FROM messages ORDER BY scheduled_us, topic")


def events(root, stream, kind=None):
    found = all_rows(root, stream, "SELECT ts_us, kind, detail FROM attic_events ORDER BY ts_us")
    return [e for e in found if kind is None or e[1] == kind]


def stats(root, stream) -> dict[str, float]:
    """The latest value of each self-report key in the stream's attic_stats."""
    return dict(all_rows(root, stream, "SELECT key, value FROM attic_stats ORDER BY ts_us"))


def count_events(root, stream, kind) -> int:
    """For polling while Attic runs: 0 while a file is still being created."""
    try:
        return len(events(root, stream, kind))
    except sqlite3.Error:
        return 0


def count_rows(root, stream, topic, after_us=0):
    """For polling while Attic runs: rows of ``topic`` scheduled after ``after_us``; 0 while a file is being created."""
    try:
        return sum(1 for row in rows_of(root, stream) if row[1] == topic and row[2] > after_us)
    except sqlite3.Error:
        return 0


def assert_every_slot(slots: list[int]) -> None:
    assert slots, "no rows"
    assert all(s % US == 0 for s in slots), slots  # whole-second slots
    assert slots == list(range(slots[0], slots[-1] + US, US)), slots  # one per second, none missing


def test_one_row_per_unit_per_second_exactly_decoded_on_time(tmp_path, meters):
    meter = meters(register_specs(tmp_path), units=(1, 2, 3), values=VALUES, changing=False)
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        streams:
          - name: meter
            every: 1s
            modbus:
              host: 127.0.0.1
              port: {meter.port}
              units: [1, 2]
              timeout: 0.5s
              registers:
        {textwrap.indent(textwrap.dedent(REGISTERS), " " * 16)}
          - name: other
            every: 1s
            modbus: {{host: 127.0.0.1, port: {meter.port}, unit: 3, registers: [{{name: i16, address: 0, type: int16}}]}}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: count_rows(root, "meter", "modbus/meter/2") >= 7, timeout=20, message="7 polls")
    finally:
        assert attic.stop() == 0, attic.log_text()

    names = [line.split("name: ")[1].split(",")[0] for line in REGISTERS.strip().splitlines()]
    rows = rows_of(root, "meter", "ts_us, topic, scheduled_us, " + ", ".join(names))
    for unit in (1, 2):
        mine = [row for row in rows if row[1] == f"modbus/meter/{unit}"]
        assert_every_slot([row[2] for row in mine])
        for row in mine:
            assert dict(zip(names, row[3:], strict=True)) == VALUES[unit]
        lags_ms = [(row[0] - row[2]) / 1000 for row in mine]
        assert all(lag > 0 for lag in lags_ms)
        assert statistics.median(lags_ms) < 25, lags_ms  # typically 2-5 ms on loopback (4 requests per unit)
    assert [row[2] for row in rows if row[1] == "modbus/meter/1"] == [row[2] for row in rows if row[1].endswith("/2")]
    path = stream_files(root, "meter")[0]
    types = all_rows(root, "meter", "SELECT " + ", ".join(f"typeof({n})" for n in SQL_TYPES) + " FROM messages")
    assert set(types) == {tuple(SQL_TYPES.values())}, path
    assert [kind for _, kind, _ in events(root, "meter") if kind.startswith("poll")] == []

    other = rows_of(root, "other", "ts_us, topic, scheduled_us, i16")
    assert {row[1] for row in other} == {"modbus/other/3"} and {row[3] for row in other} == {meter.values(3)["i16"]}
    assert_every_slot([row[2] for row in other])
    assert meter.connections == 1  # both streams on one gateway share one client


def start_simulator(port: int, device: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "attic.simulate_modbus", "--port", str(port), "--device", device,
                             "--static"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("simulated"), "the simulator did not start"
    return proc


def test_server_killed_attic_records_failures_and_resumes(tmp_path):
    device = tmp_path / "small.yaml"
    device.write_text("registers:\n  - {name: v, address: 0, type: int16}\n"
                      "  - {name: e, address: 0, type: float32, table: input}\n")
    port = free_port()
    simulator = start_simulator(port, str(device))
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        report: {{every: 1s}}
        streams:
          - {{name: meter, every: 1s, modbus: {{host: 127.0.0.1, port: {port}, timeout: 0.3s, device: small.yaml}}}}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: count_rows(root, "meter", "modbus/meter/1") >= 2, timeout=15, message="first rows")
        simulator.send_signal(signal.SIGKILL)
        simulator.wait()
        killed_us = datetime.now().timestamp() * US
        wait_for(lambda: count_events(root, "meter", "poll_failed") >= 2, timeout=15, message="poll_failed events")
        assert attic.proc.poll() is None, attic.log_text()
        before = count_rows(root, "meter", "modbus/meter/1")
        simulator = start_simulator(port, str(device))
        back_us = datetime.now().timestamp() * US
        wait_for(lambda: count_rows(root, "meter", "modbus/meter/1") >= before + 3, timeout=20, message="polls resume")
    finally:
        code = attic.stop()
        simulator.kill()
        simulator.wait()
    assert code == 0, attic.log_text()
    rows = rows_of(root, "meter")
    assert not [r for r in rows if killed_us + 0.5 * US < r[0] < back_us]  # nothing invented while it was down
    after = [r[2] for r in rows if r[0] > back_us]
    assert len(after) >= 3 and all(s % US == 0 for s in after)
    assert after == list(range(after[0], after[-1] + US, US))  # back to every slot once it answers
    kinds = [kind for _, kind, _ in events(root, "meter")]
    assert kinds.count("connected") == 2 and "disconnected" in kinds and "poll_resumed" in kinds
    failed = events(root, "meter", "poll_failed")
    assert "unit 1 at 127.0.0.1:" in failed[0][2] and "(1 in a row; next try in 1s)" in failed[0][2]
    assert "(2 in a row; next try in 2s)" in failed[1][2]  # its own backoff, doubling
    # the self-report counts them too (log line and attic_stats)
    totals = stats(root, "meter")
    assert 2 <= totals["poll_failed"] <= len(failed) and totals["poll_missed"] == 0 and totals["reconnects"] == 1
    assert totals["polls"] >= len(rows) + 2 and "poll_failed=" in attic.log_text()


def test_dead_unit_on_a_gateway_never_delays_the_live_one(tmp_path, meters):
    meter = meters(register_specs(tmp_path, "- {name: v, address: 0, type: int16}"), units=(1,), changing=False)
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        report: {{every: 1s}}
        streams:
          - name: gateway
            every: 1s
            modbus: {{host: 127.0.0.1, port: {meter.port}, units: [2, 1], timeout: 0.4s,
                      registers: [{{name: v, address: 0, type: int16}}]}}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: count_rows(root, "gateway", "modbus/gateway/1") >= 7, timeout=20, message="7 polls")
    finally:
        assert attic.stop() == 0, attic.log_text()
    rows = rows_of(root, "gateway")
    assert {row[1] for row in rows} == {"modbus/gateway/1"}
    assert_every_slot([row[2] for row in rows])
    lags_ms = [(row[0] - row[2]) / 1000 for row in rows]
    # The first poll asks the dead unit first (listed first) and waits its timeout once; from then on it goes
    # last, with a timeout that ends before the next slot.
    assert lags_ms[0] < 400 + 100
    assert max(lags_ms[1:]) < 100 and statistics.median(lags_ms[1:]) < 20, lags_ms
    failed = events(root, "gateway", "poll_failed")
    assert len(failed) >= 2 and all("unit 2 at" in detail and "no response" in detail for _, _, detail in failed)
    assert events(root, "gateway", "poll_missed") == []
    totals = stats(root, "gateway")  # failures counted per unit in the self-report
    assert totals["poll_failed_unit_2"] >= 2 and totals["poll_failed_unit_1"] == 0


def test_eastron_maps_decode_a_simulated_meter_in_four_requests(tmp_path, meters):
    sdm120 = meters(device_registers("eastron_sdm120"), units=(1,), changing=False)
    sdm630 = meters(device_registers("eastron_sdm630"), units=(5,), changing=False)
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        streams:
          - {{name: house, every: 1s, modbus: {{host: 127.0.0.1, port: {sdm120.port}, device: eastron_sdm120}}}}
          - {{name: plant, every: 1s, modbus: {{host: 127.0.0.1, port: {sdm630.port}, unit: 5, device: eastron_sdm630}}}}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: count_rows(root, "house", "modbus/house/1") >= 2
                 and count_rows(root, "plant", "modbus/plant/5") >= 2, timeout=15, message="rows from both meters")
    finally:
        assert attic.stop() == 0, attic.log_text()
    for stream, meter, unit in (("house", sdm120, 1), ("plant", sdm630, 5)):
        expected = meter.values(unit)
        rows = rows_of(root, stream, "topic, " + ", ".join(expected))
        assert rows and all(dict(zip(expected, row[1:], strict=True)) == expected for row in rows)
        assert meter.requests == 4 * len(rows)  # 22 and 85 values, 4 block reads each
    assert 225 < sdm630.values(5)["l1_voltage"] < 235


def test_rtu_units_on_a_serial_line_go_through_the_streams_filters(tmp_path, meters):
    specs = register_specs(tmp_path, "- {name: v, address: 0, type: int16}\n- {name: f, address: 1, type: float32}")
    meter = meters(specs, units=(3, 4), values={3: {"v": -5, "f": 50.25}, 4: {"v": 50, "f": 49.5}}, changing=False,
                   framer="rtu")
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        streams:
          - name: rs485
            every: 1s
            modbus:
              serial: {{port: "socket://127.0.0.1:{meter.port}", baudrate: 115200}}
              units: [3, 4]
              registers: [{{name: v, address: 0, type: int16}}, {{name: f, address: 1, type: float32}}]
            filters:
              - rename: {{fields: {{f: frequency}}}}
              - range_check: {{field: v, min: -10, max: 10}}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: count_rows(root, "rs485", "modbus/rs485/3") >= 2, timeout=15, message="rows over RTU")
    finally:
        assert attic.stop() == 0, attic.log_text()
    rows = rows_of(root, "rs485", "ts_us, topic, scheduled_us, v, frequency, payload")
    assert {row[1:2] + row[3:] for row in rows} == {("modbus/rs485/3", -5, 50.25, None)}  # renamed by the filter
    assert_every_slot([row[2] for row in rows])
    rejects = all_rows(root, "rs485", "SELECT ts_us, topic, stage, error FROM attic_rejects")
    assert len(rejects) >= len(rows) - 1 and {r[1:] for r in rejects} == {
        ("modbus/rs485/4", "range_check", "v 50 is above max 10")}
    payloads = [json.loads(p) for (p,) in all_rows(root, "rs485", "SELECT payload FROM attic_rejects")]
    assert all(p["v"] == 50 and "f" in p for p in payloads)  # a rejected row keeps its values
    assert meter.connections == 1  # one serial line for both units


def test_a_poll_longer_than_its_slot_records_every_missed_slot(tmp_path, meters):
    specs = register_specs(tmp_path, "- {name: a, address: 0}\n- {name: b, address: 0, table: input}")
    meter = meters(specs, units=(1,), changing=False, delay_s=0.6)  # two requests: 1.2 s per poll
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        streams:
          - name: slow
            every: 1s
            modbus: {{host: 127.0.0.1, port: {meter.port}, timeout: 0.9s,
                      registers: [{{name: a, address: 0}}, {{name: b, address: 0, table: input}}]}}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: count_events(root, "slow", "poll_missed") >= 3, timeout=20, message="poll_missed events")
    finally:
        assert attic.stop() == 0, attic.log_text()
    polled = {row[2] for row in rows_of(root, "slow")}
    missed, reasons = missed_slots(root, "slow")
    assert reasons == {"the previous poll was still running"}
    assert polled and missed and not polled & missed
    every = range(min(polled | missed), max(polled | missed) + US, US)
    assert sorted(polled | missed) == list(every)  # each slot either polled or recorded as missed


def test_separate_devices_poll_in_parallel_and_streams_on_one_gateway_take_turns(tmp_path, meters):
    specs = register_specs(tmp_path, "- {name: v, address: 0, type: int16}")
    gateway = meters(specs, units=(1, 2), changing=False, delay_s=0.3)  # every answer takes 300 ms
    other = meters(specs, units=(1,), changing=False, delay_s=0.3)
    stream = "{{name: {}, every: 1s, modbus: {{host: 127.0.0.1, port: {}, unit: {}, timeout: 0.9s, " \
             "registers: [{{name: v, address: 0, type: int16}}]}}}}"
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        streams:
          - {stream.format("a", gateway.port, 1)}
          - {stream.format("c", gateway.port, 2)}
          - {stream.format("b", other.port, 1)}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: all(count_rows(root, name, f"modbus/{name}/{unit}") >= 4
                             for name, unit in (("a", 1), ("c", 2), ("b", 1))), timeout=20, message="4 polls each")
    finally:
        assert attic.stop() == 0, attic.log_text()
    lags = {name: {row[2]: (row[0] - row[2]) / 1000 for row in rows_of(root, name)} for name in "acb"}
    # b has a device of its own: its 300 ms answer overlaps those of a and c (in series it would wait for them)
    assert all(300 <= lag < 500 for lag in lags["b"].values()), lags["b"]
    # a and c share one client to one gateway: in every slot one of them waits for the other's answer
    both = sorted(set(lags["a"]) & set(lags["c"]))
    assert len(both) >= 3
    for slot in both:
        first, second = sorted((lags["a"][slot], lags["c"][slot]))
        assert 300 <= first < 500 and second - first >= 280 and second < 900, (first, second)
    assert (gateway.connections, other.connections) == (1, 1)
    assert not [e for name in "acb" for e in events(root, name) if e[1].startswith("poll")]


def missed_slots(root, stream) -> tuple[set[int], set[str]]:
    """The slots the stream's poll_missed events name, and the reasons they give."""
    slots, reasons = set(), set()
    for _, _, detail in events(root, stream, "poll_missed"):
        span, reason = detail.split(": ", 1)
        count, first = (int(span.split(" ")[0]), span.split(" slots from ")[1]) if " slots from " in span else (1, span)
        start = int(datetime.fromisoformat(first).timestamp() * US)
        slots.update(start + i * US for i in range(count))
        reasons.add(reason)
    return slots, reasons


def test_a_stalled_process_records_the_slots_it_slept_through(tmp_path, meters):
    meter = meters(register_specs(tmp_path, "- {name: v, address: 0}"), units=(1,), changing=False)
    config = write_config(tmp_path, f"""
        storage: {{root: logs}}
        streams:
          - {{name: m, every: 1s, modbus: {{host: 127.0.0.1, port: {meter.port}, registers: [{{name: v, address: 0}}]}}}}
    """)
    attic = AtticProcess(config).start()
    root = tmp_path / "logs"
    try:
        wait_for(lambda: count_rows(root, "m", "modbus/m/1") >= 2, timeout=15, message="first polls")
        attic.signal(signal.SIGSTOP)  # a stall: swapping, a VM paused, a clock step
        try:
            time.sleep(3.3)  # the stall itself, not a wait for something
        finally:
            attic.signal(signal.SIGCONT)
        woke_us = time.time_ns() // 1000
        wait_for(lambda: count_rows(root, "m", "modbus/m/1", woke_us) >= 2, timeout=15, message="polls after the stall")
    finally:
        assert attic.stop() == 0, attic.log_text()
    polled = {row[2] for row in rows_of(root, "m")}
    missed, reasons = missed_slots(root, "m")
    assert len(missed) >= 2 and not polled & missed, (sorted(polled), sorted(missed))
    assert sorted(polled | missed) == list(range(min(polled), max(polled) + US, US))  # every slot accounted for
    assert reasons <= {"the scheduler woke too late and coalesced them", "started later than the misfire grace allows"}
