"""Recent: which keys were let through lately, for ``throttle`` and ``dedupe``.

Time is the records' own ``ts_us`` (no clock is read), so a test or ``attic try`` gets the same
answer as the service. Memory stays bounded by the keys seen within one span: old entries are
forgotten whenever the table has doubled since the last clean-up (amortised O(1) per record).
"""

from __future__ import annotations

from collections.abc import Hashable

from attic.durations import parse_duration

US = 1_000_000


def span_option(name: str, value: str | float) -> float:
    """An option that is a duration longer than 0, in seconds; ValueError naming the option if not."""
    try:
        span = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None
    if span <= 0:
        raise ValueError(f"{name} must be longer than 0")
    return span


class Recent:
    """Keys with the time each was last let through."""

    def __init__(self, span_s: float):
        self.span_us = int(span_s * US)
        self.seen: dict[Hashable, int] = {}
        self._prune_at = 1024

    def admit(self, key: Hashable, ts_us: int) -> bool:
        """Return True and remember ``ts_us`` unless ``key`` was let through less than a span before.

        A timestamp earlier than the remembered one (a clock stepped back) is let through.
        """
        last = self.seen.get(key)
        if last is not None and 0 <= ts_us - last < self.span_us:
            return False
        self.seen[key] = ts_us
        if len(self.seen) >= self._prune_at:
            cutoff = ts_us - self.span_us
            self.seen = {k: t for k, t in self.seen.items() if t > cutoff}
            self._prune_at = max(1024, 2 * len(self.seen))
        return True
