"""What the user sees when something is wrong: a non-zero exit and one clear line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_harness import Cli, KiB, assert_one_line_error, sha256, write_random


@pytest.fixture
def repo_with_snapshot(cli: Cli, tmp_path: Path) -> Path:
    """An initialised repository holding one backup of `disk.img`; returns the image."""
    cli.init("--chunk-size", "64K")
    image = tmp_path / "disk.img"
    write_random(image, 200 * KiB, seed=1)
    cli.backup(image)
    return image


def _no_new_objects(repo: Path, before: set[Path]) -> None:
    after = {p for p in repo.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "command",
    [
        ("snapshots",),
        ("repo", "check"),
        ("repo", "info"),
        ("restore", "latest", "--to", "{tmp}/out.img"),
        ("backup", "image", "{tmp}/disk.img"),
    ],
    ids=lambda c: "-".join(c[:2]),
)
def test_wrong_password(
    cli: Cli, tmp_path: Path, repo_with_snapshot: Path, command: tuple[str, ...]
) -> None:
    before = {p for p in cli.repo.rglob("*") if p.is_file()}
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = cli.run(*args, E3BACKUP_PASSWORD="not the password")
    assert result.returncode == 12, result.describe()
    assert_one_line_error(result, "wrong password")
    assert not (tmp_path / "out.img").exists()
    _no_new_objects(cli.repo, before)


def test_password_file_with_wrong_password(
    cli: Cli, tmp_path: Path, repo_with_snapshot: Path
) -> None:
    password_file = tmp_path / "pw.txt"
    password_file.write_text("nope\n")
    result = cli.run("--password-file", password_file, "snapshots", E3BACKUP_PASSWORD=None)
    assert result.returncode == 12, result.describe()
    assert_one_line_error(result, "wrong password")


def test_no_password_at_all(cli: Cli, repo_with_snapshot: Path) -> None:
    result = cli.run("snapshots", E3BACKUP_PASSWORD=None)
    assert_one_line_error(result, "E3BACKUP_PASSWORD")


def test_missing_repository(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    result = Cli(missing).run("snapshots")
    assert result.returncode == 10, result.describe()
    assert_one_line_error(result, str(missing), "repo init")
    assert not missing.exists()  # looking does not create it


def test_no_repository_given(tmp_path: Path) -> None:
    result = Cli(tmp_path).run("snapshots", E3BACKUP_REPO=None)
    assert_one_line_error(result, "--repo", "E3BACKUP_REPO")


def test_missing_image(cli: Cli, tmp_path: Path, repo_with_snapshot: Path) -> None:
    missing = tmp_path / "no-such.img"
    result = cli.run("backup", "image", missing)
    assert result.returncode == 30, result.describe()
    assert_one_line_error(result, str(missing), "no such file")
    assert len(cli.snapshots()) == 1
    assert not list((cli.repo / "sessions").glob("*"))


def test_directory_as_image(cli: Cli, tmp_path: Path, repo_with_snapshot: Path) -> None:
    result = cli.run("backup", "image", tmp_path)
    assert_one_line_error(result, "directory")
    assert len(cli.snapshots()) == 1


@pytest.mark.parametrize("ref", ["deadbeef", "0000000000000000", "not-an-id"])
def test_unknown_snapshot(cli: Cli, tmp_path: Path, repo_with_snapshot: Path, ref: str) -> None:
    target = tmp_path / "out.img"
    result = cli.restore(ref, target)
    assert_one_line_error(result, ref)
    assert not target.exists()


def test_latest_in_empty_repository(cli: Cli, tmp_path: Path) -> None:
    cli.init()
    result = cli.restore("latest", tmp_path / "out.img")
    assert result.returncode == 14, result.describe()
    assert_one_line_error(result, "no snapshots")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"offset": 0, "length": 10}', "list"),
        ("[[0, 10], [5]]", "[offset, length]"),
        ("[[0, -10]]", "[offset, length]"),
        ('[["0", 10]]', "[offset, length]"),
        (None, "cannot read"),
    ],
    ids=["invalid", "object", "short-pair", "negative", "string", "missing-file"],
)
def test_bad_changed_extents(
    cli: Cli, tmp_path: Path, repo_with_snapshot: Path, content: str | None, needle: str
) -> None:
    extents = tmp_path / "changed.json"
    if content is not None:
        extents.write_text(content)
    result = cli.run("backup", "image", repo_with_snapshot, "--changed-extents", extents)
    assert result.returncode == 2, result.describe()
    assert_one_line_error(result, str(extents), needle)
    assert len(cli.snapshots()) == 1


def test_init_twice_keeps_the_first_repository(
    cli: Cli, tmp_path: Path, repo_with_snapshot: Path
) -> None:
    before = {p: p.read_bytes() for p in cli.repo.rglob("*") if p.is_file()}
    for extra in ([], ["--encryption", "none"], ["--chunk-size", "1M"]):
        result = cli.run("repo", "init", *extra, E3BACKUP_PASSWORD="another password")
        assert result.returncode == 11, result.describe()
        assert_one_line_error(result, "already exists")
    assert {p: p.read_bytes() for p in cli.repo.rglob("*") if p.is_file()} == before

    # The old password still opens it, the new one does not, and the backup restores.
    assert len(cli.snapshots()) == 1
    assert cli.run("snapshots", E3BACKUP_PASSWORD="another password").returncode == 12
    restored = tmp_path / "restored.img"
    cli.ok("restore", "latest", "--to", restored)
    assert sha256(restored) == sha256(repo_with_snapshot)


def test_init_into_a_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "stuff"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = Cli(target).run("repo", "init")
    assert_one_line_error(result, "not empty")
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "args", [["--chunk-size", "3K"], ["--chunk-size", "8M"], ["--encryption", "rot13"]]
)
def test_init_with_bad_options(tmp_path: Path, args: list[str]) -> None:
    repo = tmp_path / "repo"
    result = Cli(repo).run("repo", "init", *args)
    assert_one_line_error(result)
    assert not (repo / "config").exists()
