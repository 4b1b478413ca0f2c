"""Incremental vs full backup of a running VM's disk after a 1 % scattered change, and restic
re-reading the same disk image (issue 5's bench). Uses the test guest (tests/fixtures/vm.py).

usage: .venv/bin/python bench/vm_bench.py [--disk-mib 512]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests/integration/vm"))

from helpers import CHUNK, init_repo, run_job  # noqa: E402

from fixtures.vm import GuestImage, TestVm  # noqa: E402

BLOCK = 64 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--disk-mib", type=int, default=512)
    args = parser.parse_args()
    size = args.disk_mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="e3b-vmbench-", dir="/var/tmp"))
    try:
        (work / "guest").mkdir()
        image = GuestImage(work / "guest")
        (work / "vm").mkdir()
        vm = TestVm(image, work / "vm", "bench")
        vm.create_disks()
        raw = work / "vdb.raw"
        with open(raw, "wb") as f:  # a full disk of incompressible data
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, vm.disks["vdb"]], check=True
        )
        vm.start()
        repo, scratch = work / "repo", work / "scratch"
        init_repo(repo)
        t = time.monotonic()
        full, _ = run_job(repo, [vm], scratch)
        full_s = time.monotonic() - t
        full_vdb = full.vm_results[0].disk_manifests["vdb"]

        blocks = size // BLOCK
        chosen = sorted(random.Random(1).sample(range(blocks), blocks // 100))
        script = "; ".join(
            f"dd if=/dev/urandom of=/dev/vdb bs={BLOCK} seek={b} count=1 conv=notrunc 2>/dev/null"
            for b in chosen
        )
        vm.guest_exec("/bin/sh", "-c", script + "; sync")
        t = time.monotonic()
        incr, _ = run_job(repo, [vm], scratch)
        incr_s = time.monotonic() - t
        incr_vdb = incr.vm_results[0].disk_manifests["vdb"]
        vm.capture("vdb", work / "vdb-after.raw")
        vm.quit()

        restic_s = restic_reread(work, raw, work / "vdb-after.raw")
        print(
            f"disk {args.disk_mib} MiB, chunk {CHUNK // 1024} KiB, {len(chosen)} scattered "
            f"64 KiB writes ({100 * len(chosen) * BLOCK / size:.2f} %)"
        )
        print(f"full VM backup:        {full_s:7.2f} s (vdb read {full_vdb['bytes_read']} B)")
        print(
            f"incremental VM backup: {incr_s:7.2f} s (vdb read {incr_vdb['bytes_read']} B, "
            f"{incr.vm_results[0].backup_type})"
        )
        print(f"restic 2nd backup of the same image: {restic_s:7.2f} s")
        print(
            f"incremental / full = {100 * incr_s / full_s:.1f} %; "
            f"restic / incremental = {restic_s / incr_s:.1f}x"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restic_reread(work: Path, before: Path, after: Path) -> float:
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(work / "restic")}
    image = work / "disk.img"
    shutil.copy(before, image)
    subprocess.run(["restic", "init", "-q"], env=env, check=True)
    subprocess.run(["restic", "backup", "-q", str(image)], env=env, check=True)
    shutil.copy(after, image)
    t = time.monotonic()
    subprocess.run(["restic", "backup", "-q", str(image)], env=env, check=True)
    return time.monotonic() - t


if __name__ == "__main__":
    main()
