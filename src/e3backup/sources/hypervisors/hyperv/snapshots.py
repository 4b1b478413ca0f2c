"""Recovery snapshots and RCT reference points through Msvm_VirtualSystemSnapshotService and
Msvm_VirtualSystemReferencePointService (hyperv_v2 documentation; the order follows
Microsoft's xHyper-VBackup sample: CreateSnapshot type 32768 → read → ConvertToReferencePoint).

A recovery snapshot is never a user checkpoint: it does not show in Hyper-V Manager, the VM
writes to a new AVHDX while the snapshot's files stay frozen, and it is either converted to a
reference point (which merges it) or destroyed. Snapshots made here are named `e3b-…`.
"""

from __future__ import annotations

from dataclasses import dataclass

from e3backup.sources.hypervisors.base import HypervisorError
from e3backup.sources.hypervisors.hyperv.powershell import as_int, as_list, as_str
from e3backup.sources.hypervisors.hyperv.wmi import Wmi

SNAPSHOT_TYPE_RECOVERY = 32768
CONSISTENCY_APPLICATION = 1
CONSISTENCY_CRASH = 2
RECOVERY_TYPE = "Microsoft:Hyper-V:Snapshot:Recovery"
NAME_PREFIX = "e3b-"

_VM = r"""
$ns = 'root\virtualization\v2'
$vm = Get-CimInstance -Namespace $ns -ClassName Msvm_ComputerSystem -Filter ("Name='{0}'" -f $p.vm)
if (-not $vm) { throw "Hyper-V has no virtual machine with id $($p.vm)" }
$svc = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSnapshotService
$vssd = 'Msvm_VirtualSystemSettingData'
$recovery = 'Microsoft:Hyper-V:Snapshot:Recovery'
"""
_SNAPSHOT = r"""
$snap = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemSettingData `
  -Filter ("InstanceID='{0}'" -f $p.snapshot)
if (-not $snap) { throw "recovery snapshot $($p.snapshot) no longer exists" }
"""
_RESULT = r"""
@{ ReturnValue = [int]$out.ReturnValue; Job = "$($out.Job.InstanceID)" }
"""

CREATE = (
    _VM
    + r"""
$class = [wmiclass]"\\.\root\virtualization\v2:Msvm_VirtualSystemSnapshotSettingData"
$s = $class.CreateInstance()
$s.ConsistencyLevel = [byte]$p.consistency
$s.IgnoreNonSnapshottableDisks = $true
$s.ElementName = $p.name
$out = Invoke-CimMethod -InputObject $svc -MethodName CreateSnapshot -Arguments @{
  AffectedSystem = $vm; SnapshotSettings = $s.GetText([Management.TextFormat]::WmiDtd20);
  SnapshotType = [uint16]32768 }
@{ ReturnValue = [int]$out.ReturnValue; Job = "$($out.Job.InstanceID)";
   Snapshot = "$($out.ResultingSnapshot.InstanceID)" }
"""
)

FIND_CREATED = (
    _VM
    + r"""
$snap = @(Get-CimAssociatedInstance -InputObject $vm -ResultClassName $vssd |
  Where-Object { $_.VirtualSystemType -eq $recovery -and $_.ElementName -eq $p.name })
@($snap | ForEach-Object { "$($_.InstanceID)" })
"""
)

LIST_RECOVERY = (
    _VM
    + r"""
@(Get-CimAssociatedInstance -InputObject $vm -ResultClassName $vssd |
  Where-Object { $_.VirtualSystemType -eq $recovery } |
  ForEach-Object { @{ InstanceID = "$($_.InstanceID)"; ElementName = $_.ElementName;
    CreationTime = $_.CreationTime } })
"""
)

SNAPSHOT_DISKS = (
    _VM
    + _SNAPSHOT
    + r"""
@(Get-CimAssociatedInstance -InputObject $snap -ResultClassName Msvm_StorageAllocationSettingData |
  Where-Object { $_.ResourceType -eq 31 } |
  ForEach-Object { @{ InstanceID = "$($_.InstanceID)"; Path = "$(@($_.HostResource)[0])" } })
"""
)

DESTROY = (
    _VM
    + _SNAPSHOT
    + r"""
$out = Invoke-CimMethod -InputObject $svc -MethodName DestroySnapshot -Arguments @{
  AffectedSnapshot = $snap }
"""
    + _RESULT
)

CONVERT = (
    _VM
    + _SNAPSHOT
    + r"""
$out = Invoke-CimMethod -InputObject $svc -MethodName ConvertToReferencePoint -Arguments @{
  AffectedSnapshot = $snap; ReferencePointSettings = '' }
$rp = $out.ResultingReferencePoint
if (-not $rp -and $out.Job) {
  $rp = Get-CimAssociatedInstance -InputObject $out.Job `
    -ResultClassName Msvm_VirtualSystemReferencePoint }
@{ ReturnValue = [int]$out.ReturnValue; Job = "$($out.Job.InstanceID)";
   ReferencePoint = "$(@($rp)[0].InstanceID)" }
"""
)

