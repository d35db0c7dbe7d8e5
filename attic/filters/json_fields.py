"""json_fields: take values out of a JSON payload into typed columns.

Options:

- ``fields`` (required): which values to take, as ``{path: type}`` or a list of paths. A path
  is dotted (``sensor.temp`` reads ``{"sensor": {"temp": 21.5}}``; ``values.0`` is the first
  item of a list) and names the column with its dots turned into ``_`` (``sensor_temp``; use
  ``rename`` for another name). The type is ``integer``, ``real``, ``text`` or ``blob`` and
  becomes the column's SQL type; values are converted to it (``"21.5"`` is a fine ``real``,
  objects and lists become JSON text). ``null``, or a list of paths, keeps the JSON type.
- ``required`` (default ``false``): ``true``, or a list of paths, that must be present and not
  null; a record without them goes to ``attic_rejects``. Other missing values are NULL.

A payload that is not JSON (or is a bare number or string), and a value that does not fit its
declared type, send the record to ``attic_rejects`` with ``stage = json_fields``. The raw
payload is stored as always; the columns come beside it.

Example::

    - json_fields:
        fields: {temperature: real, humidity: real, battery.voltage: real, status: text}
        required: [temperature]

``{"temperature": 21.5, "humidity": "48", "battery": {"voltage": 3.9}}`` becomes the columns
``temperature = 21.5``, ``humidity = 48.0``, ``battery_voltage = 3.9``, ``status = NULL``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attic.filters._chain import Rejected, names_problem
from attic.filters._json import MISSING, column_type, convert, lookup, parse_payload, split_path
from attic.record import Record


def make(fields: dict[str, str | None] | list[str], required: bool | list[str] = False) -> Callable[[Record], Record]:
    """Given the paths to read and their types, return the filter. Raise ValueError for bad options."""
    if isinstance(fields, list) and all(isinstance(path, str) for path in fields):
        fields = dict.fromkeys(fields)
    if not isinstance(fields, dict) or not fields:
        raise ValueError("fields: give {path: type, ...} (types: integer, real, text, blob) or a list of paths")
    plan: list[tuple[str, tuple[str, ...], str, str | None]] = []
    for path, type_name in fields.items():
        try:
            parts = split_path(path)
            plan.append((path, parts, "_".join(parts), column_type(type_name)))
        except ValueError as exc:
            raise ValueError(f"fields: {exc}") from None
    problem = names_problem(tuple(column for _, _, column, _ in plan))
    if problem:
        raise ValueError(f"fields: {problem}")
    if required is True or required is False:
        must = set(fields) if required else set()
    elif isinstance(required, list) and all(path in fields for path in required):
        must = set(required)
    else:
        raise ValueError(f"required: true, false, or a list of paths from fields, got {required!r}")
    types = {column: sql_type for _, _, column, sql_type in plan if sql_type is not None}

    def json_fields(record: Record) -> Record:
        document: Any = parse_payload(record.payload)
        if not isinstance(document, (dict, list)):
            raise Rejected(f"payload is JSON but not an object: {record.payload[:60]!r}")
        out = record.fields
        for path, parts, column, sql_type in plan:
            value = lookup(document, parts)
            if value is MISSING or value is None:
                if path in must:
                    raise Rejected(f"{path} is missing")
                out[column] = None
            else:
                out[column] = convert(value, sql_type, path)
        if types:
            record.types.update(types)
        return record
    return json_fields
