"""Bare-metal recovery (`e3backup agent recover`, seed 003 recovery sessions): from a rescue
environment, with only a recovery session token, restore the session's backup point onto a disk.

1. The token buys the restore context (backup point, the job's repository and its secrets).
2. Everything that can be checked locally is checked before the server is told anything: the
   repository opens, the snapshot and the disk exist, the target is usable and large enough.
   A mistake there (a wrong --disk, a too-small device) leaves the run untouched for a retry.
3. The first progress update takes the run over from its agent; the disk is then restored like
   any restore (a file under a temporary name renamed at the end; a device in place), with
   progress, events, cancel (local signal or the server) and session refreshes reported.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3backup.agent.destination import destination_of, open_repository
from e3backup.agent.policy import parse_policy
from e3backup.agent.recovery_client import RecoveryClient, RecoveryContext
from e3backup.agent.recovery_reporter import REFRESH_INTERVAL_S, UPDATE_INTERVAL_S
from e3backup.agent.recovery_reporter import RecoveryReporter as Reporter
from e3backup.core.cancel import CancelToken
from e3backup.core.errors import CancelledError, E3Error, UsageError
from e3backup.engines.progress import Progress, ProgressCallback, ProgressTracker
from e3backup.engines.restore import DiskRestore
from e3backup.engines.restore_targets import RestoreTarget, open_target
from e3backup.repo.manifest import DiskRecord, Snapshot
from e3backup.repo.repository import Repository

log = logging.getLogger(__name__)
MIB = 1024 * 1024


class WrongDisk(UsageError):
    """The backup point has no such disk, or several and none was chosen."""

    exit_code = 42


@dataclass(frozen=True)
class RecoverOptions:
    target: Path
    disk: str | None = None
    image_format: str = "raw"
    overwrite: bool = False
    download_limit_kibps: int | None = None
    update_interval_s: float = UPDATE_INTERVAL_S
    refresh_interval_s: float = REFRESH_INTERVAL_S


@dataclass(frozen=True)
class RecoverResult:
    run_id: int
    backup_point_id: int
    snapshot_id: str
    disk: str
    size_bytes: int
    target: str
    session_refreshes: int
    reported: bool

    def to_dict(self) -> dict[str, Any]:
        return {"status": "success", **self.__dict__}


def choose_disk(snapshot: Snapshot, context: RecoveryContext, wanted: str | None) -> DiskRecord:
    """The one disk to restore: `wanted`, or the only one the restore run covers."""
    allowed = {Path(d).name for d in context.disk_filter}
    disks = [d for d in snapshot.disks if not allowed or d.name in allowed]
    names = ", ".join(d.name for d in disks) or "none"
    if wanted is not None:
        found = [d for d in disks if d.name == wanted]
        if not found:
            raise WrongDisk(
                f"backup point {context.backup_point_id} has no disk {wanted!r} in this restore "
                f"(its disks: {names})"
            )
        return found[0]
    if len(disks) != 1:
        raise WrongDisk(
            f"backup point {context.backup_point_id} has several disks ({names}): "
            "choose one with --disk"
        )
    return disks[0]


def recover(
    client: RecoveryClient,
    options: RecoverOptions,
    cancel: CancelToken,
    on_progress: ProgressCallback | None = None,
) -> RecoverResult:
    context = client.restore_context()
    reporter = Reporter(
        client, context.run_id, options.update_interval_s, options.refresh_interval_s
    )
    reporter.session_expires_at = context.session_expires_at
    log.info("restore run %s, backup point %s", context.run_id, context.backup_point_id)
    repo, workers, in_flight = _open_repository(context, options, reporter)
    snapshot = repo.find_snapshot(context.snapshot_id)
    disk = choose_disk(snapshot, context, options.disk)
    cancel.raise_if_cancelled()  # Ctrl-C while the repository opened: the run stays untouched
    target = open_target(options.target, disk.size_bytes, options.image_format, options.overwrite)
    try:
        if reporter.claim(bytes_total=disk.size_bytes, current_item=disk.name, progress_pct=0):
            cancel.cancel("cancel requested on the server")
            reporter.cancelled_by_server = True
        cancel.raise_if_cancelled()
    except BaseException as exc:
        target.abort()
        if isinstance(exc, CancelledError) and reporter.claimed:
            reporter.finish("cancelled", error=str(exc))
        raise
    reporter.emit(
        "RESTORE_STARTING",
        target_path=str(options.target),
        disk_name=disk.name,
        disk_count=1,
        restored_by=f"recovery environment on {socket.gethostname()}",
    )
    tracker = _tracker(disk, reporter, on_progress)
    restore = DiskRestore(repo, tracker, cancel, workers, in_flight)
    _run_restore(restore, disk, target, reporter, cancel)
    reporter.emit(
        "RESTORE_COMPLETED", restored_disks=1, total_disks=1, target_path=str(options.target)
    )
    reported = reporter.finish(
        "success",
        bytes_processed=disk.size_bytes,
        result={"restored": [{"disk": disk.name, "path": str(options.target)}]},
    )
    return RecoverResult(
        run_id=context.run_id,
        backup_point_id=context.backup_point_id,
        snapshot_id=snapshot.id,
        disk=disk.name,
        size_bytes=disk.size_bytes,
        target=str(options.target),
        session_refreshes=reporter.refreshes,
        reported=reported,
    )


def _open_repository(
    context: RecoveryContext, options: RecoverOptions, reporter: Reporter
) -> tuple[Repository, int, int]:
    """(repository, restore workers, bytes in flight) from the job's destination and policy."""
    policy = parse_policy(context.job.policy_json, context.job.vm_config)

    def emit(message_id: str, level: str = "info", **params: Any) -> None:
        reporter.emit(message_id, level, **params)

    repo = open_repository(
        destination_of(context.job),
        policy,
        emit,
        create=False,
        download_limit_kibps=options.download_limit_kibps,
    )
    workers = policy.restore_parallel_workers
    return repo, workers, workers * policy.restore_segment_size_mb * MIB


