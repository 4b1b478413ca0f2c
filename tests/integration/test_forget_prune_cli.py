"""forget + prune through the real CLI: old data really goes, what is kept stays whole."""

from __future__ import annotations

from pathlib import Path

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
    unindex = cli.run("prune", "--grace", "0s", "--json")
    assert unindex.returncode == 0, unindex.describe()
    assert unindex.json()["packs_unindexed"] >= 1
    delete = cli.run("prune", "--grace", "0s", "--json")
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
