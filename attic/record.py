"""Record: one message or poll result on its way through a stream's filters to a table.

The MQTT hot path does not build Records: ``on_message`` enqueues a plain tuple
``(ts_us, topic, payload, qos, retain, ack_token)`` and a stream without filters writes those
tuples straight into ``messages``. Records are made only where filters need something to
change, and by the Modbus source, whose rows carry register columns.
"""

from __future__ import annotations

from typing import Any


class Record:
    """A row to store: the raw message plus ``fields`` (extra typed columns) and the target ``table``.

    ``types`` optionally declares SQL types for fields ({"temperature": "REAL"}); a field
    without one gets the type of its first value.
    """

    __slots__ = ("ts_us", "topic", "payload", "qos", "retain", "fields", "table", "types")

    def __init__(self, ts_us: int, topic: str, payload: bytes | None = None, qos: int | None = None,
                 retain: int | None = None, fields: dict[str, Any] | None = None, table: str = "messages",
                 types: dict[str, str] | None = None):
        self.ts_us = ts_us
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.fields = {} if fields is None else fields
        self.table = table
        self.types = {} if types is None else types

    def copy(self) -> Record:
        """An independent copy (for filters that fan one record out into several)."""
        return Record(self.ts_us, self.topic, self.payload, self.qos, self.retain, dict(self.fields),
                      self.table, dict(self.types))

    def __repr__(self) -> str:
        return (f"Record(ts_us={self.ts_us}, topic={self.topic!r}, payload={self.payload!r}, "
                f"fields={self.fields!r}, table={self.table!r})")


class Reject:
    """A record that could not be filtered or stored, bound for ``attic_rejects``."""

    __slots__ = ("ts_us", "topic", "payload", "stage", "error")

    def __init__(self, ts_us: int, topic: str, payload: bytes | None, stage: str, error: str):
        self.ts_us = ts_us
        self.topic = topic
        self.payload = payload
        self.stage = stage
        self.error = error

    def row(self) -> tuple:
        return (self.ts_us, self.topic, self.payload, self.stage, self.error)
