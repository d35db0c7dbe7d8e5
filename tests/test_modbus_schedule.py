"""Slots and missed polls, without waiting for the clock: the trigger is asked about chosen moments."""

from __future__ import annotations

import queue
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

from attic.config import load_config
from attic.modbusconfig import parse_crontab
from attic.sources.modbus import ModbusSource, Schedule, to_us
from tests.support import write_config

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)  # a Monday, for cron
TODAY = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)  # interval slots count from midnight


def test_every_second_slots_are_whole_seconds():
    schedule = Schedule(1.0, None, UTC)
    assert schedule.grace_s == 1  # APScheduler takes whole seconds
    assert schedule.slot_at(TODAY + timedelta(seconds=3, milliseconds=4)) == TODAY + timedelta(seconds=3)
    assert schedule.slot_at(TODAY + timedelta(seconds=3, milliseconds=900)) == TODAY + timedelta(seconds=3)
    # a poll that starts a hair before the next slot (APScheduler allowed it: within the 1 s grace) still has its slot
    assert schedule.slot_at(TODAY + timedelta(seconds=3, microseconds=999_900)) == TODAY + timedelta(seconds=3)
    assert schedule.slot_at(TODAY + timedelta(seconds=4)) == TODAY + timedelta(seconds=4)
    assert schedule.next_after(TODAY) == TODAY + timedelta(seconds=1)
    assert schedule.between(TODAY, TODAY + timedelta(seconds=4)) == [to_us(TODAY) + i * 1_000_000 for i in (1, 2, 3)]
    assert schedule.between(TODAY, TODAY + timedelta(seconds=1)) == []
    assert to_us(TODAY) % 1_000_000 == 0


def test_every_fifteen_minutes_is_on_the_quarter_hours():
    schedule = Schedule(900.0, None, UTC)
    assert schedule.grace_s == 30
    nxt = schedule.trigger.get_next_fire_time(None, TODAY + timedelta(minutes=7))
    assert nxt == TODAY + timedelta(minutes=15)
    assert schedule.slot_at(TODAY + timedelta(minutes=15, milliseconds=200)) == TODAY + timedelta(minutes=15)
    assert schedule.slot_at(TODAY + timedelta(minutes=16)) is None  # later than the grace: not this poll's slot


def test_sub_second_and_cron_schedules():
    schedule = Schedule(0.25, None, UTC)
    assert schedule.slot_at(TODAY + timedelta(milliseconds=760)) == TODAY + timedelta(milliseconds=750)
    assert schedule.slot_at(TODAY + timedelta(milliseconds=999)) == TODAY + timedelta(milliseconds=750)
    assert len(schedule.between(TODAY, TODAY + timedelta(seconds=1))) == 3
    fields, _ = parse_crontab("*/5 * * * *")
    cron = Schedule(None, tuple(fields.items()), UTC)
    assert cron.next_after(T0) == T0 + timedelta(minutes=5)
    assert cron.slot_at(T0 + timedelta(minutes=5, seconds=2)) == T0 + timedelta(minutes=5)
    assert len(cron.between(T0, T0 + timedelta(hours=1))) == 11
    fields, _ = parse_crontab("30 6 * * 0")  # crontab 0 = Sunday
    sunday = Schedule(None, tuple(fields.items()), UTC).trigger.get_next_fire_time(None, T0)
    assert (sunday.strftime("%A %H:%M"), sunday.date().isoformat()) == ("Sunday 06:30", "2026-11-29")


def make_source(tmp_path):
    config = load_config(write_config(tmp_path, """
        streams:
          - name: meter
            every: 1s
            modbus: {host: 127.0.0.1, port: 1, timeout: 0.2s, registers: [{name: v, address: 0}]}
    """))
    events = []
    source = ModbusSource(config.stream("meter"), config, queue.Queue(), lambda kind, detail: events.append((kind,
                                                                                                            detail)))
    return source, events


def test_skipped_slots_are_recorded_once_whatever_skipped_them(tmp_path):
    source, events = make_source(tmp_path)
    try:
        source._note_gap(T0)
        source._note_gap(T0 + timedelta(seconds=1))
        assert events == []
        # the scheduler reports slot 2 (still busy) and slot 3 (too late); slots 4 and 5 were coalesced silently
        source._scheduler_event(SimpleNamespace(code=EVENT_JOB_MAX_INSTANCES,
                                                scheduled_run_times=[T0 + timedelta(seconds=2)]))
        source._scheduler_event(SimpleNamespace(code=EVENT_JOB_MISSED, scheduled_run_time=T0 + timedelta(seconds=3)))
        source._note_gap(T0 + timedelta(seconds=6))
        assert [kind for kind, _ in events] == ["poll_missed"] * 3
        assert "2026-11-23T10:00:02.000+00:00: the previous poll was still running" in events[0][1]
        assert "started later than the misfire grace allows" in events[1][1]
        assert events[2][1].startswith("2 slots from 2026-11-23T10:00:04.000+00:00: ")
        assert source.poll_missed == 4
    finally:
        source.close()


def test_a_unit_that_fails_backs_off_and_is_recorded(tmp_path):
    source, events = make_source(tmp_path)
    try:
        slot_us = to_us(T0)
        for expected_delay in (1, 2, 4, 8):
            source._unit_failed(1, slot_us, "no response within 0.2s")
            assert source.state[1].next_try_us == slot_us + expected_delay * 1_000_000
        assert source.poll_failed == 4 and source.unit_failed == {1: 4}
        assert events[-1] == ("poll_failed", "unit 1 at 127.0.0.1:1: no response within 0.2s (4 in a row; next try "
                                             "in 8s)")
        source._unit_recovered(1, slot_us + 20_000_000)
        assert events[-1] == ("poll_resumed", "unit 1 at 127.0.0.1:1 answers again after 4 failed polls (20s)")
        assert source.state[1].failures == 0
    finally:
        source.close()
