"""JSON payloads for filters: parsing, dotted paths, and values made to fit a declared column type.

Shared by ``json_fields`` and ``device_time`` so that both read a payload and a path like
``sensor.temp`` (or ``values.0`` into a list) the same way. Pure functions: data in, data out.
"""

from __future__ import annotations

import json
from typing import Any

from attic.filters._chain import INT_MAX, INT_MIN, Rejected

TYPES = {"integer": "INTEGER", "real": "REAL", "text": "TEXT", "blob": "BLOB"}
MISSING = object()


def parse_payload(payload: bytes | None) -> Any:
    """Given a raw payload, return the decoded JSON. Raise Rejected when it is not JSON."""
    if payload is None:
        raise Rejected("no payload to read JSON from")
    try:
        return json.loads(payload)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise Rejected(f"payload is not JSON: {exc}") from None


def split_path(path: object) -> tuple[str, ...]:
    """Given ``sensor.temp``, return ``("sensor", "temp")``. Raise ValueError for an empty part."""
    if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
        raise ValueError(f"a field path is dotted text like sensor.temp, got {path!r}")
    return tuple(path.split("."))


def lookup(document: Any, parts: tuple[str, ...]) -> Any:
    """Given decoded JSON and a split path, return the value there, or MISSING."""
    node = document
    for part in parts:
        if isinstance(node, dict):
            node = node.get(part, MISSING)
            if node is MISSING:
                return MISSING
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return MISSING
    return node


def column_type(name: object) -> str | None:
    """Given a YAML type name (integer, real, text, blob, or null for "as it comes"), return the SQL type.

    Raise ValueError for anything else.
    """
    if name is None:
        return None
    if isinstance(name, str) and name.lower() in TYPES:
        return TYPES[name.lower()]
    raise ValueError(f"type must be integer, real, text or blob (or null to keep the JSON type), got {name!r}")


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def convert(value: Any, sql_type: str | None, path: str) -> Any:
    """Given a JSON value, return it as ``sql_type`` wants it (None: as it comes). Raise Rejected.

    null stays NULL. Numbers in strings (``"21.5"``) are accepted for integer and real; objects
    and lists become JSON text.
    """
    if value is None:
        return None
    if sql_type is None:
        if isinstance(value, (dict, list)):
            return _dump(value)
        if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            return float(value)
        return value
    if sql_type == "REAL":
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif sql_type == "INTEGER":
        number = value
        if isinstance(value, str):
            try:
                number = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:
                number = None
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, int) and INT_MIN <= number <= INT_MAX:
            return int(number)
    elif sql_type == "TEXT":
        return value if isinstance(value, str) else _dump(value)
    elif sql_type == "BLOB":
        return (value if isinstance(value, str) else _dump(value)).encode()
    raise Rejected(f"{path}: expected {sql_type.lower()}, got {_dump(value)[:60]}")
