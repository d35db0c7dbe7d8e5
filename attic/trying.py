"""``attic try``: one message through one stream's filters, without a broker and without files.

The way to develop a filter: edit the drop-in, run ``attic try`` with a sample payload, read
the row(s) it would store — table, columns, values and column types — or the rejection with
its stage and error, and repeat. It builds the same FilterChain the service builds (same
loader, same checks) but never opens a file under ``storage.root``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from attic.config import Config, ConfigError
from attic.record import Record, Reject
from attic.writer import sql_type

BASE = ("ts_us", "topic", "payload", "qos", "retain")


@dataclass
class Outcome:
    """What one message became: rows to store, rejects, and the filter that dropped it (if one did)."""

    rows: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    dropped_by: str | None = None

    @property
    def rejected(self) -> bool:
        return bool(self.rejects)


def try_message(config: Config, stream_name: str, topic: str, payload: bytes, retain: bool = False,
                ts_us: int | None = None) -> Outcome:
    """Given a config, a stream name and one message, return what the stream would store.

    Raise ConfigError (one line) for an unknown stream, or the chain's problems.
    """
    try:
        stream = config.stream(stream_name)
    except KeyError:
        names = ", ".join(s.name for s in config.streams)
        raise ConfigError([f"{config.path.name}: no stream {stream_name!r} (streams: {names})"]) from None
    ts_us = time.time_ns() // 1000 if ts_us is None else ts_us
    qos = stream.qos if stream.source == "mqtt" else None
    item = (ts_us, topic, payload, qos, int(retain), None)
    if not stream.filters:
        return Outcome(rows=[Record(ts_us, topic, payload, qos, int(retain))])
    from attic.filters import load_chain
    chain = load_chain(stream.filters, config.filters_dir, filename=config.path.name)
    try:
        rows, rejects = chain.process([item])
    finally:
        chain.close()
    dropped_by = chain.last_drop if not rows and not rejects else None
    return Outcome(rows, rejects, dropped_by)


def _value(value: object) -> str:
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    return repr(value)


def format_row(record: Record) -> list[str]:
    """``table: {column: value, ...}`` and an indented line with the filter columns' SQL types."""
    values = dict(zip(BASE, (record.ts_us, record.topic, record.payload, record.qos, record.retain), strict=True))
    values.update(record.fields)
    lines = [f"{record.table}: {{" + ", ".join(f"{k}: {_value(v)}" for k, v in values.items()) + "}"]
    if record.fields:
        types = []
        for name, value in record.fields.items():
            declared = record.types.get(name) or (sql_type(value) if value is not None else None)
            types.append(f"{name} {declared or '(no column until a value comes)'}")
        lines.append("  column types: " + ", ".join(types))
    return lines


def format_outcome(outcome: Outcome) -> list[str]:
    """The lines ``attic try`` prints."""
    lines: list[str] = []
    for record in outcome.rows:
        lines.extend(format_row(record))
    for reject in outcome.rejects:
        lines.append(f"rejected by {reject.stage}: {reject.error}")
    if not outcome.rows and not outcome.rejects:
        by = f" by {outcome.dropped_by}" if outcome.dropped_by else ""
        lines.append(f"dropped{by}: nothing would be stored")
    return lines
