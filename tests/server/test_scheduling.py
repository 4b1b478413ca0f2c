"""Schedule policy, table-driven: parsing, slots across DST, catch-up after downtime, preview."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from e3backup.server.scheduling import (
    MANUAL,
    Schedule,
    ScheduleError,
    due_slot,
    last_slot_at_or_before,
    next_slot_after,
    parse_schedule,
    parse_timezone,
    preview,
)

BERLIN = parse_timezone("Europe/Berlin")
NEW_YORK = parse_timezone("America/New_York")
KOLKATA = parse_timezone("Asia/Kolkata")
UTC_ZONE = parse_timezone("UTC")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, MANUAL),
        ({}, MANUAL),
        ({"type": "manual"}, MANUAL),
        ({"type": "hourly"}, Schedule("hourly", minute=0)),
        ({"type": "hourly", "minute": 45}, Schedule("hourly", minute=45)),
        ({"type": "daily", "time": "02:30"}, Schedule("daily", minute=30, hour=2)),
        ({"type": "daily", "time": "7:05:00"}, Schedule("daily", minute=5, hour=7)),
        (
            {"type": "weekly", "weekday": "Mon", "time": "23:59"},
            Schedule("weekly", minute=59, hour=23, weekdays=(0,)),
        ),
        (
            {"type": "weekly", "weekdays": [6, "thursday", 3], "time": "00:00"},
            Schedule("weekly", weekdays=(3, 6)),
        ),
        # the job API stores every field of its model, unused ones as null
        (
            {"type": "hourly", "time": None, "minute": None, "weekday": None, "cron": None},
            Schedule("hourly", minute=0),
        ),
        ({"type": "cron", "cron": " */15   *  * * 1-5 "}, Schedule("cron", cron="*/15 * * * 1-5")),
        ({"type": "cron", "expression": "0 3 * * *"}, Schedule("cron", cron="0 3 * * *")),
    ],
)
def test_parse_accepts(data: dict[str, Any] | None, expected: Schedule) -> None:
    assert parse_schedule(data) == expected
    assert parse_schedule(expected.to_json()) == expected  # the canonical form round-trips


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("daily", "schedule_json"),
        ({"type": "yearly"}, "schedule_json.type"),
        ({"type": "daily", "time": "02:30", "tz": "UTC"}, "schedule_json.tz"),
        ({"type": "hourly", "minute": 60}, "schedule_json.minute"),
        ({"type": "hourly", "minute": "5"}, "schedule_json.minute"),
        ({"type": "hourly", "minute": True}, "schedule_json.minute"),
        ({"type": "daily"}, "schedule_json.time"),
        ({"type": "daily", "time": "24:00"}, "schedule_json.time"),
        ({"type": "daily", "time": "2:60"}, "schedule_json.time"),
        ({"type": "daily", "time": "02:30:15"}, "schedule_json.time"),
        ({"type": "daily", "time": "2pm"}, "schedule_json.time"),
        ({"type": "daily", "time": 230}, "schedule_json.time"),
        ({"type": "weekly", "time": "02:30"}, "schedule_json.weekdays"),
        ({"type": "weekly", "time": "02:30", "weekdays": []}, "schedule_json.weekdays"),
        ({"type": "weekly", "time": "02:30", "weekday": 7}, "schedule_json.weekdays"),
        ({"type": "weekly", "time": "02:30", "weekday": "funday"}, "schedule_json.weekdays"),
        ({"type": "cron"}, "schedule_json.cron"),
        ({"type": "cron", "cron": "   "}, "schedule_json.cron"),
        ({"type": "cron", "cron": "* * * *"}, "schedule_json.cron"),
        ({"type": "cron", "cron": "0 * * * * *"}, "schedule_json.cron"),
        ({"type": "cron", "cron": "61 * * * *"}, "schedule_json.cron"),
        ({"type": "cron", "cron": "0 0 31 2 *"}, "schedule_json.cron"),
        ({"type": "cron", "cron": "a b c d e"}, "schedule_json.cron"),
        ({"type": "cron", "cron": 5}, "schedule_json.cron"),
    ],
)
def test_parse_rejects_with_field(data: Any, field: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(data)
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "UTC+3"])
def test_bad_timezone(name: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_timezone(name)
    assert info.value.field == "timezone"


def test_empty_timezone_is_utc() -> None:
    assert parse_timezone(None) == UTC_ZONE
    assert parse_timezone("") == UTC_ZONE


HOURLY_15 = Schedule("hourly", minute=15)
DAILY_0230 = Schedule("daily", minute=30, hour=2)
DAILY_1200 = Schedule("daily", hour=12)
WEEKLY_MON_THU = Schedule("weekly", minute=0, hour=9, weekdays=(0, 3))
CRON_HALF_HOURS = Schedule("cron", cron="*/30 * * * *")
CRON_WEEKDAYS_6 = Schedule("cron", cron="0 6 * * 1-5")


@pytest.mark.parametrize(
    ("schedule", "tz", "after", "expected"),
    [
        (MANUAL, UTC_ZONE, utc(2024, 5, 1), None),
        # plain cases, in UTC and in zones with offsets
        (HOURLY_15, UTC_ZONE, utc(2024, 5, 1, 10, 14), utc(2024, 5, 1, 10, 15)),
        (HOURLY_15, UTC_ZONE, utc(2024, 5, 1, 10, 15), utc(2024, 5, 1, 11, 15)),
        (HOURLY_15, KOLKATA, utc(2024, 5, 1, 10, 0), utc(2024, 5, 1, 10, 45)),  # +05:30
        (DAILY_0230, BERLIN, utc(2024, 5, 1, 0, 0), utc(2024, 5, 1, 0, 30)),  # CEST
        (DAILY_0230, BERLIN, utc(2024, 1, 10, 1, 30), utc(2024, 1, 11, 1, 30)),  # CET
        (DAILY_1200, NEW_YORK, utc(2024, 7, 4, 16, 0), utc(2024, 7, 5, 16, 0)),
        # 2024-05-01 is a Wednesday: the next Mon/Thu 09:00 Berlin is Thursday the 2nd
        (WEEKLY_MON_THU, BERLIN, utc(2024, 5, 1, 12, 0), utc(2024, 5, 2, 7, 0)),
        (WEEKLY_MON_THU, BERLIN, utc(2024, 5, 2, 7, 0), utc(2024, 5, 6, 7, 0)),
        (CRON_WEEKDAYS_6, NEW_YORK, utc(2024, 5, 3, 11, 0), utc(2024, 5, 6, 10, 0)),  # Fri → Mon
        # spring forward, Berlin 2024-03-31 02:00 CET → 03:00 CEST (01:00 UTC)
        (DAILY_0230, BERLIN, utc(2024, 3, 30, 12, 0), utc(2024, 3, 31, 1, 30)),  # 03:30 CEST
        (DAILY_0230, BERLIN, utc(2024, 3, 31, 1, 30), utc(2024, 4, 1, 0, 30)),
        (HOURLY_15, BERLIN, utc(2024, 3, 31, 0, 15), utc(2024, 3, 31, 1, 15)),  # 01:15→03:15
        (CRON_HALF_HOURS, BERLIN, utc(2024, 3, 31, 0, 45), utc(2024, 3, 31, 1, 0)),
        (CRON_HALF_HOURS, BERLIN, utc(2024, 3, 31, 1, 0), utc(2024, 3, 31, 1, 30)),
        # fall back, Berlin 2024-10-27 03:00 CEST → 02:00 CET (01:00 UTC): 02:30 happens twice
        (DAILY_0230, BERLIN, utc(2024, 10, 26, 12, 0), utc(2024, 10, 27, 0, 30)),  # first one
        (DAILY_0230, BERLIN, utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)),  # not again
        (HOURLY_15, BERLIN, utc(2024, 10, 27, 0, 15), utc(2024, 10, 27, 1, 15)),  # 2nd 02:15
        (CRON_HALF_HOURS, BERLIN, utc(2024, 10, 27, 1, 10), utc(2024, 10, 27, 2, 0)),  # 03:00
        # New York spring forward 2024-03-10 02:00 EST → 03:00 EDT
        (DAILY_0230, NEW_YORK, utc(2024, 3, 10, 0, 0), utc(2024, 3, 10, 7, 30)),  # 03:30 EDT
    ],
)
def test_next_slot_after(
    schedule: Schedule, tz: Any, after: datetime, expected: datetime | None
) -> None:
    assert next_slot_after(schedule, tz, after) == expected


def test_naive_datetimes_are_utc() -> None:
    naive = datetime(2024, 5, 1, 10, 14)
    assert next_slot_after(HOURLY_15, UTC_ZONE, naive) == utc(2024, 5, 1, 10, 15)


LORD_HOWE = parse_timezone("Australia/Lord_Howe")  # a half-hour DST shift
# Windows around both 2024 DST changes of the northern and southern hemispheres.
DST_WINDOWS = [
    utc(2024, 3, 8),
    utc(2024, 3, 29),
    utc(2024, 4, 5),
    utc(2024, 10, 4),
    utc(2024, 10, 25),
]


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, KOLKATA, LORD_HOWE])
@pytest.mark.parametrize("schedule", [HOURLY_15, DAILY_0230, WEEKLY_MON_THU, CRON_HALF_HOURS])
def test_slots_strictly_increase_across_dst(schedule: Schedule, tz: Any) -> None:
    """Through DST changes: no duplicate, no backwards step, next/last agree, and hourly slots
    are never more than a real hour apart (90 minutes where the shift is half an hour: the
    local minute does not come round sooner)."""
    max_hourly_gap = timedelta(minutes=90 if tz is LORD_HOWE else 60)
    for window_start in DST_WINDOWS:
        previous = next_slot_after(schedule, tz, window_start)
        assert previous is not None
        while previous < window_start + timedelta(days=4):
            following = next_slot_after(schedule, tz, previous)
            assert following is not None and following > previous
            assert last_slot_at_or_before(schedule, tz, following) == following
            assert last_slot_at_or_before(schedule, tz, following - timedelta(seconds=1)) == (
                previous
            )
            if schedule.kind == "hourly":
                assert following - previous <= max_hourly_gap
            previous = following


@pytest.mark.parametrize(
    ("schedule", "last", "now", "expected"),
    [
        # nothing owed yet
        (DAILY_0230, utc(2024, 5, 1, 0, 30), utc(2024, 5, 1, 12, 0), None),
        # exactly due
        (DAILY_0230, utc(2024, 5, 1, 0, 30), utc(2024, 5, 2, 0, 30), utc(2024, 5, 2, 0, 30)),
        # three weeks down: ONE run, for the latest missed slot
        (DAILY_0230, utc(2024, 5, 1, 0, 30), utc(2024, 5, 22, 9, 0), utc(2024, 5, 22, 0, 30)),
        (HOURLY_15, utc(2024, 5, 1, 0, 15), utc(2024, 5, 3, 7, 14), utc(2024, 5, 3, 6, 15)),
        (CRON_HALF_HOURS, utc(2024, 5, 1), utc(2024, 5, 1, 0, 59), utc(2024, 5, 1, 0, 30)),
        # never scheduled before / manual: nothing owed
        (DAILY_0230, None, utc(2024, 5, 22), None),
        (MANUAL, utc(2024, 5, 1), utc(2024, 5, 22), None),
        # downtime across the spring-forward gap: the shifted slot is the one owed
        (DAILY_0230, utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1, 45), utc(2024, 3, 31, 1, 30)),
    ],
)
def test_due_slot_never_a_storm(
    schedule: Schedule, last: datetime | None, now: datetime, expected: datetime | None
) -> None:
    assert due_slot(schedule, BERLIN, last, now) == expected


def test_due_slot_after_firing_is_quiet() -> None:
    """Once the catch-up slot is recorded as the last one, nothing more is owed until the next."""
    now = utc(2024, 5, 22, 9, 0)
    owed = due_slot(DAILY_0230, BERLIN, utc(2024, 5, 1, 0, 30), now)
    assert owed is not None
    assert due_slot(DAILY_0230, BERLIN, owed, now) is None
    assert due_slot(DAILY_0230, BERLIN, owed, now + timedelta(days=1)) == owed + timedelta(days=1)


def test_preview_in_the_jobs_zone() -> None:
    got = preview(DAILY_0230, BERLIN, utc(2024, 3, 29, 12, 0), n=4)
    assert [t.isoformat() for t in got] == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:30:00+02:00",  # the gap: 02:30 does not exist that night
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]
    assert preview(MANUAL, BERLIN, utc(2024, 1, 1)) == []
    assert len(preview(WEEKLY_MON_THU, NEW_YORK, utc(2024, 1, 1))) == 5
