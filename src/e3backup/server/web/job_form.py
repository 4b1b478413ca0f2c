"""The job wizard's form, flat (one input per field, lists as repeated names) ↔ the job API's
wire fields (schemas/jobs.py). Validation stays in the schemas and services: this module only
translates, and maps an error's location back to the input and wizard step it belongs to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from e3backup.server.db.models import Job
from e3backup.server.db.models.jobs import VM_ENGINES
from e3backup.server.schemas.jobs import JobCreate, JobUpdate

STEPS = (
    ("engine", "Job and engine"),
    ("agent", "Agent"),
    ("source", "Source"),
    ("destination", "Destination"),
    ("schedule", "Schedule"),
    ("policy", "Retention and policy"),
    ("review", "Review"),
)
ENGINES = (
    ("disk_image", "Disk image", "A whole disk or volume, block by block"),
    ("kvm", "KVM VMs", "Virtual machines of a KVM/QEMU host"),
    ("hyperv", "Hyper-V VMs", "Virtual machines of a Hyper-V host"),
    ("files", "Files", "Folders and files, with include/exclude patterns"),
    ("sync", "Sync", "Mirror folders to the destination"),
)
KEEP = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
POLICY_NUMBERS = ("bandwidth_limit_kbps", "parallelism")
SECRETS = ("access_key", "secret_key", "repository_password")
TEXT = (
    "name", "engine", "agent_id", "disk_source_volume", "disk_image_format", "dest_type",
    "dest_local_path", "dest_endpoint", "dest_bucket", "dest_prefix", "dest_region",
    "schedule_type", "schedule_time", "schedule_minute", "schedule_weekday", "schedule_cron",
    "timezone",
    "compression", "consistency_level", "include_globs", "exclude_globs", *KEEP, *POLICY_NUMBERS,
)  # fmt: skip
LISTS = ("source_paths", "vms")
CHECKBOXES = ("bucket_auto_create", "enable_change_tracking", "enabled")
DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(TEXT, ""),
    **{name: [] for name in LISTS},
    "engine": "disk_image",
    "dest_type": "local",
    "schedule_type": "manual",
    "schedule_time": "02:00",
    "schedule_minute": "0",
    "schedule_weekday": "0",
    "timezone": "UTC",
    "compression": "zstd",
    "consistency_level": "application",
    "parallelism": "4",
    "bandwidth_limit_kbps": "0",
    "keep_last": "7",
    "keep_daily": "7",
    "keep_weekly": "4",
    "keep_monthly": "6",
    **dict.fromkeys(KEEP[1:2] + KEEP[5:], "0"),
    "bucket_auto_create": False,
    "enable_change_tracking": True,
    "enabled": True,
}
_STEP_OF = {
    "name": "engine", "engine": "engine", "agent_id": "agent",
    "source_paths": "source", "source_path": "source", "disk_source_volume": "source",
    "disk_image_format": "source", "vms": "source", "include_globs": "source",
    "exclude_globs": "source",
}  # fmt: skip
_RENAMED_ERRORS = {"enable_rct": "enable_change_tracking", "weekdays": "weekday"}


@dataclass(frozen=True)
class FieldError:
    field: str  # the form input's name
    step: str  # the wizard step that shows it
    message: str


def values_from_form(form: Any) -> dict[str, Any]:
    """The posted values as the template re-renders them (secrets are never echoed)."""
    values = dict(DEFAULTS)
    values.update({n: str(form.get(n) or "").strip() for n in TEXT})
    values.update({n: [str(v) for v in form.getlist(n) if str(v).strip()] for n in LISTS})
    values.update({n: n in form for n in CHECKBOXES})
    return values


def secrets_from_form(form: Any) -> dict[str, str]:
    """The write-only fields typed in (kept apart: the page never renders them back)."""
    return {n: str(form.get(n)) for n in SECRETS if form.get(n)}


def values_from_job(job: Job) -> dict[str, Any]:
    schedule = dict(job.schedule_json or {"type": "manual"})
    retention = dict(job.retention_json or {})
    policy = dict(job.policy_json or {})
    values = dict(DEFAULTS)
    values.update(
        {name: str(getattr(job, name) or "") for name in TEXT if hasattr(Job, name)},
        agent_id=str(job.agent_id or ""),
        source_paths=list(job.source_paths_json or ([job.source_path] if job.source_path else [])),
        vms=[str(v) for v in job.vms_json or []],
        schedule_type=schedule.get("type", "manual"),
        schedule_time=str(schedule.get("time") or DEFAULTS["schedule_time"]),
        schedule_minute=str(schedule.get("minute") or 0),
        schedule_weekday=str(_as_list(schedule.get("weekdays", schedule.get("weekday")) or [0])[0]),
        schedule_cron=str(schedule.get("cron") or ""),
        include_globs="\n".join(policy.get("include_globs") or []),
        exclude_globs="\n".join(policy.get("exclude_globs") or []),
        bucket_auto_create=job.bucket_auto_create,
        enable_change_tracking=bool(policy.get("enable_change_tracking", True)),
        enabled=job.enabled,
    )
    values.update({k: str(retention.get(k, 0)) for k in KEEP})
    values.update(
        {
            k: str(policy[k])
            for k in ("compression", "consistency_level", *POLICY_NUMBERS)
            if k in policy
        }
    )
    return values


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def schedule_json(v: Mapping[str, Any]) -> dict[str, Any]:
    kind = v["schedule_type"] or "manual"
    doc: dict[str, Any] = {"type": kind}
    if kind == "hourly":
        doc["minute"] = v["schedule_minute"] or 0
    elif kind in ("daily", "weekly"):
        doc["time"] = v["schedule_time"] or None
    if kind == "weekly":
        day = v["schedule_weekday"]
        doc["weekday"] = int(day) if day.isdigit() else day or None
    if kind == "cron":
        doc["cron"] = v["schedule_cron"]
    return doc


def wire_fields(
    v: Mapping[str, Any], base_policy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The API's job fields from the form's values; empty numbers keep the schema default, an
    empty secret is left out (on edit: unchanged)."""
    engine = v["engine"]
    policy: dict[str, Any] = {
        **(base_policy or {}),
        "compression": v["compression"] or "zstd",
        "consistency_level": v["consistency_level"] or "application",
        "enable_change_tracking": v["enable_change_tracking"],
        "include_globs": _lines(v["include_globs"]),
        "exclude_globs": _lines(v["exclude_globs"]),
        **{k: v[k] for k in POLICY_NUMBERS if v[k] != ""},
    }
    fields: dict[str, Any] = {
        "name": v["name"],
        "agent_id": v["agent_id"] or None,
        "engine": engine,
        "dest_type": v["dest_type"],
        **{
            k: v[k]
            for k in (
                "dest_local_path",
                "dest_endpoint",
                "dest_bucket",
                "dest_prefix",
                "dest_region",
            )
        },
        "bucket_auto_create": v["bucket_auto_create"],
        "schedule_json": schedule_json(v),
        "timezone": v["timezone"] or "UTC",
        "retention_json": {k: v[k] for k in KEEP if v[k] != ""},
        "policy_json": policy,
        "enabled": v["enabled"],
    }
    if engine in VM_ENGINES:
        fields["vms"] = list(v["vms"])
        fields["vm_config"] = {
            "enable_rct": v["enable_change_tracking"],
            "consistency_level": policy["consistency_level"],
        }
    elif engine == "disk_image":
        fields.update(
            disk_source_volume=v["disk_source_volume"], disk_image_format=v["disk_image_format"]
        )
    else:
        fields["source_paths"] = list(v["source_paths"])
    return fields


