from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from attic.durations import format_duration, parse_duration
from attic.periods import US, period_of

UTC = timezone.utc


@pytest.mark.parametrize("text, seconds", [
    ("250ms", 0.25), ("2s", 2), ("5m", 300), ("1h", 3600), ("1d", 86400), (3, 3), (0.5, 0.5), ("1.5h", 5400),
    (" 10 s ", 10), ("90", 90),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "x", "1w", "-1s", -1, True, None, "1 h 2"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError, match="duration|negative"):
        parse_duration(bad)


def test_format_duration():
    assert [format_duration(s) for s in (3600, 86400, 90, 0.25, 120)] == ["1h", "1d", "90s", "250ms", "2m"]


def ts(*args, tz=UTC):
    return int(datetime(*args, tzinfo=tz).timestamp()) * US


def test_hour_periods_align_to_the_clock():
    p = period_of(ts(2026, 11, 23, 10, 17, 5) + 123, 3600 * US, UTC)
    assert (p.start_us, p.end_us, p.day) == (ts(2026, 11, 23, 10), ts(2026, 11, 23, 11), "2026-11-23")


def test_boundaries_are_half_open():
    start = ts(2026, 11, 23, 10)
    assert period_of(start, 3600 * US, UTC).start_us == start
    assert period_of(start - 1, 3600 * US, UTC).start_us == ts(2026, 11, 23, 9)


def test_odd_rotation_is_cut_at_midnight():
    p = period_of(ts(2026, 11, 23, 22, 30), 7 * 3600 * US, UTC)
    assert (p.start_us, p.end_us) == (ts(2026, 11, 23, 21), ts(2026, 11, 24))
    assert period_of(ts(2026, 11, 24, 0, 0, 1), 7 * 3600 * US, UTC).start_us == ts(2026, 11, 24)


def test_day_periods_in_a_zone_with_dst():
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29 is 23 hours long in Berlin
    p = period_of(ts(2026, 3, 29, 12, tz=berlin), 86400 * US, berlin)
    assert p.day == "2026-03-29"
    assert p.end_us - p.start_us == 23 * 3600 * US
    p = period_of(ts(2026, 3, 29, 5, tz=berlin), 3600 * US, berlin)
    assert p.start_us == ts(2026, 3, 29, 5, tz=berlin)


def test_day_folder_follows_the_zone():
    tokyo = ZoneInfo("Asia/Tokyo")
    moment = ts(2026, 11, 23, 20)  # 05:00 next day in Tokyo
    assert period_of(moment, 3600 * US, UTC).day == "2026-11-23"
    assert period_of(moment, 3600 * US, tokyo).day == "2026-11-24"
