"""Describe Hyper-V VMs: Get-VM, Get-VMHardDiskDrive, Get-VHD, Get-VMIntegrationService and
the guest's KVP items (OS name), in one script per lookup.

The backup integration service is recognised by its Id (`…\\5CED1297-4598-4915-A5FC-
AD21BB4D02A4`), never by its display name, which is localized. A guest whose KVP OSName does
not start with "Windows" is a Linux guest (its `VSS` service is hv_vss_daemon: fsfreeze, file
system consistent). RCT needs configuration version ≥ 6.2 and a VHDX (or VHD Set) disk.
"""

from __future__ import annotations

import html
import re
from typing import Any

from e3backup.sources.hypervisors.base import VmDisk, VmInfo, VmNotFound
from e3backup.sources.hypervisors.hyperv import paths
from e3backup.sources.hypervisors.hyperv.powershell import (
    PowerShell,
    as_bool,
    as_int,
    as_list,
    as_str,
    enum_name,
)

VSS_SERVICE_ID = "5CED1297-4598-4915-A5FC-AD21BB4D02A4"
# Microsoft.HyperV.PowerShell enums (Windows PowerShell 5.1 serializes them as integers).
VM_STATES = {
    1: "Other",
    2: "Running",
    3: "Off",
    4: "Stopping",
    6: "Saved",
    9: "Paused",
    10: "Starting",
    11: "Reset",
    32773: "Saving",
    32776: "Pausing",
    32777: "Resuming",
    32779: "FastSaved",
    32780: "FastSaving",
}
CHECKPOINT_TYPES = {2: "Disabled", 3: "Production", 4: "ProductionOnly", 5: "Standard"}
CONTROLLER_TYPES = {0: "IDE", 1: "SCSI"}
VHD_FORMATS = {2: "VHD", 3: "VHDX", 4: "VHDSet"}
VHD_TYPES = {2: "Fixed", 3: "Dynamic", 4: "Differencing"}
RCT_MIN_VERSION = (6, 2)

_GUID = re.compile(r"^\{?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}?$", re.I)

DESCRIBE = r"""
$vms = @(Get-VM | Where-Object {
  (-not $p.id -and -not $p.name) -or ("$($_.VMId)" -eq $p.id) -or ($_.Name -eq $p.name) })
foreach ($vm in $vms) {
  $disks = @(Get-VMHardDiskDrive -VM $vm | ForEach-Object {
    $vhd = $null
    if ($_.Path) { try { $vhd = Get-VHD -Path $_.Path } catch { $vhd = $null } }
    @{ Path = $_.Path; ControllerType = $_.ControllerType; ControllerNumber = $_.ControllerNumber;
       ControllerLocation = $_.ControllerLocation; DiskNumber = $_.DiskNumber;
       Vhd = $(if ($vhd) { @{ VhdFormat = $vhd.VhdFormat; VhdType = $vhd.VhdType;
         Size = $vhd.Size; FileSize = $vhd.FileSize; ParentPath = $vhd.ParentPath;
         LogicalSectorSize = $vhd.LogicalSectorSize;
         DiskIdentifier = "$($vhd.DiskIdentifier)" } }) }
  })
  $ics = @(Get-VMIntegrationService -VM $vm | ForEach-Object {
    @{ Id = "$($_.Id)"; Name = $_.Name; Enabled = $_.Enabled;
       PrimaryStatusDescription = "$($_.PrimaryStatusDescription)" } })
  $guest = @{}
  $kvp = Get-CimInstance -Namespace root\virtualization\v2 -ClassName Msvm_KvpExchangeComponent `
    -Filter ("SystemName='{0}'" -f $vm.VMId) -ErrorAction SilentlyContinue
  foreach ($item in @($kvp.GuestIntrinsicExchangeItems)) {
    if (-not $item) { continue }
    $x = ([xml]$item).INSTANCE.PROPERTY
    $n = ($x | Where-Object { $_.NAME -eq 'Name' }).VALUE
    if ($n -in 'OSName', 'OSVersion', 'OSPlatformId') {
      $guest[$n] = ($x | Where-Object { $_.NAME -eq 'Data' }).VALUE }
  }
  @{ VMId = "$($vm.VMId)"; Name = $vm.Name; State = $vm.State; Generation = $vm.Generation;
     Version = "$($vm.Version)"; CheckpointType = $vm.CheckpointType; Path = $vm.Path;
     ProcessorCount = $vm.ProcessorCount; MemoryStartup = $vm.MemoryStartup;
     Disks = $disks; IntegrationServices = $ics; Guest = $guest }
}
"""


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text.strip()))


def clean_ref(ref: str) -> str:
    """A VM reference as the user meant it: HTML entities decoded (the seed's WHMCS forms
    encode POST data: `Web &amp; DB` → `Web & DB`), surrounding space removed."""
    return html.unescape(ref).strip()


