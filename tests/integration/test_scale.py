"""Scale: a repository with 200 snapshots of a changing image, and one with a million chunks,
open, list, check and prune in bounded memory.

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
from fixtures.scale_repo import FILLER, PER_PACK, build_scale_repo

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


INDEX_CHUNKS = 1_000_000
INDEX_RSS_BOUND_MIB = 640  # two indexes of ~61 B/chunk, check and prune arrays, interpreter

INDEX_CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from e3backup.repo import formats
    from e3backup.repo.check import check_repository
    from e3backup.repo.gc import PruneOptions, prune
    from e3backup.repo.repository import Repository
    from e3backup.storage.local import LocalBackend
    root, chunks, seed, per_pack, filler = sys.argv[1], *map(int, sys.argv[2:6])
    ids = np.random.default_rng(seed).integers(0, 256, size=(chunks, 32), dtype=np.uint8)
    repo = Repository.open(LocalBackend(root), "pw")
    index = repo.index
    picked = np.arange(0, chunks, 7)
    located = index.locate_many(ids[picked].tobytes())
    pack_of = located.rows["pack"]
    same_pack = pack_of[:-1] == pack_of[1:]
    expect_same = picked[:-1] // per_pack == picked[1:] // per_pack
    singles = [index.get(ids[n].tobytes()) for n in picked[::50]]
    absent = index.locate_many(np.random.default_rng(1).bytes(32 * 100_000)).found
    doc = {
        "chunks": len(index),
        "all_found": bool(located.found.all()),
        "offsets_ok": bool(np.array_equal(located.rows["offset"], (picked % per_pack) * filler)),
        "lengths_ok": bool((located.rows["length"] == filler).all()),
        "packs_ok": bool(np.array_equal(same_pack, expect_same)),
        "single_equals_batched": singles == [located.get(i) for i in range(0, len(picked), 50)],
        "absent_found": int(absent.sum()),
    }
    report = check_repository(repo)
    doc.update(ok=report.ok, errors=report.errors[:3], packs_checked=report.packs_checked)
    planned = prune(repo, PruneOptions(dry_run=True, max_repack_ratio=0.0))
    pruned = prune(repo, PruneOptions(max_repack_ratio=0.0))
    repo = Repository.open(LocalBackend(root), "pw")
    after = check_repository(repo)
    live = repo.index.locate_many(ids[: int(chunks * 0.95)].tobytes()).found
    doc.update(planned=planned.packs_unindexed, unindexed=pruned.packs_unindexed,
               repacked=pruned.packs_repacked, chunks_after=len(repo.index), ok_after=after.ok,
               errors_after=after.errors[:3], live_after=bool(live.all()))
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()
    doc["peak_rss"] = int(status[0]) * 1024
    print(json.dumps(doc))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_million_chunk_index_opens_looks_up_checks_and_prunes_in_bounded_memory(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """~1M chunks (≈128 GiB of data) in real index objects, packs and snapshots (see
    tests/fixtures/scale_repo.py for what is synthetic): every looked-up location is exact,
    check finds nothing wrong, prune unindexes exactly the garbage packs, all in one child
    process whose peak RSS stays bounded."""
    root = tmp_path / "repo"
    built = build_scale_repo(root, INDEX_CHUNKS, "pw", seed=8)
    args = [str(root), str(INDEX_CHUNKS), "8", str(PER_PACK), str(FILLER)]
    child = subprocess.run(
        [sys.executable, "-c", INDEX_CHILD, *args], capture_output=True, text=True, check=False
    )
    assert child.returncode == 0, child.stderr
    doc = json.loads(child.stdout)
    record_property("peak_rss_bytes", doc["peak_rss"])
    print(f"\n{INDEX_CHUNKS:,}-chunk index: peak RSS {doc['peak_rss'] / MiB:.0f} MiB")
    pages = doc["chunks"] - INDEX_CHUNKS
    assert 0 < pages < INDEX_CHUNKS // 1000
    assert doc["all_found"] and doc["offsets_ok"] and doc["lengths_ok"] and doc["packs_ok"]
    assert doc["single_equals_batched"]
    assert doc["absent_found"] == 0
    assert doc["ok"], doc["errors"]
    assert doc["packs_checked"] > INDEX_CHUNKS // PER_PACK
    assert doc["planned"] == doc["unindexed"] == built.garbage_packs
    assert doc["repacked"] == 0
    assert doc["chunks_after"] == doc["chunks"] - built.garbage_chunks
    assert doc["ok_after"], doc["errors_after"]
    assert doc["live_after"]
    assert doc["peak_rss"] < INDEX_RSS_BOUND_MIB * MiB
