"""The job wizard's translation between its flat form and the job API (web/job_form.py), and
the schedule preview the wizard shows (the scheduler's own policy, DST included)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from starlette.datastructures import FormData

from e3backup.server.db.models import Job
from e3backup.server.schemas.jobs import ScheduleSpec
from e3backup.server.services.errors import Invalid
from e3backup.server.services.jobs import schedule_preview
from e3backup.server.web import job_form

FORM = [
    ("name", " nightly "), ("engine", "files"), ("agent_id", "7"), ("dest_type", "s3"),
    ("dest_bucket", "backups"), ("dest_prefix", "host1"), ("source_paths", "/srv"),
    ("source_paths", "/etc"), ("include_globs", "*.conf\n\n*.txt "), ("schedule_type", "weekly"),
    ("schedule_time", "01:15"), ("schedule_weekday", "4"), ("timezone", "Europe/Berlin"),
    ("keep_daily", "14"), ("keep_last", ""), ("compression", "zstd-9"), ("parallelism", "8"),
    ("enable_change_tracking", "1"), ("repository_password", "pw-typed"), ("access_key", ""),
]  # fmt: skip


def test_form_to_job_fields_and_back() -> None:
    form = FormData(FORM)
    values = job_form.values_from_form(form)
    assert "repository_password" not in values  # never rendered back
    assert job_form.secrets_from_form(form) == {"repository_password": "pw-typed"}
    spec = job_form.create_spec(values, job_form.secrets_from_form(form))
    assert spec.name == "nightly" and spec.agent_id == 7 and spec.source_paths == ["/srv", "/etc"]
    assert spec.schedule_json.model_dump(exclude_none=True) == {
        "type": "weekly",
        "time": "01:15",
        "weekday": 4,
    }
    assert spec.retention_json.keep_daily == 14 and spec.retention_json.keep_last == 0
    assert spec.policy_json.include_globs == ["*.conf", "*.txt"]
    assert spec.policy_json.parallelism == 8 and spec.bucket_auto_create is False
    assert spec.repository_password == "pw-typed" and spec.access_key is None

    job = Job(
        name=spec.name, engine=spec.engine, agent_id=7, dest_type="s3", dest_bucket="backups",
        dest_prefix="host1", source_paths_json=spec.source_paths,
        schedule_json=spec.schedule_json.model_dump(exclude_none=True), timezone="Europe/Berlin",
        retention_json=spec.retention_json.model_dump(), policy_json=spec.policy_json.model_dump(),
        bucket_auto_create=False, enabled=True,
    )  # fmt: skip
    again = job_form.values_from_job(job)
    for name in ("name", "engine", "agent_id", "schedule_weekday", "schedule_time", "keep_daily"):
        assert again[name] == values[name], name
    assert again["source_paths"] == ["/srv", "/etc"]
    update = job_form.update_spec(again, {}, job)
    assert update.repository_password is None  # left empty on edit: unchanged


def test_errors_map_to_their_input_and_step() -> None:
    values = job_form.values_from_form(FormData([*FORM, ("keep_weekly", "-1")]))
    with pytest.raises(ValidationError) as info:
        job_form.create_spec(values, {})
    error = job_form.validation_error(info.value)
    assert (error.field, error.step) == ("keep_weekly", "policy")
    scheduler = job_form.field_error("schedule_json.cron", "schedule_json.cron: needs 5 fields")
    assert scheduler == job_form.FieldError("schedule_cron", "schedule", "needs 5 fields")
    assert job_form.field_error("schedule_json.weekdays", "x").field == "schedule_weekday"
    assert job_form.field_error("dest_bucket", "x").step == "destination"
    assert job_form.field_error("agent_id", "x").step == "agent"
    assert job_form.field_error(None, "x").step == "review"


def test_schedule_preview_follows_the_scheduler_across_dst() -> None:
    spec = ScheduleSpec(type="daily", time="02:30")
    start = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    times = schedule_preview(spec, "Europe/Berlin", start)
    walls = [t.strftime("%m-%d %H:%M %Z") for t in times]
    # 02:30 does not exist on 29 March in Berlin: shifted by the gap (the scheduler's rule)
    assert walls == [
        "03-28 02:30 CET",
        "03-29 03:30 CEST",
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
        "04-01 02:30 CEST",
    ]
    assert schedule_preview(ScheduleSpec(type="manual"), "UTC", start) == []
    with pytest.raises(Invalid) as info:
        schedule_preview(spec, "Mars/Olympus", start)
    assert info.value.field == "timezone"
    with pytest.raises(Invalid) as info:
        schedule_preview(ScheduleSpec(type="cron", cron="61 * * * *"), "UTC", start)
    assert info.value.field == "schedule_json.cron"
