"""Backups of changing images in one process, forget + prune in another, on a real S3 server.

With a grace period every snapshot that was not forgotten restores byte for byte and
`check --read-data` passes. With grace 0 prune takes running backups for dead (their heartbeats
are "too old" at once) and removes what they are writing: the backups refuse to commit. That
refusal is asserted as what it is (a failed backup, no snapshot), not counted as data loss.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from gc_workers import backup_loop, open_repo, prune_loop

from e3backup.engines.image_backup import restore_disk
from e3backup.repo.check import check_repository
from e3backup.repo.gc import PruneOptions, prune
from e3backup.repo.repository import Repository
from e3backup.storage.s3 import S3Backend
from fixtures.seaweed import SeaweedServer

ROUNDS = 10
BUCKET = "gc-concurrency"


def _s3(server: SeaweedServer, prefix: str) -> dict[str, str]:
    return {
        "bucket": BUCKET,
        "prefix": prefix,
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
    }


def _run(
    server: SeaweedServer, work: Path, grace_s: float
) -> tuple[dict[str, str], list[Any], list[Any]]:
    s3 = _s3(server, f"{work.name}-{os.getpid()}")
    backend = S3Backend(
        BUCKET, s3["prefix"], endpoint_url=server.endpoint, region="us-east-1",
        access_key=server.access_key, secret_key=server.secret_key,
    )  # fmt: skip
    backend.ensure_bucket()
    Repository.init(backend, None, "none", chunk_size=64 * 1024)
    stop = str(work / "stop")
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=backup_loop, args=(s3, str(work), ROUNDS, stop))
    pruner = ctx.Process(target=prune_loop, args=(s3, str(work), grace_s, stop))
    writer.start()
    pruner.start()
    writer.join(timeout=120)
    pruner.join(timeout=60)
    for proc in (writer, pruner):
        if proc.is_alive():
            proc.kill()
    assert writer.exitcode == 0 and pruner.exitcode == 0
    backups = [json.loads(line) for line in (work / "backups.jsonl").read_text().splitlines()]
    prunes = [json.loads(line) for line in (work / "prunes.jsonl").read_text().splitlines()]
    return s3, backups, prunes


def _refusals(backups: list[Any]) -> list[str]:
    """Backups that failed: with a sound repository these wrote no snapshot (safe)."""
    return [b["error"] for b in backups if not b["ok"]]


def _losses(s3: dict[str, str], backups: list[Any], work: Path) -> list[str]:
    """Real damage: snapshots reported as written that do not restore, and check errors."""
    problems: list[str] = []
    repo = open_repo(s3)
    present = set(repo.snapshot_ids())
    for b in backups:
        if b["ok"] and b["snapshot"] in present:
            target = work / f"restored-{b['snapshot']}.img"
            try:
                restore_disk(open_repo(s3), repo.load_snapshot(b["snapshot"]), None, target)
                if target.read_bytes() != Path(b["expected"]).read_bytes():
                    problems.append(f"{b['snapshot']}: restored bytes differ")
                target.unlink()
            except Exception as exc:
                problems.append(f"{b['snapshot']}: {exc}")
    report = check_repository(open_repo(s3), read_data=True)
    problems.extend(report.errors)
    return problems


def _damage(s3: dict[str, str], backups: list[Any], work: Path) -> list[str]:
    return _refusals(backups) + _losses(s3, backups, work)


def test_backup_during_forget_and_prune_with_grace(
    seaweed_server: SeaweedServer, tmp_path: Path
) -> None:
    s3, backups, prunes = _run(seaweed_server, tmp_path, grace_s=2.0)
    assert not [p for p in prunes if "error" in p], prunes
    assert all(b["ok"] for b in backups), backups
    assert sum(p["forgotten"] for p in prunes) >= 4  # forget really ran
    assert _damage(s3, backups, tmp_path) == []
    # The garbage really goes: a final prune after the grace period deletes packs too.
    time.sleep(2.5)
    first = prune(open_repo(s3), PruneOptions(grace_s=2.0))
    time.sleep(2.5)
    final = prune(open_repo(s3), PruneOptions(grace_s=2.0))
    assert sum(p["unindexed"] for p in prunes) + first.packs_unindexed >= 1
    assert sum(p["deleted"] for p in prunes) + first.packs_deleted + final.packs_deleted >= 1
    assert _damage(s3, backups, tmp_path) == []


SAFE_REFUSALS = ("the write session expired", "was pruned while this backup used it")


def test_grace_zero_takes_running_backups_for_dead(
    seaweed_server: SeaweedServer, tmp_path: Path
) -> None:
    """Grace 0 (what `prune --grace 0 --unsafe-grace` runs): every prune takes the running
    backup for dead and removes its session and unindexed packs. What happens, exactly: the
    backup notices at commit and refuses (no snapshot written), so the backups fail. A refusal
    is not data loss; the loss grace 0 causes for readers (a restore that loaded the index
    before the prune) is shown in tests/unit/repo/test_gc_overlap.py. The race is timing
    dependent, so up to three runs; one must refuse (in practice the first does)."""
    refusals: list[str] = []
    for attempt in range(3):
        work = tmp_path / f"attempt{attempt}"
        work.mkdir()
        s3, backups, _prunes = _run(seaweed_server, work, grace_s=0.0)
        refusals = _refusals(backups)
        if refusals:
            break
    assert refusals, "with grace 0 concurrent prunes should have taken a backup for dead"
    unsafe = [r for r in refusals if not any(text in r for text in SAFE_REFUSALS)]
    assert unsafe == [], unsafe  # every failure is the commit-time refusal, nothing else
    present = set(open_repo(s3).snapshot_ids())
    refused = [b for b in backups if not b["ok"]]
    assert all("snapshot" not in b for b in refused)  # a refusal writes no snapshot
    assert present <= {b["snapshot"] for b in backups if b["ok"]}