LIST_REFERENCE_POINTS = (
    _VM
    + r"""
@(Get-CimAssociatedInstance -InputObject $vm -ResultClassName Msvm_VirtualSystemReferencePoint |
  ForEach-Object { @{ InstanceID = "$($_.InstanceID)";
    ReferencePointType = [int]$_.ReferencePointType;
    ConsistencyLevel = [int]$_.ConsistencyLevel;
    ResilientChangeTrackingIdentifiers = @($_.ResilientChangeTrackingIdentifiers);
    VirtualDiskIdentifiers = @($_.VirtualDiskIdentifiers) } })
"""
)

DESTROY_REFERENCE_POINT = (
    _VM
    + r"""
$rp = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemReferencePoint `
  -Filter ("InstanceID='{0}'" -f $p.reference_point)
if (-not $rp) { @{ ReturnValue = 0; Job = '' } } else {
  $rps = Get-CimInstance -Namespace $ns -ClassName Msvm_VirtualSystemReferencePointService
  $out = Invoke-CimMethod -InputObject $rps -MethodName DestroyReferencePoint -Arguments @{
    AffectedReferencePoint = $rp }
"""
    + _RESULT
    + "}\n"
)


@dataclass(frozen=True)
class ReferencePoint:
    instance_id: str
    rct_ids: tuple[str, ...]
    disk_ids: tuple[str, ...]  # VirtualDiskIdentifiers, index-aligned with rct_ids


@dataclass(frozen=True)
class SnapshotDisk:
    instance_id: str
    path: str  # the frozen VHDX/AVHDX the snapshot refers to


def wql_literal(text: str) -> str:
    """For the `-Filter "X='{0}'"` of the scripts: WQL escapes quotes and backslashes."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


class Snapshots:
    def __init__(self, wmi: Wmi, vm_id: str) -> None:
        self.wmi = wmi
        self.vm_id = vm_id

    def _params(self, **more: object) -> dict[str, object]:
        return {"vm": wql_literal(self.vm_id), **more}

    def create(self, name: str, consistency: int) -> str:
        level = "application-consistent" if consistency == 1 else "crash-consistent"
        result = self.wmi.call(
            "create-snapshot",
            CREATE,
            self._params(name=name, consistency=consistency),
            f"creating the {level} recovery snapshot",
        )
        snapshot = as_str(result.outputs.get("Snapshot"))
        if not snapshot:  # asynchronous: the job's output is not in the method result
            found = as_list(self.wmi.ps.run("find-snapshot", FIND_CREATED, self._params(name=name)))
            snapshot = as_str(found[0]) if found else ""
        if not snapshot:
            raise HypervisorError(f"Hyper-V made the recovery snapshot {name} but it is not found")
        return snapshot

    def recovery_snapshots(self) -> list[tuple[str, str]]:
        """(InstanceID, ElementName) of every recovery snapshot of the VM."""
        found = as_list(self.wmi.ps.run("list-recovery-snapshots", LIST_RECOVERY, self._params()))
        return [
            (as_str(s.get("InstanceID")), as_str(s.get("ElementName")))
            for s in found
            if isinstance(s, dict)
        ]

    def disks(self, snapshot: str) -> list[SnapshotDisk]:
        found = self.wmi.ps.run(
            "snapshot-disks", SNAPSHOT_DISKS, self._params(snapshot=wql_literal(snapshot))
        )
        return [
            SnapshotDisk(as_str(d.get("InstanceID")), as_str(d.get("Path")))
            for d in as_list(found)
            if isinstance(d, dict) and d.get("Path")
        ]

    def destroy(self, snapshot: str) -> None:
        self.wmi.call(
            "destroy-snapshot",
            DESTROY,
            self._params(snapshot=wql_literal(snapshot)),
            "removing the recovery snapshot",
        )

    def convert(self, snapshot: str) -> str:
        result = self.wmi.call(
            "convert-to-reference-point",
            CONVERT,
            self._params(snapshot=wql_literal(snapshot)),
            "converting the recovery snapshot to an RCT reference point",
        )
        return as_str(result.outputs.get("ReferencePoint"))

    def reference_points(self) -> dict[str, ReferencePoint]:
        found = self.wmi.ps.run("list-reference-points", LIST_REFERENCE_POINTS, self._params())
        out = {}
        for rp in as_list(found):
            if not isinstance(rp, dict) or as_int(rp.get("ReferencePointType"), 2) != 2:
                continue
            point = ReferencePoint(
                as_str(rp.get("InstanceID")),
                tuple(as_str(v) for v in as_list(rp.get("ResilientChangeTrackingIdentifiers"))),
                tuple(as_str(v) for v in as_list(rp.get("VirtualDiskIdentifiers"))),
            )
            out[point.instance_id] = point
        return out

    def destroy_reference_point(self, instance_id: str) -> None:
        self.wmi.call(
            "destroy-reference-point",
            DESTROY_REFERENCE_POINT,
            self._params(reference_point=wql_literal(instance_id)),
            f"removing the RCT reference point {instance_id}",
        )
