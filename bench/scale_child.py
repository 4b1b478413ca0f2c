"""One measured operation on a scale-bench repository, in a fresh process (see scale_bench.py).

    python bench/scale_child.py open|check|prune|prune-real|touch REPO_DIR SAMPLE_IDS_FILE

Prints one JSON object: wall seconds of the operation, the process's VmRSS before and after,
and its VmHWM (peak RSS). Uses only APIs that the code before the index rework has too, so
`PYTHONPATH=<old checkout>/src` measures the old code on the same repository.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import e3backup
from e3backup.repo.check import check_repository
from e3backup.repo.gc import DEFAULT_GRACE_S, PruneOptions, prune
from e3backup.repo.repository import Repository
from e3backup.repo.tombstones import forget_snapshot
from e3backup.storage.local import LocalBackend

PASSWORD = "bench-password-not-secret"
PAGE = 1024  # ids per batched lookup: one disk index page
FORGET = 3  # snapshots the real prune forgets first (of 10, each naming its own chunks)


def status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0])


def measure_open(repo: Repository, sample: bytes) -> dict[str, Any]:
    rss_before = status_kib("VmRSS")
    started = time.monotonic()
    index = repo.index
    doc: dict[str, Any] = {
        "seconds": time.monotonic() - started,
        "chunks": len(index),
        "index_bytes": (status_kib("VmRSS") - rss_before) * 1024,
        "peak_rss": status_kib("VmHWM") * 1024,
    }
    ids = [sample[i : i + 32] for i in range(0, len(sample), 32)]
    started = time.monotonic()
    found = sum(1 for chunk_id in ids if index.get(chunk_id) is not None)
    doc["single_per_s"] = len(ids) / (time.monotonic() - started)
    doc["single_found"] = found == len(ids)
    if hasattr(index, "locate_many"):
        started = time.monotonic()
        found = 0
        for pos in range(0, len(sample), PAGE * 32):
            found += int(index.locate_many(sample[pos : pos + PAGE * 32]).found.sum())
        doc["batched_per_s"] = len(ids) / (time.monotonic() - started)
        doc["batched_found"] = found == len(ids)
    return doc


def measure_real_prune(repo: Repository) -> dict[str, Any]:
    """Forget FORGET snapshots, prune past their grace (unindex), prune past the packs' grace
    (delete). Repack threshold 0: the synthetic data blobs cannot be repacked, so packs with
    any live chunk stay and only whole garbage packs leave (the packs' sizes say how much)."""
    now = time.time()
    started = time.monotonic()
    for snapshot in sorted(repo.list_snapshots(), key=lambda s: s.source_id)[:FORGET]:
        forget_snapshot(repo, snapshot, lambda: now)
    doc: dict[str, Any] = {"forget_s": time.monotonic() - started}
    for step, offset in (("unindex", 1), ("delete", 2)):
        at = now + offset * (DEFAULT_GRACE_S + 1)
        started = time.monotonic()
        report = prune(repo, PruneOptions(max_repack_ratio=0.0, clock=lambda at=at: at))
        doc[f"{step}_s"] = time.monotonic() - started
        doc[f"{step}_rss"] = status_kib("VmHWM") * 1024
        doc[step] = {
            "unindexed": report.packs_unindexed,
            "rewritten": report.index_objects_rewritten,
            "deleted": report.packs_deleted,
            "repacked": report.packs_repacked,
        }
    doc["seconds"] = doc["forget_s"] + doc["unindex_s"] + doc["delete_s"]
    doc["peak_rss"] = status_kib("VmHWM") * 1024
    return doc


def main() -> None:
    operation, root, sample_file = sys.argv[1], sys.argv[2], sys.argv[3]
    if operation == "touch":  # what first writes to fresh memory cost on this machine
        started = time.monotonic()
        bytearray(b"\1") * (256 * 1024 * 1024)
        print(json.dumps({"code": "", "ms_per_mib": (time.monotonic() - started) * 1000 / 256}))
        return
    repo = Repository.open(LocalBackend(root), PASSWORD)
    doc: dict[str, Any] = {"code": str(Path(e3backup.__file__).parents[1])}
    if operation == "open":
        doc.update(measure_open(repo, Path(sample_file).read_bytes()))
    elif operation == "prune-real":
        doc.update(measure_real_prune(repo))
    else:
        started = time.monotonic()
        if operation == "check":
            report = check_repository(repo)
            doc.update(ok=report.ok, errors=report.errors[:3], packs=report.packs_checked)
        else:
            pruned = prune(repo, PruneOptions(dry_run=True))
            doc.update(unindexed=pruned.packs_unindexed, repacked=pruned.packs_repacked)
        doc["seconds"] = time.monotonic() - started
        doc["peak_rss"] = status_kib("VmHWM") * 1024
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
