"""flatten: every value of a JSON object payload as a column, nested keys joined with ``_``.

An example drop-in filter (see README, "Filters") for devices whose payloads vary, like Tasmota
and Zigbee2MQTT, where declaring each field for ``json_fields`` would be a chore:

- Tasmota ``{"Time": "2026-11-23T10:00:00", "ENERGY": {"Total": 12.5, "Power": 45}}`` becomes
  ``Time``, ``ENERGY_Total``, ``ENERGY_Power``;
- Zigbee2MQTT ``{"temperature": 21.3, "battery": 97, "update": {"state": "idle"}}`` becomes
  ``temperature``, ``battery``, ``update_state``.

Each column gets the type of the first value seen; list items are numbered (``values_0``).

Options:

- ``skip``: keys to leave out (as flattened names, e.g. ``[Time, update_state]``).
- ``prefix`` (default none): put before every column name.
- ``separator`` (default ``_``).
- ``lower`` (default false): lower-case the column names.

Names that would clash with the base columns (``topic``, ``payload``, ...) get a ``_`` after
them. A payload that is not a JSON object goes to ``attic_rejects``.

Example::

    - flatten: {skip: [Time], lower: true}
"""

from __future__ import annotations

import json

from attic.filters import Rejected

BASE = {"ts_us", "topic", "payload", "qos", "retain"}


def make(skip: list | None = None, prefix: str = "", separator: str = "_", lower: bool = False):
    """Called once at start-up with the YAML options; a ValueError is reported as a config error."""
    if not isinstance(skip, (list, type(None))) or not isinstance(prefix, str) or not isinstance(separator, str):
        raise ValueError("skip is a list of names; prefix and separator are text")
    skipped = {str(name).lower() if lower else str(name) for name in skip or ()}

    def walk(node, name, out):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{name}{separator}{key}" if name else str(key), out)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{name}{separator}{i}" if name else str(i), out)
        else:
            name = name.lower() if lower else name
            if name not in skipped:
                column = prefix + name
                out[column + "_" if column.lower() in BASE else column] = node

    def flatten(record):
        try:
            document = json.loads(record.payload)
        except (TypeError, ValueError):
            raise Rejected("payload is not JSON") from None
        if not isinstance(document, dict):
            raise Rejected("payload is not a JSON object")
        walk(document, "", record.fields)
        return record
    return flatten
