"""Modbus stream config: settings, crontab translation, device maps, and what `check` says (no device contacted)."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from attic.cli import main
from attic.config import load_config
from attic.modbusconfig import (
    ModbusSettings,
    SerialSettings,
    check_modbus_stream,
    parse_crontab,
    resolve_device,
)
from attic.sources.registers import RegisterSpec, plan_blocks
from tests.support import write_config

DEVICES = Path(__file__).parent.parent / "attic" / "devices"


def test_settings_with_inline_registers_and_defaults(tmp_path):
    config = load_config(write_config(tmp_path, """
        streams:
          - name: meter
            every: 250ms
            modbus:
              host: 10.0.0.7
              units: [1, 2, 3]
              word_order: little
              max_gap: 4
              registers:
                - {name: voltage, address: 0, type: float32, table: input, unit: V}
                - {name: energy, address: 2, type: uint32, table: input, word_order: big, scale: 0.01}
                - {name: relay, address: 5, type: bool}
                - {name: model, address: 100, type: string, count: 4, byte_order: little}
          - name: line
            cron: "*/15 6-18 * * 1-5"
            modbus:
              serial: {port: /dev/ttyUSB0, baudrate: 19200, parity: even, stopbits: 2}
              unit: 7
              timeout: 2s
              device: eastron_sdm120
    """))
    meter, line = config.streams
    assert (meter.source, meter.every_s, meter.cron) == ("modbus", 0.25, None)
    m = meter.modbus
    assert (m.host, m.port, m.units, m.timeout_s, m.device, m.max_block, m.max_gap) == \
        ("10.0.0.7", 502, (1, 2, 3), 0.125, None, None, 4)  # timeout defaults to half the interval, at most 1s
    assert m.registers == (
        RegisterSpec("voltage", 0, "float32", "input", word_order="little", unit="V"),
        RegisterSpec("energy", 2, "uint32", "input", scale=0.01, word_order="big"),
        RegisterSpec("relay", 5, "bool", "coil", word_order="little"),
        RegisterSpec("model", 100, "string", "holding", word_order="little", byte_order="little", count=4))
    assert m.address == "10.0.0.7:502"
    assert (line.every_s, line.cron) == (None, "*/15 6-18 * * 1-5")
    assert line.modbus.serial == SerialSettings("/dev/ttyUSB0", 19200, "E", 2, 8)
    assert (line.modbus.units, line.modbus.timeout_s, line.modbus.address) == ((7,), 2.0, "/dev/ttyUSB0")
    assert dict(line.modbus.cron_fields) == {"minute": "0,15,30,45", "hour": "6,7,8,9,10,11,12,13,14,15,16,17,18",
                                             "day": "*", "month": "*", "day_of_week": "mon,tue,wed,thu,fri"}


def test_crontab_weekdays_mean_what_crontab_means():
    # APScheduler 3 numbers weekdays from Monday; crontab from Sunday (0 and 7). We hand over names.
    assert parse_crontab("0 6 * * 0")[0]["day_of_week"] == "sun"
    assert parse_crontab("0 6 * * 7")[0]["day_of_week"] == "sun"
    assert parse_crontab("0 6 * * */2")[0]["day_of_week"] == "sun,tue,thu,sat"
    assert parse_crontab("0 6 * * sat-sun")[1] is not None  # a range must go forwards, as in crontab
    assert parse_crontab("0 6 * * fri,Sat")[0]["day_of_week"] == "fri,sat"
    fields, _ = parse_crontab("*/20 * 1 jan-mar *")
    assert (fields["minute"], fields["day"], fields["month"], fields["day_of_week"]) == ("0,20,40", "1", "1,2,3", "*")
    assert parse_crontab("5/20 * * * *")[0]["minute"] == "5,25,45"
    for bad in ("60 * * * *", "* * * *", "*/0 * * * *", "a * * * *", "* * 0 * *", "5-1 * * * *"):
        assert parse_crontab(bad)[0] is None, bad


def test_device_maps_resolve_from_devices_dir_first_then_built_ins(tmp_path):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "eastron_sdm120.yaml").write_text(
        "max_block: 10\nregisters:\n  - {name: only, address: 3, type: int16, table: input}\n")
    (tmp_path / "mine.yaml").write_text("registers:\n  - {name: x, address: 0}\n")
    config = load_config(write_config(tmp_path, """
        devices_dir: maps
        streams:
          - {name: a, every: 1s, modbus: {host: h, device: eastron_sdm120}}
          - {name: b, every: 1s, modbus: {host: h, device: eastron_sdm630, max_block: 20, max_gap: 0}}
          - {name: c, every: 1s, modbus: {host: h, device: ./mine.yaml}}
    """))
    a, b, c = (resolve_device(s.modbus, config.devices_dir, tmp_path) for s in config.streams)
    assert [r.name for r in a.registers] == ["only"] and a.max_block == 10
    assert (b.max_block, b.max_gap, len(b.registers)) == (20, 0, 85)
    assert [r.name for r in c.registers] == ["x"]
    assert all(check_modbus_stream(s, config) == [] for s in config.streams)


def test_built_in_maps_are_valid_documented_and_few_requests():
    for path in sorted(DEVICES.glob("*.yaml")):
        text = path.read_text()
        assert "datasheet:" in text and text.startswith("#"), path.name
        for line in text.splitlines():
            if line.strip().startswith("- {name:"):
                assert "#" in line, f"{path.name}: every register needs a comment: {line}"
    sdm120 = resolve_device(ModbusSettings(host="h", device="eastron_sdm120"), None, DEVICES)
    sdm630 = resolve_device(ModbusSettings(host="h", device="eastron_sdm630"), None, DEVICES)
    assert len(sdm120.registers) == 22 and len(plan_blocks(sdm120.registers, sdm120.max_block, sdm120.max_gap)) == 4
    assert len(sdm630.registers) == 85 and len(plan_blocks(sdm630.registers, sdm630.max_block, sdm630.max_gap)) == 4


def test_shared_serial_port_needs_one_line_setting(tmp_path):
    config = load_config(write_config(tmp_path, """
        streams:
          - {name: a, every: 1s, modbus: {serial: {port: /dev/ttyS1, baudrate: 9600}, device: eastron_sdm120}}
          - {name: b, every: 1s, modbus: {serial: {port: /dev/ttyS1, baudrate: 19200}, unit: 2, device: eastron_sdm120}}
          - {name: c, every: 1s, modbus: {serial: {port: /dev/ttyS1, baudrate: 9600}, unit: 3, device: eastron_sdm120}}
    """))
    assert check_modbus_stream(config.streams[0], config) == []
    assert check_modbus_stream(config.streams[1], config) == [
        "config.yaml: streams[1].modbus.serial: /dev/ttyS1 is also used by streams[0] with other line settings; "
        "one port has one baud rate and framing"]
    assert check_modbus_stream(config.streams[2], config) == []


def test_check_lists_modbus_streams_without_contacting_them(tmp_path):
    path = write_config(tmp_path, """
        storage: {root: logs}
        streams:
          - {name: meter, every: 15m, modbus: {host: 192.0.2.1, port: 502, timeout: 5s, device: eastron_sdm630}}
          - {name: daily, cron: "0 0 * * *", modbus: {host: 192.0.2.1, unit: 2, device: eastron_sdm120}}
    """)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 5  # 192.0.2.1 (TEST-NET) would time out if check connected
    assert "meter: modbus 192.0.2.1:502 unit 1, device eastron_sdm630, every 15m; no filters" in result.output
    assert "daily: modbus 192.0.2.1:502 unit 2, device eastron_sdm120, cron '0 0 * * *'" in result.output
