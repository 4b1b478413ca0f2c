"""The Hyper-V provider: discovery, recovery snapshots, RCT, read through the VHDX reader.

prepare: host check (elevated, Hyper-V module) → remove this host's leftover recovery snapshots
→ checkpoints disabled? live read (CrashNoCheckpoint) : CreateSnapshot(recovery, Application;
on failure Crash) → per disk: the snapshot's frozen VHDX opened with `VhdxReader` (parents
followed), RCT chain checked and GetVirtualDiskChanges since the stored id (this host's
record of the parent token, else the server's: records.py). commit (after the backup is
durable): ConvertToReferencePoint, record its RCT ids (host file + each disk's
`committed_token`, which the server keeps), drop the reference point of the job's previous
backup (also when its chain broke and this run read in full). cleanup:
readers closed; an unconverted snapshot destroyed (DestroySnapshot), on
success, failure and cancel alike.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from e3backup.core.errors import E3Error
from e3backup.core.ids import new_id
from e3backup.sources.hypervisors.base import (
    WARNING_CHECKPOINTS_DISABLED,
    WARNING_QUIESCE_FAILED,
    ConsistencyLevel,
    DiskView,
    HypervisorError,
    VmDisk,
    VmInfo,
)
from e3backup.sources.hypervisors.hyperv import discovery, paths, rct, records
from e3backup.sources.hypervisors.hyperv.powershell import (
    DEFAULT_TIMEOUT_S,
    ExecTransport,
    PowerShell,
    Transport,
)
from e3backup.sources.hypervisors.hyperv.snapshots import (
    CONSISTENCY_APPLICATION,
    CONSISTENCY_CRASH,
    NAME_PREFIX,
    ReferencePoint,
    SnapshotDisk,
    Snapshots,
)
from e3backup.sources.hypervisors.hyperv.wmi import DEFAULT_JOB_TIMEOUT_S, Wmi
from e3backup.sources.vhdx.reader import VhdxReader

log = logging.getLogger(__name__)

BUSY_STATES = {"Stopping", "Starting", "Saving", "Pausing", "Resuming", "FastSaving", "Reset"}
QUIET_STATES = {"Off", "Saved", "FastSaved", "Paused"}  # nothing runs in the guest


def default_state_dir() -> Path:
    base = os.environ.get("PROGRAMDATA") if os.name == "nt" else None
    return Path(base or tempfile.gettempdir()) / "E3Backup" / "hyperv"


class HypervProvider:
    name = "hyperv"

    def __init__(
        self,
        transport: Transport | None = None,
        state_dir: Path | None = None,
        path_mapper: paths.PathMapper = paths.local_path,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
        server_records: Iterable[Mapping[str, str]] = (),
    ) -> None:
        """`server_records`: the `rct_ids` per VM the server sent with this run (records.py),
        used when this host has no record of a parent token's recovery snapshot."""
        self.ps = PowerShell(transport or ExecTransport(), timeout_s)
        self.wmi = Wmi(self.ps, job_timeout_s, sleep=sleep)
        self.state = records.RctState(state_dir or default_state_dir())
        self.server_records = records.ServerRecords(server_records)
        self.path_mapper = path_mapper
        self._host_checked = False

    def check_host(self) -> None:
        if not self._host_checked:
            paths.require_elevation(self.ps.run("host-check", paths.ELEVATION_CHECK))
            self._host_checked = True

    def list_vms(self) -> list[VmInfo]:
        self.check_host()
        return discovery.describe(self.ps)

    def get_vm(self, name_or_id: str) -> VmInfo:
        self.check_host()
        return discovery.get_vm(self.ps, name_or_id)

    def prepare(
        self, vm: VmInfo, consistency: ConsistencyLevel, tokens: dict[str, str]
    ) -> HypervPointInTime:
        self.check_host()
        view = HypervPointInTime(self, vm)
        try:
            view.take(consistency, tokens)
        except BaseException:
            view.cleanup()
            raise
        return view


