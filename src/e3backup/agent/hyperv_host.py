"""This host's Hyper-V, as the agent uses it: the platform check, the provider built from the
config's `[hyperv]` section (plus the RCT records the server sent with a run), and the VM
inventory in the shape the server's report_vms reads (server/services/vms.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from e3backup.sources.hypervisors.base import VmInfo
from e3backup.sources.hypervisors.hyperv import paths
from e3backup.sources.hypervisors.hyperv.powershell import ExecTransport, Transport
from e3backup.sources.hypervisors.hyperv.provider import HypervProvider
from e3backup.sources.hypervisors.hyperv.wmi import DEFAULT_JOB_TIMEOUT_S

UNSUPPORTED = "Hyper-V is not supported on this host: the Hyper-V engine needs a Windows host"


def supported(platform: str | None = None) -> bool:
    """Hyper-V exists only on Windows (the provider then checks the module and elevation)."""
    return (platform or sys.platform) == "win32"


def provider(
    settings: Mapping[str, Any],
    server_records: Iterable[Mapping[str, str]] = (),
    transport: Transport | None = None,
    path_mapper: paths.PathMapper = paths.local_path,
) -> HypervProvider:
    """`settings`: the `[hyperv]` keys (state_dir, powershell, job_timeout_s; '' = default)."""
    state_dir = str(settings.get("state_dir") or "")
    executable = str(settings.get("powershell") or "") or None
    return HypervProvider(
        transport or ExecTransport(executable),
        Path(state_dir) if state_dir else None,
        path_mapper,
        job_timeout_s=float(settings.get("job_timeout_s") or DEFAULT_JOB_TIMEOUT_S),
        server_records=server_records,
    )


def inventory(hyperv: HypervProvider) -> list[dict[str, Any]]:
    """Every VM of this host: state, generation, RCT support, disks with sizes."""
    return [vm_entry(vm) for vm in hyperv.list_vms()]


def vm_entry(vm: VmInfo) -> dict[str, Any]:
    config = vm.config
    doc = vm.to_dict() | {
        "vm_guid": vm.id,
        "vm_name": vm.name,
        "hypervisor": "hyperv",
        "generation": config.get("generation"),
        "version": config.get("version"),
        "checkpoint_type": config.get("checkpoint_type"),
        "is_linux": config.get("is_linux"),
        "rct_enabled": vm.change_tracking,
        "skipped_disks": list(config.get("skipped_disks") or []),
    }
    disk_config = config.get("disks") or {}
    for disk in doc["disks"]:
        extra = disk_config.get(disk["name"]) or {}
        disk.update(
            disk_name=disk["name"],
            disk_path=disk["path"],
            controller_type=extra.get("controller") or "",
            vhd_format=extra.get("vhd_format") or str(disk["format"]).upper(),
            vhd_type=extra.get("vhd_type") or "",
            rct_supported=disk["change_tracking"],
        )
    return doc