def _tracker(
    disk: DiskRecord, reporter: Reporter, on_progress: ProgressCallback | None
) -> ProgressTracker:
    """Progress to the reporter and the terminal, plus HYPERV_RESTORE_DISK_PROGRESS each time
    the disk crosses a quarter (as the agent's restore command reports it)."""
    quarters = [0]

    def callback(p: Progress) -> None:
        reporter.progress(p)
        if on_progress is not None:
            on_progress(p)
        quarter = min(4, p.bytes_processed * 4 // (p.bytes_total or 1))
        if quarter > quarters[0]:
            quarters[0] = quarter
            reporter.emit(
                "HYPERV_RESTORE_DISK_PROGRESS",
                disk_name=disk.name,
                bytes_done=p.bytes_processed,
                bytes_total=p.bytes_total,
            )

    return ProgressTracker(disk.size_bytes, callback, current_item=disk.name)


def _run_restore(
    restore: DiskRestore,
    disk: DiskRecord,
    target: RestoreTarget,
    reporter: Reporter,
    cancel: CancelToken,
) -> None:
    """The restore itself; a failure or cancel is reported (and the target discarded by
    DiskRestore) before it propagates."""
    reporter.emit("HYPERV_RESTORE_DISK_STARTING", disk_name=disk.name, disk_index=1, total_disks=1)
    try:
        with reporter.running(cancel), cancel.bound():
            restore.run(disk, target)
    except CancelledError as exc:
        if reporter.fatal is not None:
            raise reporter.fatal from None
        if not reporter.cancelled_by_server:  # the server recorded its own CANCEL_REQUESTED
            reporter.emit("CANCEL_REQUESTED", "warning", reason=str(exc))
        reporter.emit("CANCELLED", "info", reason=str(exc))
        reporter.finish("cancelled", error=str(exc))
        raise
    except E3Error as exc:
        if reporter.fatal is not None:
            raise reporter.fatal from None
        reporter.emit("HYPERV_RESTORE_DISK_FAILED", "error", disk_name=disk.name, message=str(exc))
        reporter.emit("RESTORE_FAILED", "error", message=str(exc), error=str(exc))
        reporter.finish("failed", error=str(exc)[:2000])
        raise
    restore.tracker.report()
    reporter.emit("HYPERV_RESTORE_DISK_COMPLETE", disk_name=disk.name, disk_index=1, total_disks=1)
