"""The ``modbus:``, ``every:`` and ``cron:`` keys of a Modbus stream, and device maps.

Validation collects every problem with its place (``streams[2].modbus.registers[3].type``),
like the rest of the config: a register map with twenty typos is fixed in one go. Parsing
reads only the config file; ``check_modbus_stream`` (run by ``attic check`` and ``attic run``)
also resolves ``device:`` maps from ``attic/devices/`` and ``devices_dir``. Nothing here
connects to a device or imports pymodbus or APScheduler.

Cron expressions are checked here, without APScheduler, and handed to it as explicit lists:
APScheduler 3 numbers weekdays from Monday (``0 = mon``) where crontab means Sunday, so we
translate weekdays to names ourselves.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attic.config import ConfigError, Problems, _line, _Reader, check_keys
from attic.sources.registers import BIT_TABLES, MAX_REGISTERS, ORDERS, TABLES, TYPES, RegisterSpec
from attic.yamlload import LineDict, YamlError, load_yaml

BUILTIN_DEVICES = Path(__file__).parent / "devices"
MODBUS_KEYS = ["host", "port", "serial", "unit", "units", "timeout", "device", "registers", "max_block", "max_gap",
               "word_order", "byte_order"]
SERIAL_KEYS = ["port", "baudrate", "parity", "stopbits", "bytesize"]
REGISTER_KEYS = ["name", "address", "type", "table", "scale", "offset", "word_order", "byte_order", "count", "unit"]
DEVICE_KEYS = ["model", "datasheet", "notes", "table", "word_order", "byte_order", "max_block", "max_gap", "registers"]
RESERVED = {"ts_us", "topic", "payload", "qos", "retain", "scheduled_us"}
COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SerialSettings:
    port: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8


@dataclass(frozen=True)
class ModbusSettings:
    """A stream's ``modbus:`` block; ``registers`` is empty when ``device`` names a map."""

    host: str | None = None
    port: int = 502
    serial: SerialSettings | None = None
    units: tuple[int, ...] = (1,)
    timeout_s: float = 1.0
    device: str | None = None
    registers: tuple[RegisterSpec, ...] = ()
    max_block: int | None = None  # None: the device map's, else 125
    max_gap: int | None = None    # None: the device map's, else 0
    cron_fields: tuple[tuple[str, str], ...] | None = None  # APScheduler CronTrigger keyword arguments
    place: str = ""
    device_line: int = 0

    @property
    def address(self) -> str:
        """Where the bus is, for messages and as the key of the shared client."""
        return self.serial.port if self.serial else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DeviceMap:
    """Registers and request limits, resolved from the stream and its device map."""

    registers: tuple[RegisterSpec, ...]
    max_block: int
    max_gap: int
    model: str | None = None


# --------------------------------------------------------------------------- cron

_CRON_FIELDS = [("minute", 0, 59, None), ("hour", 0, 23, None), ("day", 1, 31, None),
                ("month", 1, 12, "jan feb mar apr may jun jul aug sep oct nov dec"),
                ("day_of_week", 0, 7, "sun mon tue wed thu fri sat")]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _cron_value(text: str, lo: int, names: str | None) -> int:
    if names and text.lower() in names.split():
        return names.split().index(text.lower()) + lo
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def parse_crontab(text: str) -> tuple[dict[str, str] | None, str | None]:
    """Given a 5-field crontab expression, return (CronTrigger keyword arguments, None) or (None, problem)."""
    parts = text.split()
    if len(parts) != 5:
        return None, f"must be 5 fields (minute hour day month weekday) like '*/5 * * * *', got {text!r}"
    fields: dict[str, str] = {}
    restricted = []
    for part, (name, lo, hi, names) in zip(parts, _CRON_FIELDS, strict=True):
        values: set[int] = set()
        try:
            for item in part.split(","):
                span, _, step_text = item.partition("/")
                step = int(step_text) if step_text else 1
                if span == "*":
                    first, last = lo, hi
                else:
                    first_text, _, last_text = span.partition("-")
                    first = _cron_value(first_text, lo, names)
                    last = _cron_value(last_text, lo, names) if last_text else (hi if step_text else first)
                if not lo <= first <= last <= hi or step < 1:
                    raise ValueError(item)
                values.update(range(first, last + 1, step))
        except ValueError:
            return None, f"{name} field {part!r} is not valid (allowed {lo}-{hi}, *, lists, ranges, /steps)"
        if name == "day_of_week":
            values = {v % 7 for v in values}
            full = len(values) == 7
            fields[name] = "*" if full else ",".join(_WEEKDAYS[v] for v in sorted(values))
        else:
            full = values == set(range(lo, hi + 1))
            fields[name] = "*" if full else ",".join(map(str, sorted(values)))
        if not full and name in ("day", "day_of_week"):
            restricted.append(name)
    if len(restricted) == 2:
        return None, ("restricts both day of month and weekday; crontab runs when either matches, APScheduler "
                      "only when both do: use one of them")
    return fields, None


