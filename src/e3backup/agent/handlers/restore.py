"""restore / hyperv_restore commands (seed 001/002 Restore Pipeline): a snapshot's disks →
raw, VHDX or qcow2 files, in parallel (policy restore_parallel_workers, bytes in flight =
workers x restore_segment_size_mb), progress cumulative over the disks, cancellable; a failed
disk does not stop the others (partial_success).

Target: for a VM restore, a directory (created) with one `<disk>.<format>` per disk; for a disk
image restore of one disk, the target path is the file unless it is an existing directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from e3backup.agent.handlers.common import open_job_repository
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import JobContext
from e3backup.core.errors import CancelledError, E3Error, UsageError
from e3backup.engines.progress import Progress, ProgressCallback, ProgressTracker
from e3backup.engines.restore import DiskRestore
from e3backup.engines.restore_targets import open_target
from e3backup.repo.manifest import DiskRecord, Snapshot

MIB = 1024 * 1024
PROGRESS_EVENT_STEPS = 4  # a DISK_PROGRESS event each quarter of a disk (seed 001)
log = logging.getLogger(__name__)


def _disk_progress_events(ctx: RunContext, disk: DiskRecord) -> ProgressCallback:
    """The run's progress callback, plus HYPERV_RESTORE_DISK_PROGRESS each time the disk
    crosses a quarter (bounded: at most PROGRESS_EVENT_STEPS events per disk)."""
    reported = [0]

    def callback(p: Progress) -> None:
        ctx.progress(p)
        total = p.bytes_total or 1
        step = min(PROGRESS_EVENT_STEPS, p.bytes_processed * PROGRESS_EVENT_STEPS // total)
        if step > reported[0]:
            reported[0] = step
            ctx.emit(
                "HYPERV_RESTORE_DISK_PROGRESS",
                "info",
                disk_name=disk.name,
                bytes_done=p.bytes_processed,
                bytes_total=p.bytes_total,
            )

    return callback


def _targets(
    snapshot: Snapshot, disks: list[DiskRecord], target: Path, fmt: str, vm_restore: bool
) -> list[tuple[DiskRecord, Path]]:
    ext = "img" if fmt == "raw" else fmt
    if vm_restore or len(disks) > 1 or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return [(d, target / f"{Path(d.name).name}.{ext}") for d in disks]
    target.parent.mkdir(parents=True, exist_ok=True)
    return [(disks[0], target)]


def _chosen_disks(snapshot: Snapshot, payload: dict[str, Any]) -> list[DiskRecord]:
    wanted = [str(d).rsplit("/", 1)[-1] for d in payload.get("disk_filter") or []]
    disks = [d for d in snapshot.disks if not wanted or d.name in wanted]
    if not disks:
        raise UsageError(f"snapshot {snapshot.id[:12]} has none of the disks {wanted}")
    return disks


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    job = JobContext.model_validate(task.job)
    payload = task.payload
    vm_restore = payload.get("command_type") == "hyperv_restore"
    prefix = "HYPERV_RESTORE_" if vm_restore else "RESTORE_"
    target = Path(str(payload.get("target_path") or ""))
    fmt = str(payload.get("format") or "raw")
    vm_name = payload.get("vm_name") or payload.get("source") or ""
    try:
        if not str(target):
            raise UsageError("the restore has no target_path")
        repo, policy = open_job_repository(job, ctx, create=False)
        snapshot = repo.find_snapshot(str(payload.get("snapshot_id") or payload["manifest_id"]))
        disks = _chosen_disks(snapshot, payload)
        plan = _targets(snapshot, disks, target, fmt, vm_restore)
    except CancelledError:
        raise
    except (E3Error, KeyError) as exc:
        ctx.emit(prefix + "FAILED", "error", message=str(exc), error=str(exc))
        raise E3Error(f"restore failed: {exc}") from exc
    ctx.bytes_total = sum(d.size_bytes for d in disks)
    ctx.emit(
        prefix + "STARTING", "info", target_path=str(target), vm_name=vm_name, disk_count=len(disks)
    )
    workers = policy.restore_parallel_workers
    in_flight = workers * policy.restore_segment_size_mb * MIB
    restored, failed = [], []
    for index, (disk, out) in enumerate(plan, 1):
        names = {"disk_name": disk.name, "disk_index": index, "total_disks": len(plan)}
        ctx.emit("HYPERV_RESTORE_DISK_STARTING", "info", **names)
        log.info(
            "restoring disk %s of snapshot %s to %s (%s)", disk.name, snapshot.id[:12], out, fmt
        )
        tracker = ProgressTracker(
            disk.size_bytes, _disk_progress_events(ctx, disk), current_item=disk.name
        )
        try:
            restore_target = open_target(out, disk.size_bytes, fmt, overwrite=False)
            DiskRestore(repo, tracker, ctx.cancel, workers, in_flight).run(disk, restore_target)
        except CancelledError:
            raise
        except E3Error as exc:
            failed.append({"disk": disk.name, "error": str(exc)})
            ctx.emit("HYPERV_RESTORE_DISK_FAILED", "error", disk_name=disk.name, message=str(exc))
        else:
            tracker.report()  # the last quarter's DISK_PROGRESS (adds are throttled)
            restored.append({"disk": disk.name, "path": str(out), "size_bytes": disk.size_bytes})
            ctx.emit("HYPERV_RESTORE_DISK_COMPLETE", "info", **names)
        ctx.offset_processed += disk.size_bytes
        ctx.offset_transferred += tracker.bytes_transferred
    return _outcome(ctx, prefix, target, restored, failed, len(plan))


def _outcome(
    ctx: RunContext,
    prefix: str,
    target: Path,
    restored: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    total: int,
) -> dict[str, Any]:
    result = {"restored": restored, "failed": failed, "target_path": str(target)}
    if not failed:
        ctx.emit(
            prefix + ("COMPLETE" if prefix.startswith("HYPERV") else "COMPLETED"),
            "info",
            restored_disks=len(restored),
            total_disks=total,
            target_path=str(target),
        )
        return {"status": "success", "result": result}
    message = "; ".join(f"{f['disk']}: {f['error']}" for f in failed)
    ctx.emit(prefix + "FAILED", "error", message=message, error=message)
    status = "partial_success" if restored else "failed"
    return {"status": status, "error": message[:2000], "result": result}
