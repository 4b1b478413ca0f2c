"""The CLI: `vm list`, `backup vm --json`, and `restore --disk` of a VM snapshot (qcow2)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from cli_harness import E3BACKUP
from helpers import PASSWORD, init_repo


def _cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "E3BACKUP_PASSWORD": PASSWORD}
    argv = [str(E3BACKUP), "--repo", str(repo), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_cli_list_backup_restore(make_vm: Any, tmp_path: Path) -> None:
    vm = make_vm("clivm")
    repo = tmp_path / "repo"
    init_repo(repo)
    listed = _cli(repo, "vm", "list", "--qmp", str(vm.qmp_path), "--json")
    assert listed.returncode == 0, listed.stderr
    [info] = json.loads(listed.stdout)
    assert info["name"] == "clivm" and [d["name"] for d in info["disks"]] == ["vda", "vdb"]

    expected = vm.capture("vdb", tmp_path / "vdb.raw")
    done = _cli(
        repo, "backup", "vm", "--qmp", str(vm.qmp_path), "--qga", str(vm.qga_path),
        "--qmp", str(tmp_path / "missing.sock"), "--scratch-dir", str(tmp_path / "s"), "--json",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr  # partial_success: the second VM does not exist
    job = json.loads(done.stdout)
    assert job["status"] == "partial_success"
    ok, failed = job["vm_results"]
    assert ok["consistency_level"] == "Application" and failed["status"] == "failed"
    out = tmp_path / "restored.qcow2"
    restore = _cli(
        repo, "restore", ok["snapshot_id"], "--disk", "vdb", "--to", str(out), "--format", "qcow2"
    )
    assert restore.returncode == 0, restore.stderr
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(expected), str(out)],
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr
