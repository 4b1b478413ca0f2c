"""Jobs are validated by the scheduler's own parser: what saves is what gets scheduled."""

from __future__ import annotations

import pytest

from e3backup.server.schemas.jobs import ScheduleSpec
from e3backup.server.services.errors import Invalid
from e3backup.server.services.jobs import _validate_timezone, validate_schedule


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "cron", "cron": "0 * * * * *"}, "schedule_json.cron"),  # seconds field
        ({"type": "cron", "cron": "0 0 31 2 *"}, "schedule_json.cron"),  # never fires
        ({"type": "weekly", "time": "02:00", "weekday": "monkey"}, "schedule_json.weekdays"),
        ({"type": "daily"}, "schedule_json.time"),
    ],
)
def test_schedules_the_scheduler_cannot_run_are_rejected(
    spec: dict[str, object], field: str
) -> None:
    with pytest.raises(Invalid) as info:
        validate_schedule(ScheduleSpec.model_validate(spec))
    assert info.value.field == field


def test_good_schedules_and_zones_pass() -> None:
    validate_schedule(
        ScheduleSpec.model_validate({"type": "weekly", "time": "02:00", "weekday": 6})
    )
    validate_schedule(ScheduleSpec.model_validate({"type": "cron", "cron": "*/5 * * * 1-5"}))
    _validate_timezone("Europe/Berlin")
    with pytest.raises(Invalid) as info:
        _validate_timezone("../../etc/passwd")
    assert info.value.field == "timezone"
