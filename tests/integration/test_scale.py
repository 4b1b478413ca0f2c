"""Scale: a repository with 200 snapshots of a changing image opens, lists, checks and prunes
in bounded memory.

The repository is built through the library API (a small image, a few chunks changed per
snapshot); opening, listing, checking, `forget --keep-last 50` and prune (grace 0, run twice:
the second run deletes what the first unindexed) run in a fresh child process, which then checks
every remaining byte and restores the newest snapshot. The child's own peak RSS (VmHWM) is
printed (`pytest -s` shows it) and recorded as the `peak_rss_bytes` property, so the number is
not the test runner's.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
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

KEEP_LAST = 50

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from e3backup.engines.image_backup import restore_disk
    from e3backup.repo.check import check_repository
    from e3backup.repo.gc import PruneOptions, prune
    from e3backup.repo.repository import Repository
    from e3backup.repo.retention import RetentionPolicy, apply_policy
    from e3backup.repo.tombstones import forget_snapshot
    from e3backup.storage.local import LocalBackend
    started = time.monotonic()
    root, image, target, keep_last = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    repo = Repository.open(LocalBackend(root), "pw")
    snapshots = repo.list_snapshots()
    report = check_repository(repo, record=True)
    chunks_before = len(repo.index)
    decisions = apply_policy(snapshots, RetentionPolicy(keep_last=keep_last), None)
    for decision in decisions:
        if not decision.keep:
            forget_snapshot(repo, decision.snapshot, time.time)
    first = prune(repo, PruneOptions(grace_s=0.0))
    second = prune(repo, PruneOptions(grace_s=0.0))  # deletes what the first one unindexed
    repo = Repository.open(LocalBackend(root), "pw")
    remaining = repo.list_snapshots()
    after = check_repository(repo, read_data=True, record=True)
    restore_disk(repo, remaining[-1], None, Path(target))
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()
    print(json.dumps({"snapshots": len(snapshots), "ok": report.ok, "errors": report.errors[:3],
                      "chunks": chunks_before, "chunks_after": len(repo.index),
                      "remaining": len(remaining), "ok_after": after.ok,
                      "errors_after": after.errors[:3], "packs_deleted": second.packs_deleted,
                      "packs_unindexed": first.packs_unindexed,
                      "restored_ok": Path(target).read_bytes() == Path(image).read_bytes(),
                      "seconds": time.monotonic() - started,
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
def test_200_snapshots_open_list_check_and_prune_in_bounded_memory(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    root = tmp_path / "repo"
    image = tmp_path / "disk.img"
    _build(root, image)
    args = [str(root), str(image), str(tmp_path / "restored.img"), str(KEEP_LAST)]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False
    )
    assert child.returncode == 0, child.stderr
    doc = json.loads(child.stdout)
    peak_rss = doc["peak_rss"]
    record_property("peak_rss_bytes", peak_rss)
    print(
        f"\n200-snapshot repository: open + list + check + forget (keep {KEEP_LAST}) + prune x2 "
        f"+ read-data check + restore in {doc['seconds']:.1f} s, peak RSS "
        f"{peak_rss / MiB:.0f} MiB, {doc['chunks']} -> {doc['chunks_after']} chunks, "
        f"{doc['packs_unindexed']} pack(s) unindexed, {doc['packs_deleted']} deleted"
    )
    assert doc["snapshots"] == SNAPSHOTS
    assert doc["ok"], doc["errors"]
    assert doc["remaining"] == KEEP_LAST
    assert doc["packs_deleted"] > 0
    assert doc["chunks_after"] < doc["chunks"]
    assert doc["ok_after"], doc["errors_after"]
    assert doc["restored_ok"]
    assert peak_rss < RSS_BOUND_MIB * MiB
