"""maintenance_quick (structure check) and maintenance_full (check reading a subset of the
data, forget by the job's retention, lock-free prune), seed maintenance commands."""

from __future__ import annotations

from typing import Any

from e3backup.agent.handlers import disk_image
from e3backup.agent.handlers.common import (
    apply_retention,
    job_source_ids,
    open_job_repository,
    repository_stats,
)
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import JobContext
from e3backup.engines.image_backup import image_source_id
from e3backup.repo.check import DataSubset, check_repository
from e3backup.repo.gc import PruneOptions, prune

FULL_READ_SUBSET = "10%"


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    job = JobContext.model_validate(task.job)
    mode = "full" if task.payload.get("command_type") == "maintenance_full" else "quick"
    ctx.emit("REPO_MAINTENANCE_STARTING", "info", mode=mode)
    repo, _ = open_job_repository(job, ctx, create=False)
    subset = DataSubset.parse(FULL_READ_SUBSET) if mode == "full" else None
    report = check_repository(repo, subset=subset, record=True)
    result: dict[str, Any] = {
        "mode": mode,
        "check_ok": report.ok,
        "errors": report.errors[:50],
        "scope": report.scope,
        "snapshots_checked": report.snapshots_checked,
        "packs_read": report.packs_read,
    }
    if mode == "full":
        # The job's retention covers the job's own sources only: a repository shared by
        # several jobs must never lose another job's snapshots to this one's rules.
        sources = job_source_ids(repo, job, _image_sources(job))
        forgotten = apply_retention(repo, job.retention_json, sources, ctx, prune_after=False)
        pruned = prune(repo, PruneOptions())
        result.update(
            forgotten=forgotten,
            packs_deleted=pruned.packs_deleted,
            bytes_deleted=pruned.bytes_deleted,
        )
    result["repository_stats"] = repository_stats(repo)
    ctx.emit("REPO_MAINTENANCE_COMPLETE", "info", mode=mode)
    return {
        "status": "success" if report.ok else "failed",
        "result": result,
        "error": "; ".join(report.errors[:5]) or None,
    }


def _image_sources(job: JobContext) -> list[str]:
    """A disk_image job's source id, from the path its runs back up (snapshots from before
    runs were tagged with their job carry no job tag)."""
    if job.engine != "disk_image" or not (job.disk_source_volume or job.source_path or "").strip():
        return []
    return [image_source_id(disk_image.source_path(job))]
