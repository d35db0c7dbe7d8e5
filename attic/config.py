"""The YAML config → frozen dataclasses, with every problem reported at once.

Validation collects problems instead of stopping at the first, so a user fixing a config
sees the whole list in one ``attic check``; each problem is one line naming the file, the
line when known, and the place (``streams[1].qos``), and says what to do.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attic.durations import parse_duration
from attic.yamlload import LineDict, LineList, YamlError, load_yaml

DEFAULT_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


class ConfigError(Exception):
    """One or more problems in a config; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Tls:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Broker:
    host: str = "localhost"
    port: int = 1883
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: Tls | None = None
    protocol: str = "5"  # "5" or "3.1.1"
    keepalive_s: float = 30.0
    session_expiry_s: float = 7 * 86400.0
    dropped_topic: str | None = DEFAULT_DROPPED_TOPIC


@dataclass(frozen=True)
class Storage:
    root: Path
    rotate_s: float = 3600.0
    commit_every_s: float = 0.25
    commit_rows: int = 5000
    durability: str = "process"  # "process" or "power"
    queue: int = 100_000
    timezone: str = "utc"  # "utc", "local" or an IANA name
    keep_s: float | None = None


@dataclass(frozen=True)
class Report:
    every_s: float = 60.0
    topic: str | None = None
    prometheus: str | None = None  # "port" or "host:port"


@dataclass(frozen=True)
class FilterSpec:
    name: str
    options: Mapping[str, Any]
    place: str  # e.g. "streams[1].filters[0].range_check", for error messages
    line: int = 0


@dataclass(frozen=True)
class StreamConfig:
    name: str
    source: str  # "mqtt" or "modbus"
    place: str  # "streams[1]"
    settings: Mapping[str, Any]  # the stream's YAML (secrets masked): stored in attic_meta, compared on reload
    filters: tuple[FilterSpec, ...] = ()
    topic: str | None = None
    qos: int = 1
    broker: Broker | None = None
    stall_after_s: float | None = None
    workers: int = 1
    every_s: float | None = None
    cron: str | None = None
    modbus: Any = None


@dataclass(frozen=True)
class Config:
    path: Path
    storage: Storage
    broker: Broker
    report: Report
    filters_dir: Path
    devices_dir: Path | None
    streams: tuple[StreamConfig, ...]

    def stream(self, name: str) -> StreamConfig:
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)


# --------------------------------------------------------------------------- problem collection

class Problems:
    """Collects one-line problems, each prefixed with ``file:line: place:``."""

    def __init__(self, filename: str):
        self.filename = filename
        self.lines: list[str] = []

    def add(self, line: int, place: str, message: str) -> None:
        where = f"{self.filename}:{line}" if line else self.filename
        self.lines.append(f"{where}: {place}: {message}" if place else f"{where}: {message}")


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(choices)}"


def check_keys(node: LineDict, place: str, allowed: list[str], problems: Problems) -> None:
    """Report every key of ``node`` that is not in ``allowed``, with a suggestion."""
    for key in node:
        if key not in allowed:
            problems.add(_line(node, key), _join(place, key), f"unknown key; {_did_you_mean(str(key), allowed)}")


def _line(node: object, key: object) -> int:
    if isinstance(node, LineDict):
        return node.line_of(key)
    if isinstance(node, LineList) and isinstance(key, int):
        return node.line_of(key)
    return getattr(node, "line", 0)


def _join(place: str, key: object) -> str:
    if isinstance(key, int):
        return f"{place}[{key}]"
    return f"{place}.{key}" if place else str(key)


# --------------------------------------------------------------------------- value readers

_MISSING = object()


