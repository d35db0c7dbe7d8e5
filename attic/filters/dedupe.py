"""dedupe: drop a record whose topic carried the very same payload less than ``window`` ago.

For devices that repeat themselves (a retained state published again on every reconnect, a
sensor sending the same reading twice). The window counts from the copy that was stored, so
a value that never changes is still stored once per window — proof the device is alive.
Records without a payload (Modbus rows) compare their fields instead. Time is the records'
reception time (``ts_us``). Dropped records are counted as filtered, not lost.

It remembers what it saw since Attic started: duplicates redelivered by the broker after a
restart of Attic are not caught (see "Delivery guarantees").

Options:

- ``window`` (required): a duration like ``30s`` or ``5m``.

Example::

    - dedupe: {window: 1m}
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from attic.filters._recent import Recent, span_option
from attic.record import Record


def make(window: str | float) -> Callable[[Record], Record | None]:
    """Given the window, return the filter. Raise ValueError for a bad duration."""
    span = span_option("window", window)
    recent = Recent(span)

    def dedupe(record: Record) -> Record | None:
        body = record.payload
        if body is None:
            body = repr(sorted(record.fields.items())).encode()
        digest = hashlib.blake2b(body, digest_size=16).digest()  # a fixed-size key, whatever the payload
        return record if recent.admit((record.topic, digest), record.ts_us) else None
    return dedupe
