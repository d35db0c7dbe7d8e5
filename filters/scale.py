"""scale: convert a numeric field to another unit: ``value * factor + offset``.

An example drop-in filter (see README, "Filters"): copy it into your filters folder and
change it. Celsius to Fahrenheit is ``factor: 1.8, offset: 32``; Wh to kWh is ``factor: 0.001``.

Options:

- ``field`` (required): the numeric field to convert (made by an earlier filter).
- ``factor`` (default 1), ``offset`` (default 0).
- ``into``: write the result to this column instead of replacing ``field``.

A record without the field passes unchanged; a field that is not a number sends the record to
``attic_rejects`` (the TypeError is the error text).

Example::

    - json_fields: {fields: {temperature: real}}
    - scale: {field: temperature, factor: 1.8, offset: 32, into: temperature_f}
"""

from __future__ import annotations


def make(field: str, factor: float = 1.0, offset: float = 0.0, into: str | None = None):
    """Called once at start-up with the YAML options; a ValueError is reported as a config error."""
    for name, number in (("factor", factor), ("offset", offset)):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{name} must be a number, got {number!r}")
    target = into or field

    def scale(record):
        """Called for every record, on the stream's writer thread: keep it quick, no I/O."""
        value = record.fields.get(field)
        if value is not None:
            record.fields[target] = value * factor + offset
            record.types[target] = "REAL"
        return record  # or None to drop it, or a list of records to fan out
    return scale
