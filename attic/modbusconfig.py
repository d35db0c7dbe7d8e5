"""The ``modbus:``, ``every:`` and ``cron:`` keys of a Modbus stream (filled in by the Modbus work)."""

from __future__ import annotations

from typing import Any


def parse_modbus_stream(reader: Any) -> tuple[float | None, str | None, Any]:
    """Given the stream's config reader, return (every_s, cron, modbus settings), reporting problems."""
    every_s = reader.duration("every", None, lo=0.01)
    cron = reader.text("cron", None)
    if (every_s is None) == (cron is None):
        reader.bad("every", "give exactly one of every: (like 1s) or cron: (like '*/5 * * * *')")
    return every_s, cron, reader.raw("modbus")


def check_modbus_stream(stream: object, config: object) -> list[str]:
    """Problems found when resolving a Modbus stream's device map and registers (none yet)."""
    return []