# --------------------------------------------------------------------------- registers

def _mapping(node: Any, line: int, place: str, problems: Problems, example: str) -> bool:
    """True if ``node`` is a mapping; else report it once, at the line of its key, with an example."""
    if isinstance(node, dict):
        return True
    got = "nothing" if node is None else repr(node) if isinstance(node, (str, int, float)) else \
        "a list" if isinstance(node, list) else type(node).__name__
    problems.add(line, place, f"must be a mapping like {example}, got {got}")
    return False


def _number(reader: _Reader, key: str, default: float) -> float:
    value = reader.raw(key, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        reader.bad(key, f"must be a number, got {value!r}")
        return default
    return value


def _register(node: Any, place: str, problems: Problems, defaults: dict[str, str]) -> RegisterSpec | None:
    reader = _Reader(node, place, problems, Path("."))
    known = len(problems.lines)
    check_keys(reader.node, place, REGISTER_KEYS, problems)
    name = reader.text("name", required=True)
    if name is not None and not COLUMN.match(name):
        reader.bad("name", f"must be letters, digits and '_' (it names a column), got {name!r}")
    elif name is not None and name.lower() in RESERVED:
        reader.bad("name", f"{name!r} is a column Attic fills itself; choose another name")
    if reader.raw("address") is None:
        reader.bad("address", "is required: the 0-based register address (input register 30001 is address 0)")
    address = reader.integer("address", 0, 0, 65535)
    kind = reader.raw("type", "uint16")
    if kind not in TYPES:
        close = difflib.get_close_matches(str(kind), TYPES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        reader.bad("type", f"must be one of {', '.join(TYPES)}, got {kind!r}{hint}")
        kind = "uint16"
    table = reader.choice("table", defaults.get("table") or ("coil" if kind == "bool" else "holding"), TABLES)
    if (kind == "bool") != (table in BIT_TABLES):
        reader.bad("table" if "table" in reader.node else "type",
                   f"type {kind} cannot live in {table} "
                   + ("(bools are coils or discrete inputs)" if kind == "bool" else "(coils and discrete inputs "
                      "hold one bit each: use type bool)"))
    count = reader.integer("count", 1, 1, MAX_REGISTERS)
    if kind == "string" and reader.raw("count") is None:
        reader.bad("count", "is required for a string: how many registers (two characters each)")
    elif kind != "string" and reader.raw("count") is not None:
        reader.bad("count", f"is only for strings; {kind} has a fixed size")
    scale, offset = _number(reader, "scale", 1), _number(reader, "offset", 0)
    if kind in ("string", "bool") and (reader.raw("scale") is not None or reader.raw("offset") is not None):
        reader.bad("scale" if reader.raw("scale") is not None else "offset", f"does not apply to type {kind}")
    if scale == 0:
        reader.bad("scale", "must not be 0")
        scale = 1
    spec = RegisterSpec(name=name or "?", address=address, type=kind, table=table, scale=scale, offset=offset,
                        word_order=reader.choice("word_order", defaults.get("word_order", "big"), ORDERS),
                        byte_order=reader.choice("byte_order", defaults.get("byte_order", "big"), ORDERS),
                        count=count, unit=reader.text("unit", None))
    if spec.end > 65536:
        reader.bad("address", f"{spec.name} would end past register 65535")
    return spec if len(problems.lines) == known else None  # a broken register is not checked for overlaps


def parse_registers(node: Any, place: str, problems: Problems, defaults: dict[str, str],
                    line: int = 0) -> tuple[RegisterSpec, ...]:
    """Given a YAML list of registers (its key on ``line``), return the specs; report bad ones, duplicate
    names and overlaps."""
    if not isinstance(node, list) or not node:
        problems.add(getattr(node, "line", line), place, "must be a list of registers like [{name: voltage, "
                     "address: 0, type: float32, table: input}]")
        return ()
    specs: list[tuple[RegisterSpec, int, str]] = []
    for i, item in enumerate(node):
        item_place = f"{place}[{i}]"
        line = node.line_of(i) if hasattr(node, "line_of") else 0
        if not _mapping(item, line, item_place, problems, "{name: voltage, address: 0, type: float32}"):
            continue
        spec = _register(item, item_place, problems, defaults)
        if spec is not None:
            specs.append((spec, line, item_place))
    names: dict[str, str] = {}
    for spec, line, item_place in specs:
        if spec.name.lower() in names:
            problems.add(line, f"{item_place}.name", f"{spec.name!r} is also the name of {names[spec.name.lower()]}; "
                         "names must be unique (columns ignore case)")
        names.setdefault(spec.name.lower(), item_place)
    for table in TABLES:
        previous = None
        for spec, line, item_place in sorted((s for s in specs if s[0].table == table), key=lambda s: s[0].address):
            if previous is not None and spec.address < previous.end:
                problems.add(line, f"{item_place}.address", f"{spec.name} ({table} {spec.address}-{spec.end - 1}) "
                             f"overlaps {previous.name} ({table} {previous.address}-{previous.end - 1})")
            if previous is None or spec.end > previous.end:
                previous = spec
    return tuple(spec for spec, _, _ in specs)


# --------------------------------------------------------------------------- the stream

def _parity(reader: _Reader) -> str:
    value = reader.raw("parity", "N")
    letter = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}.get(str(value).lower())
    if letter is None:
        reader.bad("parity", f"must be N (none), E (even) or O (odd), got {value!r}")
    return letter or "N"


def parse_modbus_stream(reader: _Reader) -> tuple[float | None, str | None, ModbusSettings]:
    """Given the stream's config reader, return (every_s, cron, ModbusSettings), reporting problems."""
    every_s = reader.duration("every", None, lo=0.01, hi=86400)
    cron = reader.text("cron", None)
    if ("every" in reader.node) == ("cron" in reader.node):
        reader.bad("every", "give exactly one of every: (like 1s) or cron: (like '*/5 * * * *')")
    cron_fields = None
    if cron is not None:
        fields, problem = parse_crontab(cron)
        if problem:
            reader.bad("cron", problem)
        cron_fields = tuple(fields.items()) if fields else None
    place = f"{reader.place}.modbus"
    if not _mapping(reader.node.get("modbus"), _line(reader.node, "modbus"), place, reader.problems,
                    "{host: 10.0.0.7, unit: 1, device: eastron_sdm630}"):
        return every_s, None, ModbusSettings(host="?", device="?", place=reader.place)
    m = _Reader(reader.raw("modbus"), place, reader.problems, reader.base_dir)
    check_keys(m.node, place, MODBUS_KEYS, reader.problems)
    host, serial = m.text("host", None), None
    if "serial" in m.node and not _mapping(m.node.get("serial"), _line(m.node, "serial"), f"{place}.serial",
                                           reader.problems, "{port: /dev/ttyUSB0, baudrate: 9600}"):
        serial = SerialSettings(port="?")
    elif "serial" in m.node:
        s = _Reader(m.raw("serial"), f"{place}.serial", reader.problems, reader.base_dir)
        check_keys(s.node, s.place, SERIAL_KEYS, reader.problems)
        serial = SerialSettings(port=s.text("port", "", required=True) or "",
                                baudrate=s.integer("baudrate", 9600, 300, 4_000_000),
                                parity=_parity(s),
                                stopbits=s.choice("stopbits", 1, [1, 2]), bytesize=s.choice("bytesize", 8, [7, 8]))
    if (host is None) == (serial is None):
        m.bad("host", "give exactly one of host: (Modbus TCP, with port:) or serial: {port: /dev/ttyUSB0, ...}")
    elif serial is not None and "port" in m.node:
        m.bad("port", "is for Modbus TCP; a serial line takes serial: {port: /dev/ttyUSB0}")
    units: tuple[int, ...] = (1,)
    if "unit" in m.node and "units" in m.node:
        m.bad("units", "give unit: 1 or units: [1, 2], not both")
    elif "units" in m.node:
        raw = m.raw("units")
        if not isinstance(raw, list) or not raw or any(isinstance(u, bool) or not isinstance(u, int)
                                                      or not 0 <= u <= 255 for u in raw):
            m.bad("units", f"must be a list of unit ids (0-255) like [1, 2], got {raw!r}")
        elif len(set(raw)) != len(raw):
            m.bad("units", f"lists a unit twice: {raw!r}")
        else:
            units = tuple(raw)
    else:
        units = (m.integer("unit", 1, 0, 255),)
    timeout_s = m.duration("timeout", min(1.0, (every_s or 2.0) / 2), lo=0.01, hi=60)
    if every_s is not None and timeout_s >= every_s:
        m.bad("timeout", f"must be shorter than every ({every_s:g}s), or one slow answer would overlap the next poll")
    device, registers = m.text("device", None), ()
    defaults = {k: m.choice(k, "big", ORDERS) for k in ("word_order", "byte_order") if k in m.node}
    if (device is None) == ("registers" not in m.node):
        m.bad("device", "give exactly one of device: (a register map like eastron_sdm630) or registers: [...]")
    elif device is None:
        registers = parse_registers(m.raw("registers"), f"{place}.registers", reader.problems, defaults,
                                    _line(m.node, "registers"))
    settings = ModbusSettings(
        host=host, port=m.integer("port", 502, 1, 65535), serial=serial, units=units, timeout_s=timeout_s,
        device=device, registers=registers, max_block=m.integer("max_block", 0, 1, MAX_REGISTERS) or None,
        max_gap=m.integer("max_gap", 0, 0, MAX_REGISTERS) if "max_gap" in m.node else None,
        cron_fields=cron_fields, place=reader.place,
        device_line=m.node.line_of("device") if isinstance(m.node, LineDict) else 0)
    if defaults and device is not None:
        m.bad(next(iter(defaults)), "only applies to registers: given here; a device map sets its own")
    return every_s, cron, settings


# --------------------------------------------------------------------------- device maps

def device_folders(devices_dir: Path | None) -> list[Path]:
    """Where ``device:`` names are looked up: devices_dir first (it may override), then the built-ins."""
    return ([devices_dir] if devices_dir else []) + [BUILTIN_DEVICES]


def _is_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or "/" in name


def find_device(name: str, devices_dir: Path | None, base_dir: Path) -> Path | None:
    """Given a device name (or a path to a .yaml map), return its file, or None."""
    if _is_path(name):
        path = Path(name).expanduser()
        path = path if path.is_absolute() else base_dir / path
        return path if path.is_file() else None
    for folder in device_folders(devices_dir):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def load_device_map(path: Path, shown: str | None = None) -> DeviceMap:
    """Given a device map file, return its registers and limits. Raise ConfigError with one line per problem.

    ``shown`` is how problems name the file (default: its name).
    """
    shown = shown or path.name
    problems = Problems(shown)
    try:
        document = load_yaml(path.read_text(encoding="utf-8"), shown)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{shown}: cannot read: {exc}"]) from None
    except YamlError as exc:
        raise ConfigError([str(exc)]) from None
    if document is None:
        raise ConfigError([f"{shown}: is empty; a device map needs registers: [{{name: voltage, address: 0, "
                           "type: float32, table: input}, ...]"])
    if not _mapping(document, getattr(document, "line", 0), "", problems,
                    "{model: ..., table: input, registers: [...]}"):
        raise ConfigError(problems.lines)
    top = _Reader(document, "", problems, path.parent)
    check_keys(top.node, "", DEVICE_KEYS, problems)
    defaults = {k: top.choice(k, "big", ORDERS) for k in ("word_order", "byte_order") if k in top.node}
    if "table" in top.node:
        defaults["table"] = top.choice("table", "holding", TABLES)
    registers = parse_registers(top.raw("registers"), "registers", problems, defaults, _line(top.node, "registers"))
    result = DeviceMap(registers, top.integer("max_block", MAX_REGISTERS, 1, MAX_REGISTERS),
                       top.integer("max_gap", 0, 0, MAX_REGISTERS), top.text("model", None))
    if problems.lines:
        raise ConfigError(problems.lines)
    return result


def _shown(path: Path, base_dir: Path) -> str:
    """A map's path as problems show it: relative to the config's folder when inside it, else the name or path."""
    if path.parent == BUILTIN_DEVICES:
        return path.name
    try:
        return str(path.resolve().relative_to(base_dir.resolve()))
    except ValueError:
        return str(path)


def resolve_device(settings: ModbusSettings, devices_dir: Path | None, base_dir: Path) -> DeviceMap:
    """The registers and request limits a stream polls. Raise ConfigError (lines without the stream's place)."""
    if settings.device is None:
        found = DeviceMap(settings.registers, MAX_REGISTERS, 0)
    else:
        path = find_device(settings.device, devices_dir, base_dir)
        if path is None and _is_path(settings.device):
            raise ConfigError([f"no such file: {base_dir / Path(settings.device).expanduser()}; name a built-in map "
                               "(like eastron_sdm630) or a .yaml file relative to the config"])
        if path is None:
            known = sorted({p.stem for folder in device_folders(devices_dir) if folder.is_dir()
                            for p in folder.glob("*.yaml")})
            close = difflib.get_close_matches(settings.device, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError([f"unknown device map {settings.device!r}; {hint}(known: {', '.join(known) or 'none'}; "
                               f"or add {settings.device}.yaml to devices_dir)"])
        found = load_device_map(path, _shown(path, base_dir))
    return DeviceMap(found.registers, settings.max_block or found.max_block,
                     found.max_gap if settings.max_gap is None else settings.max_gap, found.model)


def check_modbus_stream(stream: Any, config: Any) -> list[str]:
    """Problems found when resolving a Modbus stream's device map and its bus, one line each."""
    settings: ModbusSettings = stream.modbus
    where = f"{config.path.name}:{settings.device_line}" if settings.device_line else config.path.name
    problems = []
    try:
        device = resolve_device(settings, config.devices_dir, config.path.resolve().parent)
        if not device.registers:
            problems.append(f"{where}: {stream.place}.modbus.device: the map has no registers")
    except ConfigError as exc:
        problems.extend(f"{where}: {stream.place}.modbus.device: {line}" for line in exc.problems)
    if settings.serial is not None:
        if importlib.util.find_spec("serial") is None:
            problems.append(f"{config.path.name}: {stream.place}.modbus.serial: needs pyserial "
                            "(pip install pyserial)")
        first = next(other for other in config.streams if getattr(other, "modbus", None) is not None
                     and other.modbus.serial is not None and other.modbus.serial.port == settings.serial.port)
        if first is not stream and first.modbus.serial != settings.serial:
            problems.append(f"{config.path.name}: {stream.place}.modbus.serial: {settings.serial.port} is also used "
                            f"by {first.place} with other line settings; one port has one baud rate and framing")
    return problems