class _Reader:
    """Reads typed values out of one mapping, reporting problems with their place."""

    def __init__(self, node: object, place: str, problems: Problems, base_dir: Path):
        self.problems = problems
        self.place = place
        self.base_dir = base_dir
        if node is None:
            node = LineDict()
            node.key_lines = {}
        if not isinstance(node, dict):
            problems.add(getattr(node, "line", 0), place, f"must be a mapping of keys, got {type(node).__name__}")
            node = LineDict()
            node.key_lines = {}
        self.node = node

    def bad(self, key: str, message: str) -> None:
        self.problems.add(_line(self.node, key), _join(self.place, key), message)

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.node.get(key, _MISSING)
        return default if value is _MISSING or value is None else value

    def text(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw(key, _MISSING)
        if value is _MISSING:
            if required:
                self.bad(key, "is required")
            return default
        if isinstance(value, (dict, list, bool)):
            self.bad(key, f"must be text, got {value!r}")
            return default
        return str(value)

    def integer(self, key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        value = self.raw(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(value)
        except (TypeError, ValueError):
            self.bad(key, f"must be a whole number, got {value!r}")
            return default
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.bad(key, f"must be {span}, got {number}")
            return default
        return number

    def duration(self, key: str, default: float | None, lo: float = 0.0, hi: float | None = None) -> float | None:
        value = self.raw(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.bad(key, str(exc))
            return default
        if seconds < lo or (hi is not None and seconds > hi):
            span = f"between {lo:g}s and {hi:g}s" if hi is not None else f"at least {lo:g}s"
            self.bad(key, f"must be {span}, got {value!r}")
            return default
        return seconds

    def choice(self, key: str, default: Any, choices: list[Any]) -> Any:
        value = self.raw(key, _MISSING)
        if value is _MISSING:
            return default
        for option in choices:
            if value == option or str(value) == str(option):
                return option
        self.bad(key, f"must be {', '.join(map(str, choices[:-1]))} or {choices[-1]}, got {value!r}")
        return default

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.bad(key, f"must be true or false, got {value!r}")
            return default
        return value

    def path(self, key: str, default: str | None) -> Path | None:
        value = self.text(key, default)
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


# --------------------------------------------------------------------------- ${ENV} expansion

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any, place: str, problems: Problems, parent: Any = None, key: Any = None) -> Any:
    """Return ``node`` with ``${VAR}`` and ``${VAR:-default}`` expanded in every string."""
    if isinstance(node, dict):
        for k in list(node):
            node[k] = _expand_env(node[k], _join(place, k), problems, node, k)
        return node
    if isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _expand_env(item, _join(place, i), problems, node, i)
        return node
    if isinstance(node, str) and "${" in node:
        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name, default)
            if value is None:
                problems.add(_line(parent, key), place,
                             f"environment variable {name} is not set; set it or write ${{{name}:-default}}")
                return match.group(0)  # left as written, so later checks do not pile up on it
            return value
        return _ENV.sub(replace, node)
    return node


# --------------------------------------------------------------------------- sections

BROKER_KEYS = ["host", "port", "client_id", "username", "password", "password_file", "tls", "protocol",
               "keepalive", "session_expiry", "dropped_topic"]
STORAGE_KEYS = ["root", "rotate", "commit_every", "commit_rows", "durability", "queue", "timezone", "keep"]
REPORT_KEYS = ["every", "topic", "prometheus"]
TOP_KEYS = ["broker", "storage", "report", "filters_dir", "devices_dir", "streams"]
STREAM_COMMON = ["name", "filters"]
STREAM_MQTT = ["topic", "qos", "stall_after", "workers"]
STREAM_MODBUS = ["modbus", "every", "cron"]
STREAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _broker(reader: _Reader, base: Broker) -> Broker:
    tls = base.tls
    if "tls" in reader.node:
        tls_node = reader.node["tls"]
        if tls_node is None or tls_node is False:
            tls = None
        elif tls_node is True:
            tls = Tls()
        else:
            tls_reader = _Reader(tls_node, _join(reader.place, "tls"), reader.problems, reader.base_dir)
            check_keys(tls_reader.node, tls_reader.place, ["ca_file", "cert_file", "key_file", "insecure"],
                       reader.problems)
            tls = Tls(ca_file=tls_reader.path("ca_file", None), cert_file=tls_reader.path("cert_file", None),
                      key_file=tls_reader.path("key_file", None), insecure=tls_reader.boolean("insecure", False))
            for name in ("ca_file", "cert_file", "key_file"):
                path = getattr(tls, name)
                if path is not None and not path.is_file():
                    tls_reader.bad(name, f"file {path} does not exist")
            if (tls.cert_file is None) != (tls.key_file is None):
                tls_reader.bad("cert_file", "cert_file and key_file go together; give both or neither")
    password = reader.text("password", base.password)
    if reader.raw("password_file") is not None:
        path = reader.path("password_file", None)
        try:
            password = path.read_text().strip()
        except OSError as exc:
            reader.bad("password_file", f"cannot read {path}: {exc.strerror}")
    protocol = reader.choice("protocol", base.protocol, ["5", "3.1.1"])
    dropped = base.dropped_topic
    if "dropped_topic" in reader.node:  # an explicit null turns the broker drop watch off
        dropped = reader.text("dropped_topic", None)
    host = reader.text("host", base.host)
    if not host:
        reader.bad("host", "must not be empty")
    return Broker(
        host=host,
        port=reader.integer("port", base.port, 1, 65535),
        client_id=reader.text("client_id", base.client_id),
        username=reader.text("username", base.username),
        password=password,
        tls=tls,
        protocol=protocol,
        keepalive_s=reader.duration("keepalive", base.keepalive_s, lo=1, hi=65535),
        session_expiry_s=reader.duration("session_expiry", base.session_expiry_s, lo=0, hi=4294967295),
        dropped_topic=dropped,
    )


def _storage(reader: _Reader) -> Storage:
    check_keys(reader.node, reader.place, STORAGE_KEYS, reader.problems)
    timezone = reader.text("timezone", "utc")
    if timezone not in ("utc", "local"):
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(timezone)
        except Exception:  # noqa: BLE001 - any failure means "not a zone"
            reader.bad("timezone", f"must be utc, local or a time zone name like Europe/Berlin, got {timezone!r}")
            timezone = "utc"
    return Storage(
        root=reader.path("root", "./logs"),
        rotate_s=reader.duration("rotate", 3600.0, lo=1, hi=86400),
        commit_every_s=reader.duration("commit_every", 0.25, lo=0.001, hi=60),
        commit_rows=reader.integer("commit_rows", 5000, 1, 1_000_000),
        durability=reader.choice("durability", "process", ["process", "power"]),
        queue=reader.integer("queue", 100_000, 1, 100_000_000),
        timezone=timezone,
        keep_s=reader.duration("keep", None, lo=86400),
    )


def _report(reader: _Reader) -> Report:
    check_keys(reader.node, reader.place, REPORT_KEYS, reader.problems)
    prometheus = reader.text("prometheus", None)
    if prometheus is not None:
        port = prometheus.rsplit(":", 1)[-1]
        if not port.isdigit() or not 0 < int(port) < 65536:
            reader.bad("prometheus", f"must be a port like 9108 or host:port, got {prometheus!r}")
            prometheus = None
    return Report(every_s=reader.duration("every", 60.0, lo=0.1), topic=reader.text("topic", None),
                  prometheus=prometheus)


def topic_problem(topic: str) -> str | None:
    """Given an MQTT topic filter, return what is wrong with it, or None."""
    if not topic:
        return "must not be empty"
    if "\0" in topic:
        return "must not contain a NUL character"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"'#' must be a whole level and the last one, got {topic!r}"
        if "+" in level and level != "+":
            return f"'+' must be a whole level, got {topic!r}"
    if topic.startswith("$share/"):
        return "give the plain topic; Attic adds $share/ itself when workers > 1"
    return None


def _filters(node: Any, place: str, problems: Problems) -> tuple[FilterSpec, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        problems.add(getattr(node, "line", 0), place, "must be a list of filters, like [json_fields: {...}, drop: {...}]")
        return ()
    specs = []
    for i, item in enumerate(node):
        item_place = f"{place}[{i}]"
        line = _line(node, i)
        if isinstance(item, str):
            specs.append(FilterSpec(item, {}, f"{item_place}.{item}", line))
        elif isinstance(item, dict) and len(item) == 1:
            (name, options), = item.items()
            if options is None:
                options = {}
            if not isinstance(options, dict):
                problems.add(line, f"{item_place}.{name}", f"options must be a mapping, got {options!r}")
                continue
            specs.append(FilterSpec(str(name), dict(options), f"{item_place}.{name}", line))
        else:
            problems.add(line, item_place, "must be a filter name or {name: {options}} with one name")
    return tuple(specs)


def _masked(node: Any) -> Any:
    """Plain JSON-able copy of a YAML node with secrets masked (for attic_meta and reload diffs)."""
    if isinstance(node, dict):
        return {str(k): ("***" if k in ("password",) and v is not None else _masked(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_masked(v) for v in node]
    return node if isinstance(node, (str, int, float, bool, type(None))) else str(node)


def _stream(node: Any, index: int, broker: Broker, problems: Problems, base_dir: Path,
            line: int = 0) -> StreamConfig | None:
    place = f"streams[{index}]"
    if not isinstance(node, dict):
        problems.add(line, place, f"must be a mapping like {{name: tele, topic: 'sensors/#'}}, "
                     f"got {node!r}")
        return None
    reader = _Reader(node, place, problems, base_dir)
    name = reader.text("name", required=True)
    if name is not None and not STREAM_NAME.match(name):
        reader.bad("name", f"must be letters, digits, '_', '-' or '.' (it names a folder), got {name!r}")
    is_modbus = "modbus" in reader.node
    allowed = STREAM_COMMON + (STREAM_MODBUS if is_modbus else STREAM_MQTT + BROKER_KEYS)
    check_keys(reader.node, place, allowed, problems)
    if is_modbus and "workers" in reader.node:  # say why instead of "unknown key"
        problems.lines = [p for p in problems.lines if f" {place}.workers: unknown key" not in p]
        reader.bad("workers", "only MQTT streams have workers (they share a subscription); a Modbus stream "
                              "polls from one process: remove it")
    settings = _masked(reader.node)
    filters = _filters(reader.node.get("filters"), f"{place}.filters", problems)
    if is_modbus:
        from attic.modbusconfig import parse_modbus_stream
        every_s, cron, modbus = parse_modbus_stream(reader)
        return StreamConfig(name=name or f"stream{index}", source="modbus", place=place, settings=settings,
                            filters=filters, every_s=every_s, cron=cron, modbus=modbus)
    topic = reader.text("topic")
    if topic is None:
        reader.bad("topic", "is required: the MQTT topic filter to log (like sensors/#), or modbus: for a meter")
    elif why := topic_problem(topic):
        reader.bad("topic", why)
    stream_broker = _broker(reader, broker)
    workers = reader.integer("workers", 1, 1, 64)
    if workers > 1 and stream_broker.protocol != "5":
        reader.bad("workers", "workers > 1 uses MQTT 5 shared subscriptions; set protocol: 5")
    return StreamConfig(
        name=name or f"stream{index}", source="mqtt", place=place, settings=settings, filters=filters,
        topic=topic, qos=reader.choice("qos", 1, [0, 1, 2]), broker=stream_broker,
        stall_after_s=reader.duration("stall_after", None, lo=1), workers=workers,
    )


def parse_config(document: Any, path: Path) -> Config:
    """Given a loaded YAML document and its file path, return the Config.

    Raise ConfigError listing every problem found.
    """
    problems = Problems(path.name)
    base_dir = path.resolve().parent
    if document is None:
        document = LineDict()
        document.key_lines = {}
    document = _expand_env(document, "", problems)
    top = _Reader(document, "", problems, base_dir)
    check_keys(top.node, "", TOP_KEYS, problems)
    broker_reader = _Reader(top.node.get("broker"), "broker", problems, base_dir)
    check_keys(broker_reader.node, "broker", BROKER_KEYS, problems)
    broker = _broker(broker_reader, Broker())
    storage = _storage(_Reader(top.node.get("storage"), "storage", problems, base_dir))
    report = _report(_Reader(top.node.get("report"), "report", problems, base_dir))
    streams_node = top.node.get("streams")
    streams: list[StreamConfig] = []
    if not streams_node:
        problems.add(_line(top.node, "streams"), "streams", "must list at least one stream, like "
                     "[{name: everything, topic: '#'}]")
    elif not isinstance(streams_node, list):
        problems.add(_line(top.node, "streams"), "streams", "must be a list of streams")
    else:
        seen: dict[str, int] = {}
        for i, node in enumerate(streams_node):
            stream = _stream(node, i, broker, problems, base_dir, _line(streams_node, i))
            if stream is None:
                continue
            if stream.name in seen:
                problems.add(_line(streams_node, i), f"streams[{i}].name",
                             f"duplicate stream name {stream.name!r} (also streams[{seen[stream.name]}]); "
                             "names must be unique")
            seen.setdefault(stream.name, i)
            streams.append(stream)
        ids: dict[tuple, int] = {}
        for stream in streams:
            i = int(stream.place[len("streams["):-1])
            if stream.source != "mqtt" or seen[stream.name] != i:
                continue
            key = (stream.broker.host, stream.broker.port, client_id_for(stream.broker.client_id, stream.name))
            if key in ids:
                problems.add(_line(streams_node, i), f"streams[{i}].client_id",
                             f"client id {key[2]!r} is also used by streams[{ids[key]}]; the broker would "
                             "disconnect one of them: put {stream} in client_id")
            ids.setdefault(key, i)
    if problems.lines:
        raise ConfigError(problems.lines)
    return Config(path=path, storage=storage, broker=broker, report=report,
                  filters_dir=top.path("filters_dir", "filters"), devices_dir=top.path("devices_dir", None),
                  streams=tuple(streams))


def load_config(path: str | os.PathLike) -> Config:
    """Given a config file path, return the Config. Raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: is not UTF-8 text"]) from None
    try:
        document = load_yaml(text, path.name)
    except YamlError as exc:
        raise ConfigError([str(exc)]) from None
    return parse_config(document, path)


DEFAULT_CLIENT_ID = "attic-{host}-{stream}"


def client_id_for(template: str | None, stream: str, worker: int | None = None) -> str:
    """The fixed client id of a stream's persistent session.

    ``template`` may use ``{host}`` and ``{stream}`` (default ``attic-{host}-{stream}``); a
    worker of a shared stream appends ``-w<n>``.
    """
    client_id = (template or DEFAULT_CLIENT_ID).replace("{host}", socket.gethostname()).replace("{stream}", stream)
    return f"{client_id}-w{worker}" if worker is not None else client_id


def settings_json(stream: StreamConfig) -> str:
    """The stream's settings as compact JSON (stored in every file's attic_meta)."""
    return json.dumps(stream.settings, sort_keys=True, separators=(",", ":"))
