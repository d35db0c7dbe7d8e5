"""A simulated Modbus TCP meter: pymodbus's own server holding a device map's registers.

For tests, ``attic demo`` and benchmarks: it serves any register map (a built-in like
``eastron_sdm630``, a map file, or RegisterSpecs) for one or more unit ids, with plausible
values that change every second (voltages wander, energy counters rise) or stay fixed
(``changing=False``), or exactly the values a test gives. Unit ids it does not serve never
answer, like a dead meter behind a gateway. ``bus_baud`` makes every answer take as long as
it would on an RS-485 line at that speed, one request at a time, to measure what block
reads save on a real bus.

    meter = serve_meter("127.0.0.1", 5020, device="eastron_sdm630", units=(1, 2))
    ...
    meter.stop()

or ``python -m attic.simulate_modbus --port 5020 [--device eastron_sdm120] [--units 1,2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer

from attic.modbusconfig import find_device, load_device_map
from attic.sources.registers import RegisterSpec, encode_value

FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}  # read function code → datastore


def plausible_value(spec: RegisterSpec, unit: int, t: float) -> int | float | str:
    """A value that looks like a meter's, by the register's name; ``t`` in seconds moves it."""
    name = spec.name.lower()
    wave = math.sin(t / 30 + unit)
    if spec.type == "bool":
        return (spec.address + unit + int(t)) % 2
    if spec.type == "string":
        return f"ATTIC-{unit}"[: 2 * spec.count]
    if "thd" in name:
        value = 2.5 + 0.5 * wave
    elif "voltage" in name:
        value = (400.0 if ("l1_l2" in name or "l2_l3" in name or "l3_l1" in name or "line" in name) else 230.0) \
            + 2 * wave
    elif "power_factor" in name:
        value = 0.95 + 0.03 * wave
    elif "angle" in name:
        value = 18.0 + 3 * wave
    elif "frequency" in name:
        value = 50.0 + 0.02 * wave
    elif "energy" in name or "charge" in name:
        value = (10.0 if "export" in name else 1000.0) * unit + t / 3600 * 1.2
    elif "current" in name:
        value = 5.0 + unit + wave
    elif "reactive" in name:
        value = 150.0 + 50 * wave
    elif "apparent" in name or "va_demand" in name:
        value = 1180.0 + 200 * wave
    elif "power" in name or "demand" in name:
        value = 1150.0 + 200 * wave
    else:
        value = spec.address + unit + (int(t) % 100 if t else 0)
    if spec.type.startswith("float"):
        return round(value, 3)
    low, high = _int_range(spec)
    return max(low, min(high, round(value)))


def _int_range(spec: RegisterSpec) -> tuple[float, float]:
    bits = {"16": 16, "32": 32, "64": 64}[spec.type[-2:]]
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if spec.type.startswith("int") else (0, 2 ** bits - 1)
    raw_low, raw_high = low * spec.scale + spec.offset, high * spec.scale + spec.offset
    return min(raw_low, raw_high), max(raw_low, raw_high)


def device_registers(device: str, base_dir: Path | None = None) -> tuple[RegisterSpec, ...]:
    """The registers of a built-in map name or a map file."""
    path = find_device(device, None, base_dir or Path.cwd())
    if path is None:
        raise ValueError(f"unknown device map {device!r}")
    return load_device_map(path).registers


class SimulatedMeter:
    """pymodbus's TCP server on its own thread and event loop, serving a register map."""

    def __init__(self, host: str, port: int, registers: Sequence[RegisterSpec], units: Sequence[int] = (1,),
                 values: dict[int, dict[str, Any]] | None = None, changing: bool = True,
                 bus_baud: int | None = None, delay_s: float = 0.0, framer: str = "socket"):
        self.host, self.port = host, port
        self.registers = tuple(registers)
        self.units = tuple(units)
        self.fixed = {unit: dict(values.get(unit, {})) for unit in self.units} if values else {}
        self.changing = changing
        self.bus_baud = bus_baud
        self.delay_s = delay_s  # extra time before every answer
        self.framer = FramerType(framer)  # "rtu": RTU frames over TCP, for a serial client on socket://host:port
        self.requests = 0     # read requests received, all units
        self.connections = 0  # TCP connections accepted so far
        self.started = time.time()
        self.devices = {unit: ModbusDeviceContext(
            co=ModbusSequentialDataBlock(1, [False] * 65536), di=ModbusSequentialDataBlock(1, [False] * 65536),
            hr=ModbusSequentialDataBlock(1, [0] * 65536), ir=ModbusSequentialDataBlock(1, [0] * 65536))
            for unit in self.units}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"modbus-sim-{port}", daemon=True)

    def values(self, unit: int) -> dict[str, Any]:
        """What the meter holds for ``unit`` right now (in engineering units)."""
        t = time.time() - self.started if self.changing else 0.0
        fixed = self.fixed.get(unit, {})
        return {spec.name: fixed[spec.name] if spec.name in fixed else plausible_value(spec, unit, t)
                for spec in self.registers}

    def set_values(self, unit: int, values: dict[str, Any]) -> None:
        """Pin some registers of ``unit`` to exact values (thread-safe)."""
        self.fixed.setdefault(unit, {}).update(values)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._refresh)

    def start(self, timeout: float = 10.0) -> SimulatedMeter:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"simulated meter on {self.host}:{self.port} did not start: {self._error}")
        return self

    def stop(self) -> None:
        """Stop serving (and close every connection); a second call does nothing."""
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    # ------------------------------------------------------------------ on the server's loop

    def _refresh(self) -> None:
        for unit in self.units:
            device = self.devices[unit]
            for spec, value in zip(self.registers, self.values(unit).values(), strict=True):
                device.setValues(FUNCTION[spec.table], spec.address, encode_value(spec, value))

    def _trace(self, sending: bool, pdu: Any) -> Any:
        if not sending:
            self.requests += 1
            return pdu
        delay = self.delay_s
        if self.bus_baud:  # the answer takes as long as on an RS-485 line
            data = len(getattr(pdu, "registers", []) or []) * 2 or (len(getattr(pdu, "bits", []) or []) + 7) // 8
            chars = 8 + 5 + data + 7  # request, response header and CRC, data, 3.5 char gaps each way
            delay += chars * 10 / self.bus_baud + 0.005  # + 5 ms for the meter to answer
        if delay:
            time.sleep(delay)  # blocks the server's loop: one request at a time, like a bus
        return pdu

    def _connected(self, connected: bool) -> None:
        self.connections += connected

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._refresh()
        context = ModbusServerContext(devices=self.devices, single=False)
        server = ModbusTcpServer(context, address=(self.host, self.port), ignore_missing_devices=True,
                                 framer=self.framer, trace_pdu=self._trace, trace_connect=self._connected)
        try:
            await server.serve_forever(background=True)
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), 1.0 - (time.time() % 1.0) + 0.5)
                except asyncio.TimeoutError:
                    if self.changing:
                        self._refresh()  # values move at the half second, between two polls on whole seconds
        finally:
            await server.shutdown()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()


def serve_meter(host: str = "127.0.0.1", port: int = 5020, device: str = "eastron_sdm630",
                units: Sequence[int] = (1,), **options: Any) -> SimulatedMeter:
    """Start a simulated meter serving ``device`` (a map name or file) and return it (``.stop()`` ends it)."""
    return SimulatedMeter(host, port, device_registers(device), units, **options).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m attic.simulate_modbus", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--device", default="eastron_sdm630", help="a built-in map name or a map file")
    parser.add_argument("--units", default="1", help="unit ids to serve, like 1,2 (others never answer)")
    parser.add_argument("--static", action="store_true", help="values do not change over time")
    parser.add_argument("--bus-baud", type=int, default=None, help="answer as slowly as an RS-485 line at this speed")
    parser.add_argument("--framer", default="socket", choices=["socket", "rtu"], help="rtu: RTU frames over TCP")
    args = parser.parse_args(argv)
    units = tuple(int(u) for u in args.units.split(","))
    meter = serve_meter(args.host, args.port, args.device, units, changing=not args.static, bus_baud=args.bus_baud,
                        framer=args.framer)
    print(f"simulated {args.device} units {args.units} on {args.host}:{args.port}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    meter.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
