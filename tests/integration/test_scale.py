"""Scale: a repository with 200 snapshots of a changing image opens, lists and checks in
bounded memory.

The repository is built through the library API (a small image, a few chunks changed per
snapshot); opening, listing and checking run in a fresh child process, whose own peak RSS is
read with wait4 and printed (`pytest -s` shows it), so the number is not the test runner's.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from e3backup.engines.image_backup import ImageBackupOptions, backup_image
from e3backup.repo.repository import Repository
from e3backup.sources.image import RawImageReader
from e3backup.storage.local import LocalBackend

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB
IMAGE_BYTES = 2 * MiB
SNAPSHOTS = 200
CHANGED_CHUNKS = 3
RSS_BOUND_MIB = 160  # interpreter + libraries are ~60 MiB of it

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from e3backup.repo.check import check_repository
    from e3backup.repo.repository import Repository
    from e3backup.storage.local import LocalBackend
    started = time.monotonic()
    repo = Repository.open(LocalBackend(sys.argv[1]), "pw")
    snapshots = repo.list_snapshots()
    report = check_repository(repo, record=True)
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()
    print(json.dumps({"snapshots": len(snapshots), "ok": report.ok, "errors": report.errors[:3],
                      "chunks": len(repo.index), "seconds": time.monotonic() - started,
                      "peak_rss": int(status[0]) * 1024}))
    """
)


def _build(root: Path, image: Path) -> None:
    repo = Repository.init(LocalBackend(root), "pw", chunk_size=CHUNK)
    rng = random.Random(200)
    data = bytearray(rng.randbytes(IMAGE_BYTES))
    count = IMAGE_BYTES // CHUNK
    for _ in range(SNAPSHOTS):
        extents = []
        for chunk_no in rng.sample(range(count), CHANGED_CHUNKS):
            offset = chunk_no * CHUNK + rng.randrange(CHUNK - 64)
            data[offset : offset + 64] = rng.randbytes(64)
            extents.append((offset, 64))
        image.write_bytes(data)
        with RawImageReader.open(image) as reader:
            backup_image(repo, image, reader, ImageBackupOptions(changed_extents=extents))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_200_snapshots_open_list_and_check_in_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _build(root, tmp_path / "disk.img")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, check=False
    )
    assert child.returncode == 0, child.stderr
    doc = json.loads(child.stdout)
    peak_rss = doc["peak_rss"]
    print(
        f"\n200-snapshot repository: open + list + check in {doc['seconds']:.1f} s, "
        f"peak RSS {peak_rss / MiB:.0f} MiB, {doc['chunks']} chunks"
    )
    assert doc["snapshots"] == SNAPSHOTS
    assert doc["ok"], doc["errors"]
    assert peak_rss < RSS_BOUND_MIB * MiB
