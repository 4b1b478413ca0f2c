"""disk_image runs: an image file or block device (an LVM LV through a snapshot) backed up with
the image engine (allocated extents only; unchanged chunks deduplicated against the parent).
On Windows a volume goes through VSS and its NTFS bitmap, a physical disk through its partition
layout (`agent.windows_disk`).

Events (seed 003): DISK_IMAGE_STREAM_START, DISK_IMAGE_READ_PLAN_FALLBACK,
DISK_IMAGE_STREAM_COMPLETED, DISK_IMAGE_FAILED. There is no block-level change tracker for
disk images on this platform: every backup reads the allocated data, the repository stores only
what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e3backup.agent import lvm, windows_disk
from e3backup.agent.handlers.common import (
    apply_retention,
    open_job_repository,
    repository_stats,
    run_tags,
)
from e3backup.agent.run_context import EngineTask, RunContext
from e3backup.agent.wire import JobContext, RunAssignment
from e3backup.core.errors import CancelledError, E3Error, SourceError, UsageError
from e3backup.engines.image_backup import ImageBackupOptions, backup_image
from e3backup.repo.manifest import Snapshot
from e3backup.sources.detect import open_disk
from e3backup.sources.disk_reader import DiskReader

log = logging.getLogger(__name__)


def source_path(job: JobContext) -> Path:
    source = (job.disk_source_volume or job.source_path or "").strip()
    if not source:
        raise UsageError("the job names no disk or image to back up (disk_source_volume)")
    return Path(source)


def run(task: EngineTask, ctx: RunContext) -> dict[str, Any]:
    job = RunAssignment.model_validate(task.job)
    path = source_path(job)
    windows = windows_disk.applies()
    source = (job.disk_source_volume or job.source_path or "").strip() if windows else str(path)
    try:
        if not windows and not path.exists():
            raise SourceError(f"the source {path} does not exist")
        repo, policy = open_job_repository(job, ctx)
        name = windows_disk.disk_name(source) if windows else None
        options = ImageBackupOptions(tags=run_tags(job), workers=policy.parallelism, disk_name=name)
        with _open_source(path, source, job, ctx, windows) as reader:
            log.info("backing up %s (%d bytes)", source, reader.size_bytes)
            ctx.emit(
                "DISK_IMAGE_STREAM_START", "info", source=source, bytes_total=reader.size_bytes
            )
            snapshot = backup_image(repo, path, reader, options, ctx.progress, ctx.cancel)
    except CancelledError:
        raise
    except E3Error as exc:
        ctx.emit("DISK_IMAGE_FAILED", "error", source=source, error=str(exc))
        raise
    disk = snapshot.disks[0]
    log.info(
        "snapshot %s saved (%s): read %d, uploaded %d bytes",
        snapshot.id[:12],
        snapshot.backup_type,
        disk.bytes_read,
        disk.bytes_uploaded,
    )
    ctx.emit("DISK_IMAGE_STREAM_COMPLETED", "info", source=source, bytes_processed=disk.size_bytes)
    apply_retention(repo, job.retention_json, [snapshot.source_id], ctx)
    return _result(snapshot, source, repository_stats(repo))


@contextmanager
def _open_source(
    path: Path, source: str, job: RunAssignment, ctx: RunContext, windows: bool
) -> Iterator[DiskReader]:
    """Windows: VSS/physical disk with a read plan; elsewhere an LVM snapshot or the path."""
    if windows:
        with windows_disk.open_source(source, ctx, job.policy_json) as reader:
            yield reader
        return
    with lvm.point_in_time(path, ctx) as read_path, open_disk(read_path) as reader:
        log.info("reading %s from %s", path, read_path)
        yield reader


def _result(snapshot: Snapshot, source: str, stats: dict[str, Any]) -> dict[str, Any]:
    disk = snapshot.disks[0]
    manifests = {
        disk.name: {
            "snapshot_id": snapshot.id,
            "size_bytes": disk.size_bytes,
            "read_plan": disk.read_plan,
            "read_plan_reason": disk.read_plan_reason,
            "bytes_read": disk.bytes_read,
            "bytes_changed": disk.bytes_changed,
            "bytes_uploaded": disk.bytes_uploaded,
        }
    }
    return {
        "status": "success",
        "snapshot_id": snapshot.id,
        "backup_type": snapshot.backup_type,
        "disk_manifests_json": manifests,
        "source_results": [
            {
                "source": source,
                "snapshot_id": snapshot.id,
                "manifest_id": snapshot.id,
                "backup_type": snapshot.backup_type,
                "disk_manifests": manifests,
                "total_bytes": disk.size_bytes,
                "changed_bytes": disk.bytes_changed,
                "duration_seconds": round(snapshot.duration_s, 3),
            }
        ],
        "repository_stats": stats,
        "bytes_total": disk.size_bytes,
        "bytes_processed": disk.size_bytes,
        "bytes_transferred": disk.bytes_uploaded,
    }
