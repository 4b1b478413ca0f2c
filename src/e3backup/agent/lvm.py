"""LVM point-in-time views for disk-image backups (seed 003 Linux path): a logical volume is
snapshotted with `lvcreate -s` and read from the snapshot, which is removed afterwards; when
that is impossible the live device is read, with a DISK_IMAGE_READ_PLAN_FALLBACK warning.

The snapshot's removal is registered with the agent before the snapshot exists, so it also runs
when the engine process dies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from e3backup.agent.run_context import RunContext
from e3backup.core.errors import CommandFailed
from e3backup.exec.command import Command

log = logging.getLogger(__name__)
SNAPSHOT_SUFFIX = "-e3backup-snap"
MIN_SNAPSHOT_BYTES = 64 * 1024 * 1024
SNAPSHOT_SHARE = 0.10  # copy-on-write space reserved: a tenth of the origin
LVS_FIELDS = "vg_name,lv_name,lv_size"


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    lv: str
    size_bytes: int

    @property
    def snapshot_name(self) -> str:
        return self.lv + SNAPSHOT_SUFFIX

    @property
    def snapshot_path(self) -> Path:
        return Path("/dev") / self.vg / self.snapshot_name


def lvs_args(target: str) -> list[str]:
    return ["--reportformat", "json", "-o", LVS_FIELDS, "--units", "b", "--nosuffix", target]


def parse_lvs(output: str) -> LogicalVolume | None:
    """The first logical volume in `lvs --reportformat json` output (see `lvs_args`)."""
    try:
        rows = json.loads(output)["report"][0]["lv"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    for row in rows if isinstance(rows, list) else []:
        vg, lv, size = row.get("vg_name"), row.get("lv_name"), str(row.get("lv_size") or "")
        if vg and lv and size.isdigit():
            return LogicalVolume(str(vg), str(lv), int(size))
    return None


def query_lv(target: str) -> LogicalVolume | None:
    """The LV named by `target` (`VG/LV` or its device path), or None (no LVM tools, no LV)."""
    lvs = Command("lvs")
    if not lvs.available():
        return None
    try:
        return parse_lvs(lvs.run(lvs_args(target), timeout_s=60).stdout)
    except CommandFailed:
        return None


def find_logical_volume(path: Path) -> LogicalVolume | None:
    """The LV behind the block device `path`, or None."""
    return query_lv(str(path)) if path.is_block_device() else None


def snapshot_size_bytes(lv: LogicalVolume) -> int:
    wanted = max(MIN_SNAPSHOT_BYTES, int(lv.size_bytes * SNAPSHOT_SHARE))
    return min(wanted, lv.size_bytes) // 512 * 512


def lvcreate_args(lv: LogicalVolume) -> list[str]:
    return ["-s", "-n", lv.snapshot_name, "-L", f"{snapshot_size_bytes(lv)}b", f"{lv.vg}/{lv.lv}"]


def lvremove_args(lv: LogicalVolume) -> list[str]:
    return ["-f", f"{lv.vg}/{lv.snapshot_name}"]


@contextmanager
def point_in_time(path: Path, ctx: RunContext, lv: LogicalVolume | None = None) -> Iterator[Path]:
    """Yield the path to read: an LVM snapshot of `path` when it is an LV, else `path`."""
    lv = lv or find_logical_volume(path)
    if lv is None:
        yield path
        return
    cleanup_id = ctx.register_cleanup(["lvremove", *lvremove_args(lv)])
    try:
        _remove_stale(lv)
        Command("lvcreate").run(lvcreate_args(lv), timeout_s=120)
    except CommandFailed as exc:
        ctx.cleanup_done(cleanup_id)
        reason = f"LVM snapshot of {lv.vg}/{lv.lv} failed ({exc}); reading the live device"
        log.warning("%s", reason)
        ctx.emit("DISK_IMAGE_READ_PLAN_FALLBACK", "warning", source=str(path), reason=reason)
        yield path
        return
    try:
        yield lv.snapshot_path
    finally:
        try:
            Command("lvremove").run(lvremove_args(lv), timeout_s=120)
        except CommandFailed as exc:
            log.warning("could not remove LVM snapshot %s: %s", lv.snapshot_path, exc)
        ctx.cleanup_done(cleanup_id)


def _remove_stale(lv: LogicalVolume) -> None:
    """A snapshot left by a crashed earlier run would block lvcreate."""
    if lv.snapshot_path.exists():
        Command("lvremove").run(lvremove_args(lv), timeout_s=120)
