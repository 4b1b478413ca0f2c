"""Schedule policy, pure (no database): parse and validate a job's `schedule_json`, compute its
slots in the job's IANA time zone, decide the one catch-up slot after downtime.

Terms: a *slot* is an instant (aware UTC datetime) at which a schedule wants a run. Kinds
(seed 002 "Scheduling": `type/time/weekday/cron`):

- ``{"type": "manual"}`` (or no schedule) — never fires.
- ``{"type": "hourly", "minute": 15}`` — every real hour at that minute of the local clock.
- ``{"type": "daily", "time": "02:30"}`` — every local day at that wall time.
- ``{"type": "weekly", "weekday": "mon" | 0 | ["mon", "thu"], "time": "02:30"}`` — weekdays
  are names or numbers 0 = Monday … 6 = Sunday (Python's numbering, as the job API has it).
- ``{"type": "cron", "cron": "*/15 * * * *"}`` — five-field cron (croniter), local wall time.

Daylight saving time: daily, weekly and cron slots are wall-clock times. A wall time that does
not exist (spring forward) fires shifted by the gap (02:30 in a 02:00→03:00 gap fires at 03:30,
PEP 495 fold=0); a wall time that happens twice (fall back) fires once, at its first occurrence.
Hourly slots follow real hours, so the repeated hour fires twice and a skipped hour never leaves
more than 60 real minutes between slots (90 where a zone shifts by half an hour).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

Kind = Literal["manual", "hourly", "daily", "weekly", "cron"]
KINDS: tuple[Kind, ...] = ("manual", "hourly", "daily", "weekly", "cron")

_WEEKDAY_NAMES = {
    "mon": 0, "monday": 0, "tue": 1, "tuesday": 1, "wed": 2, "wednesday": 2, "thu": 3,
    "thursday": 3, "fri": 4, "friday": 4, "sat": 5, "saturday": 5, "sun": 6, "sunday": 6,
}  # fmt: skip
_ALLOWED_KEYS = {"type", "minute", "time", "weekday", "weekdays", "cron", "expression"}
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
# Walking wall-clock slots past DST folds never needs more than a few steps; the bound only
# guarantees termination for pathological zones.
_MAX_STEPS = 1000


class ScheduleError(ValueError):
    """A schedule the user wrote is invalid; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Schedule:
    kind: Kind
    minute: int = 0
    hour: int = 0
    weekdays: tuple[int, ...] = ()  # 0 = Monday … 6 = Sunday
    cron: str | None = None

    @property
    def is_manual(self) -> bool:
        return self.kind == "manual"

    def cron_expression(self) -> str:
        """The schedule as a five-field cron line (not used for hourly/manual)."""
        if self.kind == "cron":
            assert self.cron is not None
            return self.cron
        if self.kind == "daily":
            return f"{self.minute} {self.hour} * * *"
        if self.kind == "weekly":
            cron_days = sorted((day + 1) % 7 for day in self.weekdays)  # cron: 0 = Sunday
            return f"{self.minute} {self.hour} * * {','.join(map(str, cron_days))}"
        raise ValueError(f"{self.kind} schedules have no cron form")

    def to_json(self) -> dict[str, Any]:
        """Canonical schedule_json (what the server stores after validation)."""
        if self.kind == "manual":
            return {"type": "manual"}
        if self.kind == "hourly":
            return {"type": "hourly", "minute": self.minute}
        if self.kind == "cron":
            return {"type": "cron", "cron": self.cron}
        out: dict[str, Any] = {"type": self.kind, "time": f"{self.hour:02d}:{self.minute:02d}"}
        if self.kind == "weekly":
            out["weekdays"] = list(self.weekdays)
        return out


MANUAL = Schedule("manual")


# --- parsing -------------------------------------------------------------------------------------


def parse_timezone(name: str | None) -> ZoneInfo:
    """An IANA zone by name; None or "" is UTC."""
    if not name:
        return ZoneInfo("UTC")
    if not isinstance(name, str) or name.startswith(("/", ".")) or ".." in name:
        raise ScheduleError("timezone", f"{name!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            "timezone", f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
        ) from None


def parse_schedule(data: Mapping[str, Any] | None) -> Schedule:
    """Validate a schedule_json document; raises ScheduleError naming the bad field."""
    if data is None or data == {}:
        return MANUAL
    if not isinstance(data, Mapping):
        raise ScheduleError("schedule_json", "must be an object")
    data = {key: value for key, value in data.items() if value is not None}  # null = absent
    unknown = sorted(set(data) - _ALLOWED_KEYS)
    if unknown:
        raise ScheduleError(f"schedule_json.{unknown[0]}", "unknown field")
    kind = data.get("type", "manual")
    if kind not in KINDS:
        raise ScheduleError("schedule_json.type", f"must be one of {', '.join(KINDS)}")
    if kind == "manual":
        return MANUAL
    if kind == "hourly":
        return Schedule("hourly", minute=_parse_minute(data.get("minute", 0)))
    if kind == "cron":
        return Schedule("cron", cron=_parse_cron(data.get("cron", data.get("expression"))))
    hour, minute = _parse_time(data.get("time"))
    if kind == "daily":
        return Schedule("daily", minute=minute, hour=hour)
    days = data.get("weekdays", data.get("weekday"))
    return Schedule("weekly", minute=minute, hour=hour, weekdays=_parse_weekdays(days))


