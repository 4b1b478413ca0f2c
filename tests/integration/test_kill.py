"""SIGKILL a running backup at random moments: the repository must stay whole every time.

After each kill: `repo check --read-data` passes (notes about interrupted sessions and
unindexed packs are fine; it decrypts and hashes every chunk of every snapshot), the newest
earlier snapshot, any snapshot the killed run managed to finish and one random older snapshot
restore byte-identical to the image they were taken of, and the next backup succeeds. Each
repository ends with a restore of every snapshot: nothing repairs damage (packs carry random
nonces, so a later backup never rewrites an old pack), so a snapshot a kill had hurt would
still fail then. Twenty trials over four small repositories, so restores stay few; kill delays
are seeded and spread over a measured backup (each CLI start costs ~0.4 s of imports, so
restoring every snapshot after every kill would take minutes).
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli_harness import Cli, KiB, MiB, patch, sha256, write_random

REPOSITORIES = 4
TRIALS_PER_REPOSITORY = 5
IMAGE_BYTES = 16 * MiB
SEED = 20240607
# Uploads are capped so the backup's working phase lasts about a second whatever the machine's
# load: start-up (imports, key derivation) then no longer swallows most kill moments.
THROTTLE = ("--limit-upload", "4096")


@dataclass
class KillLog:
    """What the kills hit, for the sanity checks at the end and for failure messages."""

    trials: list[str] = field(default_factory=list)
    interrupted: int = 0  # kills that stopped a backup before it made its snapshot
    left_session: int = 0  # kills that left a write session behind (mid-backup)


def test_sigkill_during_backup_leaves_a_usable_repository(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    log = KillLog()
    for n in range(REPOSITORIES):
        work = tmp_path / f"r{n}"
        work.mkdir()
        _kill_trials(Cli(work / "repo"), work, rng, log)
    assert len(log.trials) == REPOSITORIES * TRIALS_PER_REPOSITORY
    # The kills really landed inside backups, not only before or after them.
    assert log.interrupted >= 5, "\n".join(log.trials)
    assert log.left_session >= 2, "\n".join(log.trials)


def _kill_trials(cli: Cli, work: Path, rng: random.Random, log: KillLog) -> None:
    cli.init("--chunk-size", "64K", "--encryption", "none")
    image = work / "vm.img"
    write_random(image, IMAGE_BYTES, seed=rng.randrange(2**32))
    newest = cli.backup(image)["id"]  # the parent of the next backup
    shas: dict[str, str] = {newest: sha256(image)}

    # Measure start-up (open the repository) and a backup of a changed image. Every trial's
    # successful backup is timed again, so the delays follow the machine's current speed.
    started = time.monotonic()
    cli.snapshots()
    startup_s = time.monotonic() - started
    _change(image, rng)
    started = time.monotonic()
    newest = _backup(cli, image)["id"]
    backup_s = time.monotonic() - started
    shas[newest] = sha256(image)

    for trial in range(TRIALS_PER_REPOSITORY):
        _change(image, rng)
        current = sha256(image)
        # Uniform over the backup's run, from just before its work begins to its end.
        delay_s = rng.uniform(min(0.8 * startup_s, 0.5 * backup_s), backup_s)
        sessions_before = _sessions(cli)
        proc = cli.start(*THROTTLE, "backup", "image", image)
        time.sleep(delay_s)
        proc.kill()
        returncode = proc.wait(timeout=60)
        what = (
            f"{work.name} trial {trial}: killed after {delay_s:.3f} s "
            f"(backup {backup_s:.3f} s), exit {returncode}"
        )

        check = cli.run("repo", "check", "--read-data", "--json")
        assert check.returncode == 0, f"{what}\n{check.describe()}"
        report = check.json()
        assert report["ok"] and not report["damaged_snapshots"], f"{what}\n{report}"
        log.trials.append(f"{what}; notes: {report['notes']}")
        if _sessions(cli) - sessions_before:
            log.left_session += 1

        listed = {p.name for p in (cli.repo / "snapshots").iterdir()}
        assert set(shas) <= listed, what
        new = sorted(listed - set(shas))
        assert len(new) <= 1, what
        if returncode == 0:
            assert len(new) == 1, what
        if not new:
            log.interrupted += 1
        shas.update((i, current) for i in new)  # a backup that finished before the kill
        newest = new[0] if new else newest

        sample = {newest, *new, rng.choice(sorted(shas))}
        _restore(cli, {i: shas[i] for i in sample}, work, what)
        started = time.monotonic()
        after = _backup(cli, image)
        backup_s = time.monotonic() - started
        assert after["parent"] == newest, what
        shas[after["id"]] = current
        newest = after["id"]
    assert {s["id"] for s in cli.snapshots()} == set(shas)
    _restore(cli, shas, work, f"{work.name}: every snapshot after all kills")


def _backup(cli: Cli, image: Path) -> dict[str, Any]:
    result = cli.run(*THROTTLE, "backup", "image", image, "--json")
    assert result.returncode == 0, result.describe()
    doc: dict[str, Any] = result.json()
    return doc


def _sessions(cli: Cli) -> set[str]:
    sessions = cli.repo / "sessions"
    return {p.name for p in sessions.iterdir()} if sessions.is_dir() else set()


def _change(image: Path, rng: random.Random) -> None:
    """Rewrite a random region (new data to upload) and poke a few small holes of change."""
    length = rng.randrange(1 * MiB, 8 * MiB)
    patch(image, rng.randrange(0, IMAGE_BYTES - length), rng.randbytes(length))
    for _ in range(3):
        patch(image, rng.randrange(0, IMAGE_BYTES - 4 * KiB), rng.randbytes(4 * KiB))


def _restore(cli: Cli, shas: dict[str, str], work: Path, what: str) -> None:
    def restore_one(snapshot_id: str) -> None:
        target = work / f"restored-{snapshot_id[:12]}.img"
        result = cli.restore(snapshot_id, target)
        assert result.returncode == 0, f"{what}\n{result.describe()}"
        try:
            assert sha256(target) == shas[snapshot_id], f"{what}: snapshot {snapshot_id[:12]}"
        finally:
            target.unlink()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(restore_one, shas))
