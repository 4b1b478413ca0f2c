"""The job's policy (seed policy_json) as the engines need it.

compression: `none` or `zstd` / `zstd-N` (level N; `zstd` = 3); bandwidth_limit_kbps: upload cap
in KiB/s (rclone's bwlimit unit; 0 = none); parallelism: engine workers and S3 connections;
consistency_level: application (guest freeze) or crash; enable_change_tracking: incremental reads
from change tracking, or full reads every time; restore_parallel_workers and
restore_segment_size_mb for restores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from e3backup.core.errors import UsageError

DEFAULT_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class RunPolicy:
    compression_level: int = DEFAULT_ZSTD_LEVEL  # 0: none
    bandwidth_limit_kibps: int | None = None
    parallelism: int = 4
    consistency_level: str = "application"
    change_tracking: bool = True
    restore_parallel_workers: int = 4
    restore_segment_size_mb: int = 64

    @property
    def compression(self) -> str:
        return "none" if self.compression_level == 0 else f"zstd-{self.compression_level}"

    def describe(self) -> dict[str, Any]:
        """The active settings, for the REPO_POLICY event."""
        return {
            "compression": self.compression,
            "bandwidth_limit_kbps": self.bandwidth_limit_kibps or 0,
            "parallelism": self.parallelism,
            "consistency_level": self.consistency_level,
            "change_tracking": self.change_tracking,
        }


def compression_level(value: str) -> int:
    text = (value or "zstd").strip().lower()
    if text == "none":
        return 0
    if text in ("zstd", "zstd-default"):
        return DEFAULT_ZSTD_LEVEL
    if text.startswith("zstd-") and text[5:].isdigit() and 1 <= int(text[5:]) <= 22:
        return int(text[5:])
    raise UsageError(f"unsupported compression {value!r} (none, zstd or zstd-1..22)")


def parse_policy(policy: dict[str, Any], vm_config: dict[str, Any] | None = None) -> RunPolicy:
    vm_config = vm_config or {}
    limit = int(policy.get("bandwidth_limit_kbps") or 0)
    consistency = str(
        vm_config.get("consistency_level") or policy.get("consistency_level") or "application"
    )
    tracking = policy.get("enable_change_tracking", True)
    if "enable_rct" in vm_config:
        tracking = bool(tracking) and bool(vm_config["enable_rct"])
    return RunPolicy(
        compression_level=compression_level(str(policy.get("compression") or "zstd")),
        bandwidth_limit_kibps=limit if limit > 0 else None,
        parallelism=max(1, int(policy.get("parallelism") or 4)),
        consistency_level=consistency if consistency in ("application", "crash") else "application",
        change_tracking=bool(tracking),
        restore_parallel_workers=max(1, int(policy.get("restore_parallel_workers") or 4)),
        restore_segment_size_mb=max(1, int(policy.get("restore_segment_size_mb") or 64)),
    )