class HypervPointInTime:
    """Implements base.PointInTimeView."""

    def __init__(self, provider: HypervProvider, vm: VmInfo) -> None:
        self.provider = provider
        self.vm = vm
        self.snapshots = Snapshots(provider.wmi, vm.id)
        self.consistency = ConsistencyLevel.CRASH
        self.warnings: list[str] = []
        self.warning_code: str | None = None
        self.checkpoint_id = ""
        self._views: list[DiskView] = []
        self._snapshot_disks: dict[str, SnapshotDisk] = {}
        self._old_points: set[str] = set()
        self._converted = False
        self._cleaned = False

    def disks(self) -> list[DiskView]:
        return list(self._views)

    # --- taking the view ------------------------------------------------------------------------

    def take(self, consistency: ConsistencyLevel, tokens: dict[str, str]) -> None:
        state = self.vm.state
        if state in BUSY_STATES:
            raise HypervisorError(
                f"VM {self.vm.name!r} is {state}: back it up once it is running or off"
            )
        self.remove_leftovers()
        if self.vm.config.get("checkpoint_type") == "Disabled":
            self._live_read()
            return
        self._create_snapshot(consistency, state)
        frozen = self.snapshots.disks(self.checkpoint_id)
        points = self.snapshots.reference_points() if tokens else {}
        for disk in self.vm.disks:
            snap_disk = next((d for d in frozen if paths.same_path(d.path, disk.path)), None)
            if snap_disk is None:
                raise HypervisorError(
                    f"the recovery snapshot of {self.vm.name!r} has no copy of disk "
                    f"{disk.name} ({disk.path}): is it a pass-through or shared disk?"
                )
            self._snapshot_disks[disk.name] = snap_disk
            self._views.append(self._disk_view(disk, snap_disk.path, tokens.get(disk.name), points))

    def remove_leftovers(self) -> None:
        """Recovery snapshots an earlier run on this host left behind (it crashed or was
        killed): named `e3b-…`, or recorded as pending. Their AVHDX would grow forever."""
        state = self.provider.state
        pending = set(state.pending(self.vm.id))
        for instance_id, name in self.snapshots.recovery_snapshots():
            if instance_id not in pending and not name.startswith(NAME_PREFIX):
                continue
            try:
                self.snapshots.destroy(instance_id)
                log.info("removed leftover recovery snapshot %s of %s", name, self.vm.name)
            except E3Error as exc:
                self.warnings.append(f"leftover recovery snapshot {name} not removed: {exc}")
                continue
            state.set_pending(self.vm.id, instance_id, False)

    def _create_snapshot(self, consistency: ConsistencyLevel, state: str) -> None:
        name = f"{NAME_PREFIX}{new_id()[:16]}"
        level = CONSISTENCY_CRASH
        if consistency == ConsistencyLevel.APPLICATION:
            why = self._cannot_quiesce(state)
            if why:
                self._fallback(why, code=state not in QUIET_STATES)
            else:
                level = CONSISTENCY_APPLICATION
        if level == CONSISTENCY_APPLICATION:
            try:
                self.checkpoint_id = self.snapshots.create(name, CONSISTENCY_APPLICATION)
                self.consistency = ConsistencyLevel.APPLICATION
            except HypervisorError as exc:
                self._fallback(f"the application-consistent snapshot failed: {exc}")
        if not self.checkpoint_id:
            self.checkpoint_id = self.snapshots.create(name, CONSISTENCY_CRASH)
            self.consistency = ConsistencyLevel.CRASH
        self.provider.state.set_pending(self.vm.id, self.checkpoint_id, True)

    def _cannot_quiesce(self, state: str) -> str:
        if state in QUIET_STATES:
            return f"the VM is {state}: no running guest to quiesce"
        service = self.vm.config.get("backup_service") or {}
        linux = bool(self.vm.config.get("is_linux"))
        what = "hv_vss_daemon (Linux fsfreeze)" if linux else "VSS"
        if not service.get("present"):
            return f"the VM has no backup integration service ({what})"
        if not service.get("enabled"):
            return f"the backup integration service ({what}) is disabled for this VM"
        status = str(service.get("status") or "")
        if status and status.upper() != "OK":
            return f"the backup integration service ({what}) reports {status!r}"
        return ""

    def _fallback(self, why: str, code: bool = True) -> None:
        self.warnings.append(f"guest could not be quiesced ({why}); using crash-consistent backup")
        if code:
            self.warning_code = WARNING_QUIESCE_FAILED
        self.consistency = ConsistencyLevel.CRASH

    def _live_read(self) -> None:
        self.consistency = ConsistencyLevel.CRASH_NO_CHECKPOINT
        self.warning_code = WARNING_CHECKPOINTS_DISABLED
        self.warnings.append(
            f"Checkpoints are disabled for {self.vm.name!r}: crash-consistent live read of "
            "its disks while it runs (enable Production checkpoints for consistent backups)"
        )
        reason = "checkpoints are disabled for this VM: no RCT reference point, full read"
        for disk in self.vm.disks:
            reader = self._open(disk.path)
            self._views.append(DiskView(disk, reader, None, None, reason))

    def _open(self, path: str) -> VhdxReader:
        try:
            return VhdxReader.open(self.provider.path_mapper(path))
        except OSError as exc:
            raise HypervisorError(f"cannot open {path}: {exc.strerror or exc}") from exc

    def _disk_view(
        self,
        disk: VmDisk,
        frozen_path: str,
        token: str | None,
        points: dict[str, ReferencePoint],
    ) -> DiskView:
        reader = self._open(frozen_path)
        view = DiskView(disk, reader, None)
        config = self.vm.config.get("disks", {}).get(disk.name, {})
        if not disk.change_tracking:
            view.tracking_reason = (
                f"{disk.format} disk or configuration version "
                f"{self.vm.config.get('version')}: no RCT (needs VHDX and version 6.2+), full read"
            )
            return view
        size = reader.size_bytes
        disk_id = str(config.get("disk_identifier", ""))
        view.new_token = rct.Token(self.checkpoint_id, disk_id, size).encode()
        if not token:
            view.tracking_reason = "no change-tracking token from a previous backup: full read"
            return view
        committed = self._committed(disk.name, token)
        if committed is not None and committed.reference_point in points:
            # this job's previous reference point: superseded once this run commits, whether
            # or not its chain still holds (a resized disk would otherwise leave it for ever)
            self._old_points.add(committed.reference_point)
        rct_id, reason = rct.chain_check(disk.name, token, disk_id, size, committed, points)
        if rct_id is None:
            view.tracking_reason = reason
            return view
        try:
            view.changed_extents = rct.changed_extents(
                self.provider.wmi, frozen_path, rct_id, size, reader.logical_sector_size
            )
        except HypervisorError as exc:
            view.tracking_reason = (
                f"Hyper-V cannot list the changes since {rct_id} ({exc}): full read"
            )
        return view

    def _committed(self, disk_name: str, token: str) -> records.Committed | None:
        old = rct.Token.decode(token)
        if old is None:
            return None
        found = self.provider.state.committed(self.vm.id, old.checkpoint)
        if found is not None and disk_name in found.rct_ids:
            return found
        return self.provider.server_records.committed(old.checkpoint, disk_name) or found

    # --- commit and cleanup ---------------------------------------------------------------------

    def commit(self) -> None:
        if not self.checkpoint_id or self._converted:
            return
        self._close_readers()  # the conversion merges the files we read
        reference_point = self.snapshots.convert(self.checkpoint_id)
        self._converted = True
        state = self.provider.state
        state.set_pending(self.vm.id, self.checkpoint_id, False)
        point = self.snapshots.reference_points().get(reference_point)
        if point is None:
            raise HypervisorError(
                f"the new RCT reference point {reference_point or '(unnamed)'} is not listed"
            )
        names = [v.disk.name for v in self._views if v.new_token]
        known = {n: [d.instance_id] for n, d in self._snapshot_disks.items()}
        rct_ids = rct.map_rct_ids(point, names, known)
        state.record(self.vm.id, self.checkpoint_id, records.Committed(point.instance_id, rct_ids))
        for view in self._views:
            if view.new_token and view.disk.name in rct_ids:
                rct_id = rct_ids[view.disk.name]
                view.committed_token = records.encode_record(
                    self.checkpoint_id, point.instance_id, rct_id
                )
        for old in sorted(self._old_points - {point.instance_id}):
            try:
                self.snapshots.destroy_reference_point(old)
            except E3Error as exc:  # harmless: an unused reference point costs little
                log.warning("old RCT reference point %s not removed: %s", old, exc)

    def _close_readers(self) -> None:
        for view in self._views:
            try:
                view.reader.close()
            except E3Error as exc:
                log.warning("closing %s: %s", view.disk.name, exc)

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        self._close_readers()
        if self.checkpoint_id and not self._converted:
            try:
                self.snapshots.destroy(self.checkpoint_id)
                self.provider.state.set_pending(self.vm.id, self.checkpoint_id, False)
            except E3Error as exc:  # the next run removes it (it stays recorded as pending)
                log.warning("recovery snapshot %s not removed: %s", self.checkpoint_id, exc)
