"""Worker processes for test_gc_concurrency: a backup loop and a forget+prune loop on S3.

Top-level functions so that `multiprocessing` (spawn) can start them in fresh interpreters.
"""

from __future__ import annotations

import json
import os
import random
import time
import traceback
from pathlib import Path

from e3backup.engines.image_backup import ImageBackupOptions, backup_image
from e3backup.repo.gc import PruneOptions, prune
from e3backup.repo.repository import Repository
from e3backup.repo.retention import RetentionPolicy, apply_policy
from e3backup.repo.tombstones import forget_snapshot
from e3backup.sources.image import RawImageReader
from e3backup.storage.s3 import S3Backend

CHUNK = 64 * 1024
READY = "pruner-ready"  # the prune loop has run once


def _wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def open_repo(s3: dict[str, str]) -> Repository:
    backend = S3Backend(
        s3["bucket"],
        s3["prefix"],
        endpoint_url=s3["endpoint"],
        region="us-east-1",
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
    )
    return Repository.open(backend, None)


def backup_loop(s3: dict[str, str], work: str, rounds: int, stop_file: str) -> None:
    """Back up two changing images `rounds` times each; record every snapshot's expected bytes."""
    os.environ["E3BACKUP_HEARTBEAT_S"] = "0.2"
    rng = random.Random(7)
    root = Path(work)
    images = [root / "vm-a.img", root / "vm-b.img"]
    for n, path in enumerate(images):
        path.write_bytes(rng.randbytes(48 * CHUNK) + bytes(16 * CHUNK) * (n + 1))
    log = root / "backups.jsonl"
    _wait_for(root / READY, 60.0)  # overlap with prune from the first backup, however slow
    for round_no in range(rounds):
        for path in images:
            data = bytearray(path.read_bytes())
            for _ in range(6):  # a few changed chunks per round
                at = rng.randrange(len(data) // CHUNK) * CHUNK
                data[at : at + CHUNK] = rng.randbytes(CHUNK)
            path.write_bytes(bytes(data))
            record: dict[str, object] = {"round": round_no, "image": path.name}
            try:
                with RawImageReader.open(path) as reader:
                    snap = backup_image(open_repo(s3), path, reader, ImageBackupOptions(workers=2))
                expected = root / f"expected-{snap.id}.img"
                expected.write_bytes(bytes(data))
                record |= {"ok": True, "snapshot": snap.id, "expected": str(expected)}
            except Exception as exc:  # recorded; the test decides what is allowed
                record |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            with open(log, "a") as out:
                out.write(json.dumps(record) + "\n")
    Path(stop_file).touch()


def prune_loop(s3: dict[str, str], work: str, grace_s: float, stop_file: str) -> None:
    """forget --keep-last 2 + prune, repeatedly, until the backups are done."""
    log = Path(work) / "prunes.jsonl"
    policy = RetentionPolicy(keep_last=2)
    while not Path(stop_file).exists():
        record: dict[str, object] = {}
        try:
            repo = open_repo(s3)
            snapshots = repo.list_snapshots()
            forgotten = 0
            if snapshots:
                for decision in apply_policy(snapshots, policy):
                    if not decision.keep:
                        forget_snapshot(repo, decision.snapshot, time.time)
                        forgotten += 1
            report = prune(repo, PruneOptions(grace_s=grace_s, max_repack_ratio=0.6))
            record = {
                "forgotten": forgotten,
                "deleted": report.packs_deleted,
                "unindexed": report.packs_unindexed,
                "repacked": report.packs_repacked,
                "live_sessions": report.live_sessions,
            }
        except Exception:
            record = {"error": traceback.format_exc()}
        with open(log, "a") as out:
            out.write(json.dumps(record) + "\n")
        (Path(work) / READY).touch()
        time.sleep(0.3 if grace_s else 0.02)  # grace 0: prune as often as it can
