"""Retention: `storage.keep` deletes exactly the day folders past it, with faked days on disk."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from attic.store import RotatingStore, days_past_keep
from tests.support import AtticProcess, query, stream_files, write_config

DAY_S = 86400
UTC = timezone.utc


def us(text: str, tz=UTC) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()) * 1_000_000


def test_days_past_keep_counts_whole_days_from_their_end():
    days = ["2026-03-01", "2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10", "notes", "2026-13-01", "2026-3-1"]
    now = us("2026-03-10T12:00:00")
    # keep 2d: cutoff 2026-03-08 12:00; a day goes once it ended before that, so 03-08 stays whole
    assert days_past_keep(days, now, 2 * DAY_S, UTC) == ["2026-03-01", "2026-03-07"]
    assert days_past_keep(days, us("2026-03-11T00:00:00"), 2 * DAY_S, UTC) == ["2026-03-01", "2026-03-07",
                                                                              "2026-03-08"]
    assert days_past_keep(days, now, 90 * DAY_S, UTC) == []
    # day folders in a zone end at that zone's midnight (Berlin is UTC+1 in March)
    berlin = ZoneInfo("Europe/Berlin")
    at_berlin_midnight = us("2026-03-10T00:00:00", berlin)
    assert days_past_keep(["2026-03-08"], at_berlin_midnight, DAY_S, berlin) == ["2026-03-08"]
    assert days_past_keep(["2026-03-08"], at_berlin_midnight - 1, DAY_S, berlin) == []
    assert days_past_keep(["2026-03-08"], at_berlin_midnight, DAY_S, UTC) == []


def fake_days(folder, names):
    """Day folders holding a closed (read-only) file each; recovery leaves read-only files alone."""
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "1700000000.sqlite").write_bytes(b"old")
        (folder / name / "1700000000.sqlite").chmod(0o444)


def test_store_deletes_exactly_the_days_past_keep_but_never_an_open_files_day(tmp_path):
    now = us("2026-03-10T12:00:00")
    store = RotatingStore(tmp_path, "tele", 3600, keep_s=2 * DAY_S, now_us=us("2026-03-01T05:00:00"))
    events = []
    store.on_event = lambda kind, detail: events.append((kind, detail))
    folder = tmp_path / "tele"
    fake_days(folder, ["2026-02-27", "2026-02-28", "2026-03-07", "2026-03-08", "2026-03-09", "keep-me"])
    store.file_for(us("2026-03-01T05:30:00"))  # an open file in a day long past keep (clock was off)
    assert store.apply_retention(now) == ["2026-02-27", "2026-02-28", "2026-03-07"]
    assert sorted(p.name for p in folder.iterdir()) == ["2026-03-01", "2026-03-08", "2026-03-09", "keep-me"]
    assert events == [("retention", "deleted 3 day folder(s) older than 2d: 2026-02-27, 2026-02-28, 2026-03-07")]
    store.close(now)
    assert store.apply_retention(now) == ["2026-03-01"]  # closed now: its day goes too
    assert store.apply_retention(now) == [] and len(events) == 2
    assert RotatingStore(tmp_path, "tele", 3600).apply_retention(now) == []  # no keep: nothing goes


def test_run_deletes_old_days_at_start_and_at_rotation(tmp_path, broker, ns):
    today = datetime.now(UTC).date()
    old = [str(today - timedelta(days=n)) for n in (400, 2)]
    kept = [str(today - timedelta(days=1)), "notes"]
    folder = tmp_path / "logs" / "tele"
    fake_days(folder, old + kept)
    config = write_config(tmp_path, f"""
        broker: {{host: 127.0.0.1, port: {broker.port}, client_id: "{ns}-{{stream}}"}}
        storage: {{root: logs, rotate: 1s, keep: 1d}}
        report: {{every: 1s}}   # writes a row every second, so files rotate every second
        streams: [{{name: tele, topic: "{ns}/#", qos: 1}}]
    """)
    attic = AtticProcess(config).start()
    try:
        attic.wait_log("stream tele: retention: deleted 2 day folder(s) older than 1d")
        assert not any((folder / day).exists() for day in old)
        later = str(today - timedelta(days=3))
        fake_days(folder, [later])  # appears while running: gone at a rotation
        attic.wait_log(f"stream tele: retention: deleted 1 day folder(s) older than 1d: {later}")
    finally:
        assert attic.stop() == 0
    assert all((folder / day).is_dir() for day in kept)
    events = [row for path in stream_files(tmp_path / "logs", "tele") if path.parent.name not in kept
              for row in query(path, "SELECT kind, detail FROM attic_events WHERE kind = 'retention'")]
    assert events == [("retention", f"deleted 2 day folder(s) older than 1d: {old[0]}, {old[1]}"),
                      ("retention", f"deleted 1 day folder(s) older than 1d: {later}")]