def _parse_minute(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 59:
        raise ScheduleError("schedule_json.minute", "must be a whole number from 0 to 59")
    return value


def _parse_time(value: Any) -> tuple[int, int]:
    if value is None:
        raise ScheduleError("schedule_json.time", 'is required (24-hour "HH:MM")')
    match = _TIME_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ScheduleError("schedule_json.time", f'{value!r} is not a 24-hour "HH:MM" time')
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if hour > 23 or minute > 59 or second != 0:
        raise ScheduleError("schedule_json.time", f'{value!r} is not a 24-hour "HH:MM" time')
    return hour, minute


def _parse_weekdays(value: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if value is None or not items:
        raise ScheduleError("schedule_json.weekdays", "at least one weekday is required")
    days: set[int] = set()
    for item in items:
        if isinstance(item, str) and item.strip().lower() in _WEEKDAY_NAMES:
            days.add(_WEEKDAY_NAMES[item.strip().lower()])
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            days.add(item)
        else:
            raise ScheduleError(
                "schedule_json.weekdays", f"{item!r} is not a weekday (mon..sun, or 0=Monday..6)"
            )
    return tuple(sorted(days))


def _parse_cron(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError("schedule_json.cron", "a five-field cron expression is required")
    expression = " ".join(value.split())
    if len(expression.split(" ")) != 5:
        raise ScheduleError(
            "schedule_json.cron",
            f"{value!r} must have five fields: minute hour day-of-month month day-of-week",
        )
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except (ValueError, KeyError, TypeError, OverflowError) as exc:  # CroniterError is a ValueError
        raise ScheduleError("schedule_json.cron", f"{value!r} is not a valid cron: {exc}") from None
    return expression


# --- slots ---------------------------------------------------------------------------------------


def _utc(t: datetime) -> datetime:
    """Naive datetimes are UTC (what SQLite hands back)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _resolve(wall: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall time → UTC; gaps shift forward, repeats take the first (fold=0)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _wall(t: datetime, tz: ZoneInfo) -> datetime:
    return t.astimezone(tz).replace(tzinfo=None, fold=0)


def next_slot_after(schedule: Schedule, tz: ZoneInfo, t: datetime) -> datetime | None:
    """The first slot strictly after `t`, or None for a manual schedule."""
    t = _utc(t)
    if schedule.is_manual:
        return None
    if schedule.kind == "hourly":
        return _next_hourly(schedule.minute, tz, t)
    it = croniter(schedule.cron_expression(), _wall(t, tz))
    for _ in range(_MAX_STEPS):
        slot = _resolve(it.get_next(datetime), tz)
        if slot > t:
            return slot
    raise ValueError(f"no slot found after {t.isoformat()} for {schedule}")


def last_slot_at_or_before(schedule: Schedule, tz: ZoneInfo, t: datetime) -> datetime | None:
    """The latest slot ≤ `t`, or None (manual)."""
    t = _utc(t)
    if schedule.is_manual:
        return None
    if schedule.kind == "hourly":
        return _prev_hourly(schedule.minute, tz, t)
    it = croniter(schedule.cron_expression(), _wall(t, tz) + timedelta(microseconds=1))
    for _ in range(_MAX_STEPS):
        slot = _resolve(it.get_prev(datetime), tz)
        if slot <= t:
            return slot
    raise ValueError(f"no slot found before {t.isoformat()} for {schedule}")


def due_slot(
    schedule: Schedule, tz: ZoneInfo, last_slot: datetime | None, now: datetime
) -> datetime | None:
    """The one slot owed at `now`: the latest slot in (last_slot, now], else None.

    However long the server was down, at most this single catch-up slot is returned — the
    missed ones in between are dropped, never replayed as a storm. With no `last_slot` (a job
    never scheduled before) nothing is owed."""
    if last_slot is None or schedule.is_manual:
        return None
    latest = last_slot_at_or_before(schedule, tz, now)
    if latest is None or latest <= _utc(last_slot):
        return None
    return latest


def iter_slots(schedule: Schedule, tz: ZoneInfo, start: datetime) -> Iterator[datetime]:
    """Slots strictly after `start`, in order."""
    slot = next_slot_after(schedule, tz, start)
    while slot is not None:
        yield slot
        slot = next_slot_after(schedule, tz, slot)


def preview(schedule: Schedule, tz: ZoneInfo, start: datetime, n: int = 5) -> list[datetime]:
    """The next `n` slots after `start` (for the UI), as aware datetimes in the job's zone."""
    out: list[datetime] = []
    for slot in iter_slots(schedule, tz, start):
        if len(out) >= n:
            break
        out.append(slot.astimezone(tz))
    return out


def _hourly_candidate(minute: int, tz: ZoneInfo, hour_start: datetime) -> datetime:
    """The instant in the real (UTC) hour starting at `hour_start` whose local minute matches.

    Local offsets are whole quarter hours, so exactly one minute of each real hour qualifies
    (re-checked once in case a transition falls inside that hour)."""
    offset_min = 0
    for _ in range(2):
        candidate = hour_start + timedelta(minutes=(minute - offset_min) % 60)
        offset = candidate.astimezone(tz).utcoffset() or timedelta(0)
        new_offset = int(offset.total_seconds() // 60)
        if new_offset == offset_min:
            return candidate
        offset_min = new_offset
    return candidate


def _next_hourly(minute: int, tz: ZoneInfo, t: datetime) -> datetime:
    hour_start = t.replace(minute=0, second=0, microsecond=0)
    for step in range(3):
        candidate = _hourly_candidate(minute, tz, hour_start + timedelta(hours=step))
        if candidate > t:
            return candidate
    raise AssertionError("unreachable: every real hour has an hourly slot")


def _prev_hourly(minute: int, tz: ZoneInfo, t: datetime) -> datetime:
    hour_start = t.replace(minute=0, second=0, microsecond=0)
    for step in range(3):
        candidate = _hourly_candidate(minute, tz, hour_start - timedelta(hours=step))
        if candidate <= t:
            return candidate
    raise AssertionError("unreachable: every real hour has an hourly slot")
