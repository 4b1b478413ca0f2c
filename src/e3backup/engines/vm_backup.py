"""Backing up running VMs: one snapshot per VM (every disk + VM configuration + consistency +
change-tracking tokens), Full or Incremental per disk, continuing past failed VMs.

Order per VM (DESIGN §5): register the write session → verify the parent → provider takes the
point-in-time view (freeze only around it) → per disk choose the read plan and stream it
through `DiskBackup` → re-read a random sample of "unchanged" chunks → write the snapshot →
only then commit the provider's tokens → cleanup (always). Progress is one tracker over every
disk of every VM, sized by a pre-scan, so it runs 0-100 % once for the whole job.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import blake3

from e3backup.core.cancel import CancelToken
from e3backup.core.errors import CancelledError, E3Error
from e3backup.core.ids import new_id
from e3backup.engines import vm_result as ev
from e3backup.engines.backup import DiskBackup, DiskPlan, default_workers
from e3backup.engines.progress import ProgressCallback, ProgressTracker
from e3backup.engines.unchanged_sample import (
    DEFAULT_SAMPLE_CHUNKS,
    mismatch_reason,
    run_checked,
)
from e3backup.engines.vm_plan import decide, verify_parent
from e3backup.engines.vm_result import EventCallback, JobResult, VmEvent, VmResult
from e3backup.repo.manifest import DiskRecord, Snapshot
from e3backup.repo.repository import Repository, hostname
from e3backup.repo.session import WriteSession
from e3backup.sources.hypervisors.base import (
    WARNING_CHECKPOINTS_DISABLED,
    ConsistencyLevel,
    DiskView,
    HypervisorProvider,
    PointInTimeView,
    VmInfo,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VmBackupOptions:
    consistency: ConsistencyLevel = ConsistencyLevel.APPLICATION
    verify_sample_chunks: int = DEFAULT_SAMPLE_CHUNKS
    tags: tuple[str, ...] = ()
    workers: int | None = None


def vm_source_id(provider_name: str, vm_id: str) -> str:
    return blake3.blake3(f"vm\0{provider_name}\0{vm_id}".encode()).hexdigest()[:32]


class VmBackupJob:
    def __init__(
        self,
        repo: Repository,
        provider: HypervisorProvider,
        options: VmBackupOptions | None = None,
        events: EventCallback | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.repo = repo
        self.provider = provider
        self.options = options or VmBackupOptions()
        self._events = events
        self.cancel = cancel or CancelToken()
        self.tracker = ProgressTracker(0, progress)
        self.workers = self.options.workers or default_workers()

    def emit(self, message_id: str, level: str = "info", **params: object) -> None:
        log.log(logging.WARNING if level != "info" else logging.INFO, "%s %s", message_id, params)
        if self._events is not None:
            self._events(VmEvent(message_id, dict(params), level))

    def run(self, vm_refs: list[str]) -> JobResult:
        started = time.monotonic()
        # Pre-scan: sizes of every disk of every VM first, so progress is cumulative.
        found: list[tuple[str, VmInfo | E3Error]] = []
        for ref in vm_refs:
            try:
                vm = self.provider.get_vm(ref)
                self.tracker.bytes_total += sum(d.size_bytes for d in vm.disks)
                found.append((ref, vm))
            except E3Error as exc:
                found.append((ref, exc))
        results: list[VmResult] = []
        cancelled = False
        for ref, item in found:
            if self.cancel.cancelled:
                cancelled = True
                break
            if isinstance(item, E3Error):
                result = VmResult(vm_id="", vm_name=ref, status=ev.STATUS_FAILED, error=str(item))
                self.emit(ev.VM_FAILED, "error", vm_name=ref, message=str(item))
                results.append(result)
                continue
            result = self._backup_vm(item)
            results.append(result)
            if result.status == ev.STATUS_CANCELLED:
                cancelled = True
                break
        if cancelled:
            self.emit(ev.CANCELLED)
        status = ev.job_status(results, cancelled)
        ok = sum(r.status == ev.STATUS_SUCCESS for r in results)
        self.emit(
            ev.BACKUP_COMPLETE,
            status=status,
            message=f"{ok} of {len(vm_refs)} VM(s) backed up ({status})",
        )
        self.tracker.report()
        return JobResult(status, results, time.monotonic() - started)

    # --- one VM ---------------------------------------------------------------------------------

    def _backup_vm(self, vm: VmInfo) -> VmResult:
        started = time.monotonic()
        result = VmResult(vm.id, vm.name, total_bytes=sum(d.size_bytes for d in vm.disks))
        processed_before = self.tracker.bytes_processed
        self.emit(ev.VM_STARTING, vm_name=vm.name)
        try:
            with self.cancel.bound():  # storage waits (bandwidth, backoff) obey the cancel too
                self._run_vm(vm, result)
            self.emit(
                ev.VM_COMPLETE,
                vm_name=vm.name,
                backup_type=result.backup_type,
                consistency_level=result.consistency_level,
            )
        except CancelledError as exc:
            result.status, result.error = ev.STATUS_CANCELLED, str(exc)
            self.emit(ev.CANCEL_REQUESTED, "warning", vm_name=vm.name)
        except E3Error as exc:
            result.status, result.error = ev.STATUS_FAILED, str(exc)
            self.emit(ev.VM_FAILED, "error", vm_name=vm.name, message=str(exc))
        if result.status != ev.STATUS_SUCCESS:
            # Keep the job's percentage meaningful: this VM's unread bytes will never come.
            unread = result.total_bytes - (self.tracker.bytes_processed - processed_before)
            self.tracker.bytes_total -= max(unread, 0)
        result.duration_seconds = time.monotonic() - started
        return result

    def _run_vm(self, vm: VmInfo, result: VmResult) -> None:
        # Registered before anything the backup builds on is read (the parent, the index it is
        # verified and deduplicated against): repo/gc.py, the safety rule, holds per session.
        session = WriteSession(self.repo)
        try:
            self._run_session(vm, result, session)
        except BaseException:
            session.abort()
            raise

    def _run_session(self, vm: VmInfo, result: VmResult, session: WriteSession) -> None:
        source_id = vm_source_id(self.provider.name, vm.id)
        parent = self.repo.latest_for_source(source_id)
        parent_reason = verify_parent(self.repo, parent) if parent else ""
        tokens: dict[str, str] = {}
        if parent is not None and not parent_reason:
            tokens = {d.name: d.change_token for d in parent.disks if d.change_token}
        self.cancel.raise_if_cancelled()
        view = self.provider.prepare(vm, self.options.consistency, tokens)
        try:
            self._report_view(vm, view, result)
            records = self._backup_disks(vm, view, parent, parent_reason, result, session)
            snapshot = self._snapshot(vm, view, source_id, parent, records, result)
            session.flush()  # the last uploads can take long: a cancel meanwhile counts
            self.cancel.raise_if_cancelled()
            session.commit(snapshot)
            result.snapshot_id = snapshot.id
            try:  # the snapshot is durable: now the tokens may advance
                view.commit()
            except E3Error as exc:
                result.warnings.append(f"change tracking not advanced: {exc}")
            result.committed_tokens = {
                dv.disk.name: dv.committed_token for dv in view.disks() if dv.committed_token
            }
        finally:
            view.cleanup()

    def _report_view(self, vm: VmInfo, view: PointInTimeView, result: VmResult) -> None:
        result.consistency_level = str(view.consistency)
        result.checkpoint_id = view.checkpoint_id
        result.warnings.extend(view.warnings)
        result.warning_code = view.warning_code
        if view.warning_code == WARNING_CHECKPOINTS_DISABLED:
            self.emit(ev.CHECKPOINTS_DISABLED, "warning", vm_name=vm.name)
        elif view.warning_code:
            message = "; ".join(view.warnings)
            self.emit(ev.QUIESCE_FAILED, "warning", vm_name=vm.name, message=message)
        self.emit(
            ev.CHECKPOINT_CREATED,
            vm_name=vm.name,
            consistency_level=str(view.consistency),
            checkpoint_id=view.checkpoint_id,
        )

    def _backup_disks(
        self,
        vm: VmInfo,
        view: PointInTimeView,
        parent: Snapshot | None,
        parent_reason: str,
        result: VmResult,
        session: WriteSession,
    ) -> list[DiskRecord]:
        records = []
        engine = DiskBackup(session, self.tracker, self.cancel, self.workers)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="vm-backup") as pool:
            for disk_view in view.disks():
                self.tracker.current_item = f"{vm.name}/{disk_view.disk.name}"
                record = self._backup_disk(
                    vm, disk_view, parent, parent_reason, result, engine, pool
                )
                record.change_token = disk_view.new_token
                records.append(record)
                result.bytes_read += record.bytes_read
                result.changed_bytes += record.bytes_changed
                result.bytes_uploaded += record.bytes_uploaded
                if record.change_token:
                    result.change_tokens[record.name] = record.change_token
        return records

    def _backup_disk(
        self,
        vm: VmInfo,
        dv: DiskView,
        parent: Snapshot | None,
        parent_reason: str,
        result: VmResult,
        engine: DiskBackup,
        pool: ThreadPoolExecutor,
    ) -> DiskRecord:
        name = dv.disk.name
        parent_disk = None
        if parent is not None and not parent_reason:  # a parent that failed is not even read
            parent_disk = next((d for d in parent.disks if d.name == name), None)
        size = dv.reader.size_bytes
        chunk_size = self.repo.config.chunk_size
        decision = decide(
            parent_disk, parent_reason, size, chunk_size, dv.changed_extents, dv.tracking_reason
        )
        plan_name = "incremental" if decision.incremental else "full"
        self.emit(
            ev.DISK_PLAN, vm_name=vm.name, disk=name, read_plan=plan_name, reason=decision.reason
        )
        if not decision.incremental:
            return engine.run(DiskPlan(name, dv.reader, parent_disk, None, decision.reason), pool)
        assert parent_disk is not None and dv.changed_extents is not None

        def on_mismatch(chunk: int) -> None:
            result.warnings.append(f"disk {name}: {mismatch_reason(chunk)}")
            self.emit(ev.VERIFY_MISMATCH, "warning", vm_name=vm.name, disk=name, chunk=chunk)

        plan = DiskPlan(name, dv.reader, parent_disk, dv.changed_extents)
        checked = run_checked(engine, pool, plan, self.options.verify_sample_chunks, on_mismatch)
        if checked.check is not None:
            result.verify_bytes_read += checked.check.bytes_read
        return checked.record

    def _snapshot(
        self,
        vm: VmInfo,
        view: PointInTimeView,
        source_id: str,
        parent: Snapshot | None,
        records: list[DiskRecord],
        result: VmResult,
    ) -> Snapshot:
        incremental = bool(records) and all(r.read_plan == "incremental" for r in records)
        result.backup_type = "Incremental" if incremental else "Full"
        snapshot = Snapshot(
            id=new_id(),
            time=datetime.now(UTC).isoformat(),
            hostname=hostname(),
            source_type="vm",
            source_id=source_id,
            source_name=vm.name,
            backup_type=result.backup_type,
            parent=parent.id if parent else None,
            disks=records,
            tags=list(self.options.tags),
            consistency_level=str(view.consistency),
            duration_s=0.0,
            extra={
                "hypervisor": self.provider.name,
                "vm": vm.to_dict(),
                "vm_config": vm.config,
                "checkpoint_id": view.checkpoint_id,
                "warnings": list(result.warnings),
                "warning_code": result.warning_code,
            },
        )
        for record in records:
            result.disk_manifests[record.name] = {
                "snapshot_id": snapshot.id,
                "size_bytes": record.size_bytes,
                "read_plan": record.read_plan,
                "read_plan_reason": record.read_plan_reason,
                "bytes_read": record.bytes_read,
                "bytes_changed": record.bytes_changed,
                "bytes_uploaded": record.bytes_uploaded,
                "change_token": record.change_token,
            }
        return snapshot