def create_spec(values: Mapping[str, Any], secrets: Mapping[str, str]) -> JobCreate:
    """Raises pydantic's ValidationError (see `field_error`)."""
    return JobCreate.model_validate({**wire_fields(values), **secrets})


def update_spec(values: Mapping[str, Any], secrets: Mapping[str, str], job: Job) -> JobUpdate:
    """Every wizard field is sent; a secret only when typed (empty: unchanged)."""
    return JobUpdate.model_validate({**wire_fields(values, job.policy_json), **secrets})


def form_field(location: Sequence[Any]) -> str:
    """An error location (schemas, services: `schedule_json.cron`) → the form input's name."""
    parts = [str(p) for p in location if not isinstance(p, int)]
    if not parts:
        return ""
    head, tail = parts[0], _RENAMED_ERRORS.get(parts[-1], parts[-1])
    if head == "schedule_json" and len(parts) > 1:
        return f"schedule_{tail}"
    if head in ("retention_json", "policy_json", "vm_config") and len(parts) > 1:
        return tail
    return "source_paths" if head == "source_path" else head


def step_of(field: str) -> str:
    if field in _STEP_OF:
        return _STEP_OF[field]
    if field.startswith("dest_") or field in SECRETS or field == "bucket_auto_create":
        return "destination"
    if field.startswith("schedule_") or field == "timezone":
        return "schedule"
    if field in KEEP or field in ("compression", "consistency_level", "enable_change_tracking"):
        return "policy"
    return "policy" if field in POLICY_NUMBERS else "review"


def field_error(location: Sequence[Any] | str | None, message: str) -> FieldError:
    loc = location.split(".") if isinstance(location, str) else list(location or [])
    field = form_field(loc)
    dotted = ".".join(str(p) for p in loc)
    if dotted and message.startswith(dotted + ": "):
        message = message[len(dotted) + 2 :]  # the scheduler prefixes its field
    return FieldError(field, step_of(field), message)


def validation_error(exc: ValidationError) -> FieldError:
    first = exc.errors()[0]
    return field_error(first.get("loc", ()), str(first.get("msg", "invalid value")))
