"""maintenance_quick (structure check) and maintenance_full (check reading a subset of the
data, forget by the job's retention, lock-free prune), seed maintenance commands."""

from __future__ import annotations

from typing import Any

from e3backup.agent.handlers.common import open_job_repository, repository_stats
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import JobContext
from e3backup.repo.check import DataSubset, check_repository
from e3backup.repo.gc import PruneOptions, prune
from e3backup.repo.retention import RetentionPolicy, apply_policy
from e3backup.repo.tombstones import forget_snapshot

FULL_READ_SUBSET = "10%"


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    import time

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
        fields = {
            k: int(v)
            for k, v in (job.retention_json or {}).items()
            if k in RetentionPolicy.__dataclass_fields__ and v
        }
        policy = RetentionPolicy(**fields)
        forgotten = 0
        if not policy.is_empty():
            for decision in apply_policy(repo.list_snapshots(), policy):
                if not decision.keep:
                    forget_snapshot(repo, decision.snapshot, time.time)
                    forgotten += 1
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
