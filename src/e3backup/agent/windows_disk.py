"""Windows disk-image sources for the disk_image handler (seed 003 Windows path).

A volume (`C:`, `\\\\?\\Volume{guid}\\`) is read from a VSS shadow copy (deleted however the run
ends) through the NTFS volume bitmap: only allocated clusters. A physical disk
(`\\\\.\\PhysicalDriveN`) is read live by its layout: GPT/MBR metadata plus each partition, NTFS
partitions through their volume's bitmap. No usable plan → full read with
DISK_IMAGE_READ_PLAN_FALLBACK. ERROR_SECTOR_NOT_FOUND: strict fails, best effort zero-fills and
warns (DISK_IMAGE_READ_RECOVERED). The OS calls come from `HOOKS`, so tests replace them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from e3backup.agent.run_context import RunContext
from e3backup.core.errors import SourceError, UsageError
from e3backup.sources.disk_reader import DiskReader
from e3backup.sources.hypervisors.hyperv.powershell import ExecTransport, PowerShell
from e3backup.sources.windows import winapi
from e3backup.sources.windows.physical_disk import Partition, disk_read_plan
from e3backup.sources.windows.plan import PlannedReader, ReadPlan
from e3backup.sources.windows.read_errors import RecoveringReader
from e3backup.sources.windows.volume_bitmap import Ioctl, volume_read_plan
from e3backup.sources.windows.vss import Vss, delete_argv, normalize_volume

log = logging.getLogger(__name__)
STRICT_ENV = "AGENT_DISK_IMAGE_STRICT_READ_ERRORS"
_PHYSICAL = re.compile(r"^\\\\[.?]\\PhysicalDrive(\d+)$", re.IGNORECASE)


def _open_device(path: str) -> tuple[DiskReader, Ioctl | None]:
    reader = winapi.DeviceReader(path)
    return reader, reader.device.ioctl


@dataclass
class Hooks:
    """What the Windows path asks of the OS (tests put recorded/real-file stand-ins here)."""

    powershell: Callable[[], PowerShell] = lambda: PowerShell(ExecTransport())
    open_device: Callable[[str], tuple[DiskReader, Ioctl | None]] = _open_device
    is_windows: Callable[[], bool] = winapi.available


HOOKS = Hooks()


def applies() -> bool:
    return HOOKS.is_windows()


def disk_name(source: str) -> str:
    """The snapshot's disk name: `volume-C`, `PhysicalDrive0`, `volume-<guid>`."""
    volume = normalize_volume(source)
    if volume and volume[1] == ":":
        return f"volume-{volume[0]}"
    if volume:
        return "volume-" + volume.split("{", 1)[1].split("}", 1)[0].lower()
    return source.strip().rstrip("\\").rsplit("\\", 1)[-1] or "disk"


def strict_read_errors(policy: dict[str, Any]) -> bool:
    value = policy.get("disk_image_strict_read_errors")
    if value is None:
        value = os.environ.get(STRICT_ENV, "")
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def open_source(source: str, ctx: RunContext, policy: dict[str, Any]) -> Iterator[DiskReader]:
    """The planned, error-handling reader of a Windows volume or physical disk."""
    use_bitmap = bool(policy.get("disk_image_bitmap", True))
    strict = strict_read_errors(policy)
    volume = normalize_volume(source)
    physical = _PHYSICAL.match(source.strip())
    if volume is None and physical is None:
        raise UsageError(
            f"{source!r} is neither a volume (C:, \\\\?\\Volume{{guid}}\\) nor a physical disk "
            "(\\\\.\\PhysicalDriveN)"
        )
    with ExitStack() as stack:
        if volume is not None:
            cleanups: list[str] = []  # marked done only after the shadow copy is deleted
            stack.callback(_mark_done, ctx, cleanups)
            shadow = stack.enter_context(Vss(HOOKS.powershell()).shadow(volume))
            cleanups.append(ctx.register_cleanup(delete_argv(shadow.id)))
            log.info("VSS shadow copy %s of %s: %s", shadow.id, volume, shadow.device)
            device_path = shadow.device
        else:
            device_path = source.strip()
        device, ioctl = HOOKS.open_device(device_path)
        stack.callback(device.close)
        reader = RecoveringReader(device, source, strict)
        if volume is not None:
            plan = volume_read_plan(
                reader.read(0, 512), reader.size_bytes, ioctl if use_bitmap else None
            )
        else:
            assert physical is not None
            sector_size = int(getattr(device, "sector_size", 512))
            plan = _physical_plan(reader, int(physical.group(1)), sector_size, stack, use_bitmap)
        _announce(plan, source, ctx)
        yield PlannedReader(reader, plan)
        for offset, length in reader.recovered():
            ctx.emit(
                "DISK_IMAGE_READ_RECOVERED", "warning", source=source, offset=offset, length=length
            )


def _mark_done(ctx: RunContext, cleanups: list[str]) -> None:
    for cleanup in cleanups:
        ctx.cleanup_done(cleanup)


def _physical_plan(
    reader: DiskReader, disk: int, sector_size: int, stack: ExitStack, use_bitmap: bool
) -> ReadPlan:
    def bitmap_for(part: Partition) -> Ioctl | None:
        if not use_bitmap:
            return None
        path = f"\\\\?\\GLOBALROOT\\Device\\Harddisk{disk}\\Partition{part.number}"
        try:
            volume, ioctl = HOOKS.open_device(path)
        except (OSError, SourceError) as exc:
            log.info("no volume bitmap for %s: %s", path, exc)
            return None
        stack.callback(volume.close)
        return ioctl

    plan, layout = disk_read_plan(reader, sector_size, bitmap_for)
    if layout is not None:
        log.info("%s layout, %d partitions", layout.style, len(layout.partitions))
    return plan


def _announce(plan: ReadPlan, source: str, ctx: RunContext) -> None:
    log.info("read plan %s: %d of the source's bytes", plan.mode, plan.planned_bytes)
    if plan.reason:
        log.warning("%s: %s", source, plan.reason)
        ctx.emit("DISK_IMAGE_READ_PLAN_FALLBACK", "warning", source=source, reason=plan.reason)
