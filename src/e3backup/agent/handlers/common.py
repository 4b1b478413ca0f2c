"""What every storage-touching handler does first: the policy, the REPO_POLICY event showing the
active settings, the preflight probe and the repository."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from e3backup.agent.destination import destination_of, open_repository
from e3backup.agent.policy import RunPolicy, parse_policy
from e3backup.agent.run_context import RunContext
from e3backup.agent.wire import JobContext, RunAssignment
from e3backup.repo import formats
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository

MAX_SOURCES_REPORTED = 50


def open_job_repository(
    job: JobContext, ctx: RunContext, create: bool = True
) -> tuple[Repository, RunPolicy]:
    policy = parse_policy(job.policy_json, job.vm_config)
    ctx.emit("REPO_POLICY", "info", **policy.describe())
    dest = destination_of(job)
    return open_repository(dest, policy, ctx.emit, create=create), policy


def repository_stats(repo: Repository) -> dict[str, Any]:
    """Size on storage, snapshot count, dedup ratio and snapshots per source for the run's
    results (the server shows them; it never opens a repository)."""
    snapshots = repo.list_snapshots()
    stored = sum(info.size_bytes for info in repo.backend.list(formats.PACKS_PREFIX))
    logical = sum(d.size_bytes for s in snapshots for d in s.disks)
    return {
        "size_bytes": stored,
        "snapshot_count": len(snapshots),
        "logical_bytes": logical,
        "dedup_ratio": round(logical / stored, 3) if stored else None,
        "sources": _per_source(snapshots),
    }


def _per_source(snapshots: list[Snapshot]) -> list[dict[str, Any]]:
    """Snapshot count, newest time and the newest snapshot's size per source (at most
    MAX_SOURCES_REPORTED, most recently backed up first)."""
    groups: dict[str, list[Snapshot]] = {}
    for snap in snapshots:
        groups.setdefault(snap.source_id, []).append(snap)
    rows = []
    for source_id, group in groups.items():
        newest = max(group, key=lambda s: s.time)
        rows.append(
            {
                "source_id": source_id,
                "source_name": newest.source_name or source_id,
                "snapshots": len(group),
                "newest_at": newest.time,
                "logical_bytes": sum(d.size_bytes for d in newest.disks),
            }
        )
    rows.sort(key=lambda r: str(r["newest_at"]), reverse=True)
    return rows[:MAX_SOURCES_REPORTED]


def run_tags(job: RunAssignment) -> tuple[str, ...]:
    """Tags on every snapshot a run writes: the run, and the job (retention and maintenance
    find a job's sources by it, so jobs sharing a repository never prune each other)."""
    return (f"run:{job.run_id}", job_tag(job.job_id))


def job_tag(job_id: int | None) -> str:
    return f"job:{job_id}"


def job_source_ids(repo: Repository, job: JobContext, known: Iterable[str] = ()) -> set[str]:
    """The sources a job has backed up into this repository: those of snapshots carrying its
    tag, plus `known` ones (snapshots written before runs were tagged with their job)."""
    tag = job_tag(job.job_id)
    found = {s.source_id for s in repo.list_snapshots() if tag in s.tags}
    return found | set(known)


def apply_retention(
    repo: Repository,
    retention: dict[str, Any] | None,
    source_ids: Iterable[str],
    ctx: RunContext,
    prune_after: bool = True,
) -> int:
    """The job's retention: forget what it does not keep among the given sources only (never
    another job's), then a lock-free prune with the default grace period when something was
    forgotten and `prune_after`. Returns how many snapshots were forgotten."""
    import time

    from e3backup.repo.gc import PruneOptions, prune
    from e3backup.repo.retention import RetentionPolicy, apply_policy
    from e3backup.repo.tombstones import forget_snapshot

    fields = {
        k: int(v)
        for k, v in (retention or {}).items()
        if k in RetentionPolicy.__dataclass_fields__ and v
    }
    policy = RetentionPolicy(**fields)
    if policy.is_empty():
        return 0
    forgotten = 0
    snapshots = repo.list_snapshots()
    for source_id in sorted(set(source_ids)):
        for decision in apply_policy(snapshots, policy, source_id):
            if not decision.keep:
                forget_snapshot(repo, decision.snapshot, time.time)
                forgotten += 1
    if forgotten and prune_after:
        report = prune(repo, PruneOptions())
        ctx.emit(
            "REPO_MAINTENANCE_COMPLETE",
            "info",
            mode="retention",
            forgotten=forgotten,
            packs_deleted=report.packs_deleted,
        )
    return forgotten
