"""forget + prune through the real CLI: old data really goes, what is kept stays whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import Cli, MiB, sha256, write_random


def _packs(cli: Cli) -> set[str]:
    return {p.name for p in (cli.repo / "packs").rglob("*") if p.is_file()}


def test_forget_then_prune_frees_space_and_keeps_the_rest_intact(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "repo")
    cli.init("--chunk-size", "64K")
    image = tmp_path / "disk.img"
    write_random(image, 4 * MiB, seed=1)
    first = cli.backup(image)["id"]
    old_packs = _packs(cli)
    write_random(image, 4 * MiB, seed=2)  # every chunk changes: the first backup's data dies
    kept = cli.backup(image)["id"]
    expected = sha256(image)

    dry = cli.run("forget", "--keep-last", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.describe()
    assert {s["id"] for s in dry.json()["snapshots"] if not s["keep"]} == {first}
    assert {s["id"] for s in cli.snapshots()} == {first, kept}  # dry run changed nothing

    forgot = cli.run("forget", "--keep-last", "1", "--json")
    assert forgot.returncode == 0, forgot.describe()
    assert [s["id"] for s in cli.snapshots()] == [kept]

    # Step one takes dead packs out of the index, step two (after the grace) deletes them.
    # Nothing else runs, so a grace of 0 is safe here, and has to be asked for as unsafe.
    unindex = cli.run("prune", "--grace", "0s", "--unsafe-grace", "--json")
    assert unindex.returncode == 0, unindex.describe()
    assert unindex.json()["packs_unindexed"] >= 1
    delete = cli.run("prune", "--grace", "0s", "--unsafe-grace", "--json")
    assert delete.returncode == 0, delete.describe()
    assert delete.json()["packs_deleted"] >= 1
    assert not old_packs & _packs(cli), "the forgotten snapshot's packs are still stored"

    check = cli.run("repo", "check", "--read-data", "--json")
    assert check.returncode == 0 and check.json()["ok"], check.describe()
    target = tmp_path / "restored.img"
    restored = cli.restore(kept, target)
    assert restored.returncode == 0, restored.describe()
    assert sha256(target) == expected


def test_forget_needs_a_policy(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "repo")
    cli.init()
    result = cli.run("forget")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:"), result.describe()


@pytest.mark.parametrize("command", [("prune",), ("forget", "--keep-last", "1", "--prune")])
@pytest.mark.parametrize("grace", ["0", "10s", "179s"])
def test_a_grace_below_the_heartbeat_is_refused(
    tmp_path: Path, command: tuple[str, ...], grace: str
) -> None:
    """Below 2 heartbeats + 60s prune would take running backups for dead: usage error, and
    nothing is forgotten or pruned, unless --unsafe-grace says so."""
    cli = Cli(tmp_path / "repo")
    cli.init("--chunk-size", "64K")
    image = tmp_path / "disk.img"
    write_random(image, 1 * MiB, seed=1)
    cli.backup(image)
    cli.backup(image)
    before = {p.name for p in cli.repo.rglob("*")}
    refused = cli.run(*command, "--grace", grace)
    assert refused.returncode == 2, refused.describe()
    assert "below the safe minimum of 3m" in refused.stderr, refused.describe()
    assert "every 1m (E3BACKUP_HEARTBEAT_S)" in refused.stderr, refused.describe()
    assert "--unsafe-grace" in refused.stderr
    assert {p.name for p in cli.repo.rglob("*")} == before
    assert cli.run(*command, "--grace", "3m").returncode == 0
    assert cli.run(*command, "--grace", grace, "--unsafe-grace").returncode == 0


def test_the_minimum_follows_the_heartbeat(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "repo")
    cli.init("--chunk-size", "64K")
    assert cli.run("prune", "--grace", "70s", E3BACKUP_HEARTBEAT_S="5").returncode == 0
    refused = cli.run("prune", "--grace", "60s", E3BACKUP_HEARTBEAT_S="5")
    assert refused.returncode == 2 and "safe minimum of 70s" in refused.stderr, refused.describe()
