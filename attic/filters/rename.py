"""rename: give fields other column names, or send records to another table.

Options (give ``fields``, ``table``, or both):

- ``fields``: ``{old: new}``. Fields not present are left alone; a renamed field replaces one
  that already has the new name.
- ``table``: the table to write the record to instead of ``messages`` (created on first use
  with the same base columns: ts_us, topic, payload, qos, retain). Names starting with
  ``attic_`` or ``sqlite_`` are reserved.
- ``topic``: only rename records whose topic matches this topic filter (or list of them);
  others pass unchanged. With ``table``, this routes some topics to a table of their own.

Example::

    - json_fields: {fields: {Temp: real, Hum: real}}
    - rename: {fields: {Temp: temperature, Hum: humidity}}
    - rename: {topic: "tele/+/STATE", table: state}
"""

from __future__ import annotations

from collections.abc import Callable

from attic.filters._chain import names_problem, table_problem
from attic.filters._topic import topic_matcher
from attic.record import Record


def make(fields: dict[str, str] | None = None, table: str | None = None,
         topic: str | list[str] | None = None) -> Callable[[Record], Record]:
    """Given the new names, return the filter. Raise ValueError for bad options."""
    if not fields and table is None:
        raise ValueError("give fields: {old: new}, table: <name>, or both")
    if not isinstance(fields, (dict, type(None))) or not all(isinstance(k, str) for k in fields or {}):
        raise ValueError(f"fields: give {{old: new, ...}}, got {fields!r}")
    mapping = dict(fields or {})
    problem = names_problem(tuple(mapping.values()))
    if problem:
        raise ValueError(f"fields: {problem}")
    if table is not None and (problem := table_problem(table)):
        raise ValueError(problem)
    applies = topic_matcher(topic) if topic is not None else None

    def rename(record: Record) -> Record:
        if applies is not None and not applies(record.topic):
            return record
        if mapping and any(name in record.fields for name in mapping):
            record.fields = {mapping.get(k, k): v for k, v in record.fields.items()}
            if record.types:
                record.types = {mapping.get(k, k): t for k, t in record.types.items()}
        if table is not None:
            record.table = table
        return record
    return rename
