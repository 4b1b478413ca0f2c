"""What this host has: QEMU VMs behind the QMP sockets the config names (`qemu.qmp_glob`, the
guest-agent socket beside each, `qemu.qga_name`), on Windows the Hyper-V VMs (hyperv_host.py),
and volumes (block devices, LVs, mounted filesystems) reported to the server periodically."""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any

from e3backup.agent import hyperv_host
from e3backup.core.errors import CommandFailed, E3Error
from e3backup.exec.command import Command
from e3backup.sources.hypervisors.hyperv.powershell import Transport
from e3backup.sources.hypervisors.qemu.provider import QemuEndpoint, QemuProvider

log = logging.getLogger(__name__)
LSBLK_COLUMNS = "NAME,PATH,SIZE,TYPE,FSTYPE,MOUNTPOINT,MODEL"


def qemu_endpoints(qemu: dict[str, Any]) -> list[QemuEndpoint]:
    pattern = str(qemu.get("qmp_glob") or "")
    if not pattern:
        return []
    qga_name = str(qemu.get("qga_name") or "{stem}.qga")
    out = []
    for qmp in sorted(Path(p) for p in glob.glob(pattern)):
        qga = qmp.with_name(qga_name.format(stem=qmp.stem, name=qmp.name))
        out.append(QemuEndpoint(qmp, qga if qga.exists() else None))
    return out


def qemu_provider(qemu: dict[str, Any]) -> QemuProvider:
    scratch = qemu.get("scratch_dir")
    return QemuProvider(qemu_endpoints(qemu), Path(scratch) if scratch else None)


def list_vms(
    qemu: dict[str, Any],
    hyperv: dict[str, Any] | None = None,
    platform: str | None = None,
    hyperv_transport: Transport | None = None,
) -> list[dict[str, Any]]:
    """The seed's VM inventory for report_vms: QEMU VMs, plus Hyper-V's on a Windows host.
    A VM (or Hyper-V as a whole) that cannot be described is skipped with a warning."""
    out = qemu_vms(qemu)
    if hyperv is not None and hyperv_host.supported(platform):
        try:
            out += hyperv_host.inventory(hyperv_host.provider(hyperv, (), hyperv_transport))
        except E3Error as exc:
            log.warning("cannot list the Hyper-V VMs of this host: %s", exc)
    return out


def qemu_vms(qemu: dict[str, Any]) -> list[dict[str, Any]]:
    provider = qemu_provider(qemu)
    out = []
    for endpoint in provider.endpoints:
        try:
            info = provider.describe(endpoint)
        except E3Error as exc:
            log.warning("cannot describe the VM behind %s: %s", endpoint.qmp, exc)
            continue
        doc = info.to_dict()
        doc.update(
            vm_guid=info.id,
            vm_name=info.name,
            hypervisor="kvm",
            change_tracking=info.change_tracking,
            qmp=str(endpoint.qmp),
        )
        out.append(doc)
    return out


def volumes() -> list[dict[str, Any]]:
    """Block devices, LVs and mounted filesystems with sizes (lsblk); [] when unavailable."""
    lsblk = Command("lsblk")
    if not lsblk.available():
        return []
    try:
        result = lsblk.run(["-J", "-b", "-o", LSBLK_COLUMNS], timeout_s=30)
        devices = json.loads(result.stdout).get("blockdevices", [])
    except (CommandFailed, ValueError) as exc:
        log.info("volume inventory unavailable: %s", exc)
        return []
    out: list[dict[str, Any]] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for dev in items:
            out.append(
                {
                    k: dev.get(k.lower())
                    for k in ("NAME", "PATH", "SIZE", "TYPE", "FSTYPE", "MOUNTPOINT", "MODEL")
                }
                | {"is_lvm": dev.get("type") == "lvm"}
            )
            walk(dev.get("children") or [])

    walk(devices)
    return [{k.lower(): v for k, v in d.items()} for d in out]
