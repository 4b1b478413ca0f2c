"""The real CLI when the store fails for good in the middle of a backup.

The local repository's `packs` directory is replaced by a file, so every pack upload fails with
a persistent (not retryable) error, as a full or read-only disk would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cli_harness import Cli, sha256, write_random


def test_persistent_store_error_fails_backup_in_one_line_and_keeps_repo_consistent(
    cli: Cli, tmp_path: Path
) -> None:
    image = tmp_path / "disk.img"
    write_random(image, 8 * 1024 * 1024, seed=1)
    first_sha = sha256(image)
    cli.init("--chunk-size", "64K")
    first = cli.backup(image)

    other = tmp_path / "other.img"  # another source: the backup only writes packs
    write_random(other, 8 * 1024 * 1024, seed=2)
    packs = cli.repo / "packs"
    moved = tmp_path / "packs-aside"
    shutil.move(packs, moved)
    packs.write_bytes(b"not a directory")
    result = cli.run("backup", "image", other)
    assert result.returncode == 20, result.describe()  # StorageError's exit code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1, result.describe()  # one clear line, not the error twice
    assert lines[0].startswith("error: cannot write"), result.describe()
    assert str(packs) in lines[0]

    packs.unlink()
    shutil.move(moved, packs)
    check = cli.run("repo", "check", "--read-data")
    assert check.returncode == 0, check.describe()
    assert [s["id"] for s in cli.snapshots()] == [first["id"]]
    restored = tmp_path / "restored.img"
    cli.ok("restore", first["id"], "--to", restored)
    assert sha256(restored) == first_sha
