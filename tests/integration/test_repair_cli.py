"""`repo repair index` and `repo repair snapshots` through the real CLI, on real repositories
with deleted index objects, deleted packs and a damaged pack trailer: afterwards prune runs,
check is clean and every surviving snapshot restores."""

from __future__ import annotations

from pathlib import Path

from cli_harness import Cli, MiB, Run, sha256, write_random

GRACE = ("--grace", "3m")  # the safe minimum: nothing here waits for it


def _files(cli: Cli, prefix: str) -> set[Path]:
    return {p for p in (cli.repo / prefix).rglob("*") if p.is_file()}


def _two_backups(tmp_path: Path) -> tuple[Cli, list[tuple[str, Path, str]], set[Path]]:
    """Two snapshots of unrelated data; returns them and the packs only the second one uses."""
    cli = Cli(tmp_path / "repo")
    cli.init("--chunk-size", "64K")
    made = []
    second_packs: set[Path] = set()
    for n in (1, 2):
        image = tmp_path / f"disk{n}.img"
        write_random(image, 3 * MiB, seed=n)
        before = _files(cli, "packs")
        made.append((cli.backup(image)["id"], image, sha256(image)))
        second_packs = _files(cli, "packs") - before
    return cli, made, second_packs


def _restores(cli: Cli, snapshot_id: str, digest: str, target: Path) -> bool:
    result = cli.restore(snapshot_id, target)
    return result.returncode == 0 and sha256(target) == digest


def _assert_prune_refuses(cli: Cli) -> Run:
    refused = cli.run("prune", *GRACE)
    assert refused.returncode == 13, refused.describe()  # integrity: prune stopped, deleted nothing
    return refused


def test_repair_index_rebuilds_lost_index_objects(tmp_path: Path) -> None:
    cli, made, _ = _two_backups(tmp_path)
    packs = _files(cli, "packs")
    for key in _files(cli, "index"):
        key.unlink()
    assert cli.run("repo", "check").returncode == 13
    _assert_prune_refuses(cli)

    dry = cli.ok("repo", "repair", "index", "--dry-run", "--json").json()
    assert dry["packs_indexed"] == len(packs) and dry["index_objects_written"] >= 1
    assert _files(cli, "index") == set()  # --dry-run wrote nothing

    report = cli.ok("repo", "repair", "index", "--json").json()
    assert report["packs"] == report["packs_indexed"] == len(packs)
    assert report["unreadable_packs"] == {} and report["old_index_objects"] == 0
    assert len(_files(cli, "index")) == report["index_objects_written"] >= 1
    check = cli.run("repo", "check", "--read-data", "--json")
    assert check.returncode == 0 and check.json()["ok"], check.describe()
    for n, (snapshot_id, _image, digest) in enumerate(made):
        assert _restores(cli, snapshot_id, digest, tmp_path / f"out{n}.img")
    assert cli.run("prune", *GRACE).returncode == 0


def test_repair_index_leaves_an_unreadable_pack_alone(tmp_path: Path) -> None:
    """A pack whose trailer is damaged keeps the entries the old index had for it."""
    cli, made, second_packs = _two_backups(tmp_path)
    damaged = sorted(second_packs)[0]
    data = bytearray(damaged.read_bytes())
    data[-20] ^= 0x40  # inside the encrypted trailer
    damaged.write_bytes(bytes(data))
    old_index = _files(cli, "index")

    result = cli.ok("repo", "repair", "index")
    assert f"pack {damaged.name[:16]} left alone" in result.stdout, result.describe()
    report = cli.ok("repo", "repair", "index", "--json").json()
    assert list(report["unreadable_packs"]) == [damaged.name]
    assert damaged.read_bytes() == bytes(data)  # left as it was
    assert not old_index & _files(cli, "index")  # the old objects were replaced
    for n, (snapshot_id, _image, digest) in enumerate(made):
        assert _restores(cli, snapshot_id, digest, tmp_path / f"out{n}.img")  # blobs intact


def test_repair_snapshots_reports_records_then_forgets(tmp_path: Path) -> None:
    cli, made, second_packs = _two_backups(tmp_path)
    (kept, _image, kept_digest), (broken, _, _) = made
    for pack in second_packs:  # every pack of the second snapshot is lost
        pack.unlink()
    refused = _assert_prune_refuses(cli)
    assert "not in the index" in refused.stderr or "missing" in refused.stderr

    dry = cli.ok("repo", "repair", "snapshots", "--dry-run", "--json").json()
    assert [d["snapshot_id"] for d in dry["damaged"]] == [broken]
    assert dry["recorded"] == dry["forgotten"] == 0
    assert not (cli.repo / "verify" / broken).exists()

    marked = cli.ok("repo", "repair", "snapshots")
    assert f"damaged {broken[:12]}" in marked.stdout, marked.describe()
    assert "recorded 1 as damaged" in marked.stdout and "--forget" in marked.stdout
    assert (cli.repo / "verify" / broken).exists()  # backups will not build on it
    assert {s["id"] for s in cli.snapshots()} == {kept, broken}  # never dropped silently
    _assert_prune_refuses(cli)

    forgot = cli.ok("repo", "repair", "snapshots", "--forget", "--json").json()
    assert forgot["forgotten"] == 1 and [d["snapshot_id"] for d in forgot["damaged"]] == [broken]
    assert (cli.repo / "tombstones" / broken).exists()  # forgotten through a tombstone
    assert [s["id"] for s in cli.snapshots()] == [kept]
    pruned = cli.run("prune", *GRACE, "--json")
    assert pruned.returncode == 0, pruned.describe()
    assert not (cli.repo / "tombstones" / broken).exists()  # it held nothing up
    again = cli.ok("repo", "repair", "snapshots", "--json").json()
    assert again["damaged"] == [] and again["snapshots_checked"] == 1
    check = cli.run("repo", "check", "--read-data", "--json")
    assert check.returncode == 0 and check.json()["ok"], check.describe()
    assert _restores(cli, kept, kept_digest, tmp_path / "out.img")


def test_lost_index_objects_and_a_lost_pack_together(tmp_path: Path) -> None:
    """Index objects and a pack lost at once: repair index, then repair snapshots --forget."""
    cli, made, second_packs = _two_backups(tmp_path)
    (kept, _image, kept_digest), (broken, _, _) = made
    for key in _files(cli, "index"):
        key.unlink()
    sorted(second_packs)[0].unlink()
    report = cli.ok("repo", "repair", "index", "--json").json()
    assert report["packs_indexed"] == report["packs"]
    _assert_prune_refuses(cli)
    forgot = cli.ok("repo", "repair", "snapshots", "--forget", "--json").json()
    assert [d["snapshot_id"] for d in forgot["damaged"]] == [broken]
    assert cli.run("prune", *GRACE).returncode == 0
    check = cli.run("repo", "check", "--read-data", "--json")
    assert check.returncode == 0 and check.json()["ok"], check.describe()
    assert _restores(cli, kept, kept_digest, tmp_path / "out.img")
