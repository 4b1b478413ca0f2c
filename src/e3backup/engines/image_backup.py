"""Backing up an image file or block device as one snapshot, and restoring it.

Backups of the same path on the same host form one *source*: the latest snapshot of the source
is the parent of the next backup (dedup base; the base for `--changed-extents`). A snapshot that
`check` recorded as damaged is never a parent: the newest undamaged one is used instead, and since
changed extents are relative to the latest snapshot, the disk is then read in full.

Changed extents are trusted only as far as a sampled re-read of "unchanged" chunks agrees (as
for VMs); a source that shrank while it was read is never saved, one that grew or was written
to is saved with a warning (`Snapshot.extra["warnings"]`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import blake3

from e3backup.core.cancel import CancelToken
from e3backup.core.errors import E3Error
from e3backup.core.ids import new_id
from e3backup.engines.backup import DiskBackup, DiskPlan, default_workers
from e3backup.engines.progress import ProgressCallback, ProgressTracker
from e3backup.engines.restore import DiskRestore
from e3backup.engines.restore_targets import open_target
from e3backup.engines.unchanged_sample import DEFAULT_SAMPLE_CHUNKS, run_checked
from e3backup.repo import verification
from e3backup.repo.manifest import Snapshot
from e3backup.repo.repository import Repository, hostname
from e3backup.repo.session import WriteSession
from e3backup.sources.disk_reader import ChangeDetecting, DiskReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageBackupOptions:
    tags: tuple[str, ...] = ()
    changed_extents: list[tuple[int, int]] | None = None
    workers: int | None = None
    verify_sample_chunks: int = DEFAULT_SAMPLE_CHUNKS
    disk_name: str | None = None  # default: the path's last component


def image_source_id(path: Path) -> str:
    """Stable identity of an image path on this host."""
    key = f"image\0{hostname()}\0{Path(path).resolve()}"
    return blake3.blake3(key.encode()).hexdigest()[:32]


def backup_image(
    repo: Repository,
    path: Path,
    reader: DiskReader,
    options: ImageBackupOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Snapshot:
    options = options or ImageBackupOptions()
    cancel = cancel or CancelToken()
    source_id = image_source_id(path)
    parent, rejected = choose_parent(repo, source_id)
    disk_name = options.disk_name or Path(path).name
    parent_disk = None
    if parent is not None:
        parent_disk = next((d for d in parent.disks if d.name == disk_name), None)
    plan = DiskPlan(disk_name, reader, parent_disk, options.changed_extents)
    plan.reason = _read_plan_reason(plan, reader, repo.config.chunk_size)
    if rejected:
        log.warning("snapshot %s failed verification: not used as the parent", rejected[0][:12])
        plan.reason = f"parent failed verification (snapshot {rejected[0][:12]}): full read"
    if plan.reason:  # the incremental base is unusable: read everything
        plan.changed_extents = None
    started = datetime.now(UTC)
    tracker = ProgressTracker(reader.size_bytes, progress, current_item=str(path))
    session = WriteSession(repo)
    try:
        workers = options.workers or default_workers()
        engine = DiskBackup(session, tracker, cancel, workers)
        with cancel.bound():
            with ThreadPoolExecutor(workers, thread_name_prefix="backup") as pool:
                run = run_checked(engine, pool, plan, options.verify_sample_chunks)
            record = run.record
            warnings = [f"disk {record.name}: {record.read_plan_reason}"] if run.mismatch else []
            warnings += reader.changes_since_open() if isinstance(reader, ChangeDetecting) else []
            for warning in warnings:
                log.warning("%s", warning)
            log.info("%s read; waiting for the uploads to finish", path)
            tracker.current_item = f"{path}: uploading"
            tracker.report()
            session.flush()  # the upload is part of the backup: its duration counts it
            tracker.current_item = str(path)
            cancel.raise_if_cancelled()  # a cancel before the snapshot is written wins
        snapshot = Snapshot(
            id=new_id(),
            time=started.isoformat(),
            hostname=hostname(),
            source_type="image",
            source_id=source_id,
            source_name=str(Path(path).resolve()),
            backup_type="Incremental" if record.read_plan == "incremental" else "Full",
            parent=parent.id if parent else None,
            disks=[record],
            tags=list(options.tags),
            duration_s=tracker.elapsed_s,
            extra={"warnings": warnings} if warnings else {},
        )
        session.flush()  # the last uploads can take long: a cancel meanwhile still counts
        cancel.raise_if_cancelled()
        session.commit(snapshot)
    except BaseException:
        cancel.cancel("backup stopped after an error")
        session.abort()
        raise
    tracker.report()
    return snapshot


def choose_parent(repo: Repository, source_id: str) -> tuple[Snapshot | None, list[str]]:
    """The newest snapshot of the source not recorded as damaged, and the newer ids rejected."""
    candidates = [s for s in repo.list_snapshots() if s.source_id == source_id]
    rejected: list[str] = []
    for snapshot in reversed(candidates):
        if not verification.is_damaged(repo, snapshot.id):
            return snapshot, rejected
        rejected.append(snapshot.id)
    return None, rejected


def _read_plan_reason(plan: DiskPlan, reader: DiskReader, chunk_size: int) -> str:
    """Why changed extents cannot be used ('' when they can, or were not given)."""
    if plan.changed_extents is None:
        return ""
    if plan.parent is None:
        return "no parent snapshot of this source: full read"
    if plan.parent.size_bytes != reader.size_bytes:
        return "disk size changed since the parent snapshot: full read"
    if plan.parent.chunk_size != chunk_size:
        return "parent snapshot uses another chunk size: full read"
    return ""


def restore_disk(
    repo: Repository,
    snapshot: Snapshot,
    disk_name: str | None,
    target: Path,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    image_format: str = "raw",
) -> int:
    """Restore one disk of a snapshot to `target`; returns the disk size."""
    if disk_name is None:
        if len(snapshot.disks) != 1:
            names = ", ".join(d.name for d in snapshot.disks)
            raise E3Error(f"snapshot has several disks ({names}); choose one with --disk")
        disk = snapshot.disks[0]
    else:
        try:
            disk = snapshot.disk(disk_name)
        except KeyError as exc:
            raise E3Error(str(exc.args[0])) from None
    tracker = ProgressTracker(disk.size_bytes, progress, current_item=disk.name)
    restore_target = open_target(Path(target), disk.size_bytes, image_format, overwrite)
    cancel = cancel or CancelToken()
    with cancel.bound():
        DiskRestore(repo, tracker, cancel).run(disk, restore_target)
    tracker.report()
    return disk.size_bytes