def describe(ps: PowerShell, vm_id: str = "", name: str = "") -> list[VmInfo]:
    data = ps.run("describe-vms", DESCRIBE, {"id": vm_id, "name": name})
    return [vm_info(doc) for doc in as_list(data) if isinstance(doc, dict)]


def get_vm(ps: PowerShell, ref: str) -> VmInfo:
    """By VMId (GUID, any case, braces allowed) first, then by exact name (seed
    getVMByNameOrGUID: a GUID that matches no VMId may still be a VM's name)."""
    wanted = clean_ref(ref)
    if not wanted:
        raise VmNotFound("no VM name or id given")
    if is_guid(wanted):
        found = describe(ps, vm_id=wanted.strip("{}").lower())
        if found:
            return found[0]
    found = describe(ps, name=wanted)
    if not found:
        raise VmNotFound(f"no Hyper-V VM named or with id {wanted!r} on this host")
    if len(found) > 1:
        ids = ", ".join(v.id for v in found)
        raise VmNotFound(f"{len(found)} Hyper-V VMs are named {wanted!r} ({ids}): use the VM id")
    return found[0]


def parse_version(text: str) -> tuple[int, int]:
    parts = re.findall(r"\d+", text)
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) if parts else (0, 0)


def vm_info(doc: dict[str, Any]) -> VmInfo:
    version = as_str(doc.get("Version"))
    rct_version = parse_version(version) >= RCT_MIN_VERSION
    disks: list[VmDisk] = []
    disk_config: dict[str, Any] = {}
    skipped: list[str] = []
    for raw in as_list(doc.get("Disks")):
        disk, settings = _disk(raw, rct_version)
        if disk is None:
            skipped.append(settings["name"])
            continue
        disks.append(disk)
        disk_config[disk.name] = settings
    found = doc.get("Guest")
    guest: dict[str, Any] = found if isinstance(found, dict) else {}
    os_name = as_str(guest.get("OSName"))
    services = [s for s in as_list(doc.get("IntegrationServices")) if isinstance(s, dict)]
    vss = next((s for s in services if as_str(s.get("Id")).upper().endswith(VSS_SERVICE_ID)), None)
    generation = as_int(doc.get("Generation"), 1)
    config: dict[str, Any] = {
        "hypervisor": "hyperv",
        "generation": generation,
        "version": version,
        "rct_supported": rct_version,
        "checkpoint_type": enum_name(doc.get("CheckpointType"), CHECKPOINT_TYPES),
        "path": as_str(doc.get("Path")),
        "guest_os": os_name,
        "is_linux": bool(os_name) and not os_name.lower().startswith("windows"),
        "backup_service": {
            "present": vss is not None,
            "enabled": vss is not None and as_bool(vss.get("Enabled")),
            "status": as_str(vss.get("PrimaryStatusDescription")) if vss else "",
        },
        "vcpus": as_int(doc.get("ProcessorCount")),
        "memory_bytes": as_int(doc.get("MemoryStartup")),
        "disks": disk_config,
        "skipped_disks": skipped,
    }
    return VmInfo(
        id=as_str(doc.get("VMId")).strip("{}").lower(),
        name=as_str(doc.get("Name")),
        state=enum_name(doc.get("State"), VM_STATES),
        machine_type=f"generation {generation}",
        disks=tuple(disks),
        config=config,
    )


def _disk(raw: Any, rct_version: bool) -> tuple[VmDisk | None, dict[str, Any]]:
    raw = raw if isinstance(raw, dict) else {}
    controller = enum_name(raw.get("ControllerType"), CONTROLLER_TYPES)
    number, location = as_int(raw.get("ControllerNumber")), as_int(raw.get("ControllerLocation"))
    name = f"{controller.lower()}{number}-{location}"
    path = as_str(raw.get("Path"))
    found = raw.get("Vhd")
    vhd: dict[str, Any] | None = found if isinstance(found, dict) else None
    config: dict[str, Any] = {"name": name, "path": path, "controller": controller}
    if not path or vhd is None:  # pass-through disk (DiskNumber) or an unreadable file
        config["reason"] = "pass-through or unreadable disk: not backed up"
        return None, config
    fmt = enum_name(vhd.get("VhdFormat"), VHD_FORMATS)
    config.update(
        controller_number=number,
        controller_location=location,
        vhd_format=fmt,
        vhd_type=enum_name(vhd.get("VhdType"), VHD_TYPES),
        parent_path=as_str(vhd.get("ParentPath")),
        disk_identifier=as_str(vhd.get("DiskIdentifier")).strip("{}").lower(),
        logical_sector_size=as_int(vhd.get("LogicalSectorSize"), 512),
    )
    rct = rct_version and fmt in ("VHDX", "VHDSet")
    return VmDisk(name, paths.display(path), fmt.lower(), as_int(vhd.get("Size")), rct), config
