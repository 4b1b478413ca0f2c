"""CLI conventions through the real console script: repository options on either side of the
command, readable help, forgetting chosen snapshots, changing the password."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from cli_harness import PASSWORD, Cli, MiB, assert_one_line_error, write_random
from typer.core import TyperGroup

from e3backup.cli.main import app


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "repo")
    cli.init()
    return cli


# --- repository options after the command ---------------------------------------------------


def test_repo_after_the_command(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("snapshots", "--repo", cli.repo, "--json", E3BACKUP_REPO=None)
    assert result.returncode == 0, result.describe()
    assert result.json() == []
    other = tmp_path / "other"
    cli.ok("repo", "init", "-r", other, "--json", E3BACKUP_REPO=None)
    image = tmp_path / "disk.img"
    write_random(image, 1 * MiB, seed=3)
    cli.ok("backup", "image", image, "--repo", other, E3BACKUP_REPO=None)
    assert len(cli.ok("snapshots", "--json", "-r", other, E3BACKUP_REPO=None).json()) == 1
    assert cli.snapshots() == []  # the first repository got nothing


def test_the_later_repo_option_wins(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    # Environment, then before the command, then after it: the last one counts.
    after = cli.run("--repo", missing, "snapshots", "--repo", cli.repo, E3BACKUP_REPO=str(missing))
    assert after.returncode == 0, after.describe()
    before = cli.run("--repo", cli.repo, "snapshots", "--repo", missing)
    assert_one_line_error(before, "no repository at", str(missing))
    assert before.returncode == 10


def test_password_file_after_the_command(cli: Cli, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    result = cli.run("snapshots", "--password-file", password_file, E3BACKUP_PASSWORD=None)
    assert result.returncode == 0, result.describe()
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    assert cli.run("repo", "info", "--password-file", wrong).returncode == 12


# --- help ---------------------------------------------------------------------------------------


def _command_paths() -> list[tuple[str, ...]]:
    """Every command path, through click's own listing (the top level loads commands lazily)."""
    paths: list[tuple[str, ...]] = [()]
    groups = [((), typer.main.get_command(app))]
    while groups:
        prefix, group = groups.pop()
        if not isinstance(group, TyperGroup):
            continue
        ctx = typer.Context(group)
        for name in group.list_commands(ctx):
            paths.append((*prefix, name))
            groups.append(((*prefix, name), group.get_command(ctx, name)))
    return sorted(paths)


def test_help_shows_readable_metavars_and_literal_brackets(cli: Cli) -> None:
    paths = _command_paths()
    assert ("repo", "key", "passwd") in paths and ("backup", "image") in paths
    for path in paths:
        shown = cli.ok(*path, "--help").stdout
        assert not re.search(r"<(str|bool|int|float|path|list)", shown), (path, shown)
    image_help = cli.ok("backup", "image", "--help").stdout
    assert "[offset, length]" in " ".join(image_help.split())
    snapshots_help = cli.ok("snapshots", "--help").stdout
    for shown in ("--repo", "PATH|URL", "--limit-upload", "KIB/S", "--password-file", "PATH"):
        assert shown in snapshots_help


# --- forget SNAPSHOT_ID ------------------------------------------------------------------------


def _three_snapshots(cli: Cli, tmp_path: Path) -> list[str]:
    image = tmp_path / "disk.img"
    ids = []
    for seed in range(3):
        write_random(image, 1 * MiB, seed=seed)
        ids.append(cli.backup(image)["id"])
    return ids


def test_forget_chosen_snapshots_by_id_and_prefix(cli: Cli, tmp_path: Path) -> None:
    first, second, third = _three_snapshots(cli, tmp_path)
    dry = cli.ok("forget", first, third[:8], "--dry-run", "--json").json()
    assert [s["id"] for s in dry["snapshots"]] == [first, third]
    assert not any(s["keep"] for s in dry["snapshots"])
    assert len(cli.snapshots()) == 3
    cli.ok("forget", first, third[:8], first)
    assert [s["id"] for s in cli.snapshots()] == [second]
    tombstones = {p.name for p in (cli.repo / "tombstones").iterdir()}
    assert {first, third} <= tombstones  # tombstone first, as retention forgets do


def test_forget_by_id_forgets_nothing_if_one_id_is_unknown(cli: Cli, tmp_path: Path) -> None:
    ids = _three_snapshots(cli, tmp_path)
    result = cli.run("forget", ids[0], "0000dead")
    assert_one_line_error(result, "no snapshot with id 0000dead")
    assert result.returncode == 14
    assert [s["id"] for s in cli.snapshots()] == ids


def test_forget_ids_and_keep_rules_do_not_mix(cli: Cli, tmp_path: Path) -> None:
    ids = _three_snapshots(cli, tmp_path)
    for extra in (("--keep-last", "1"), ("--source", "x")):
        result = cli.run("forget", ids[0], *extra)
        assert_one_line_error(result, "not both")
        assert result.returncode == 2
    assert len(cli.snapshots()) == 3


# --- repo key passwd ---------------------------------------------------------------------------


def test_repo_key_passwd(cli: Cli, tmp_path: Path) -> None:
    new_password = tmp_path / "new-password"
    new_password.write_text("a new password\n")
    old_keys = set((cli.repo / "keys").iterdir())
    result = cli.ok("repo", "key", "passwd", "--new-password-file", new_password, "--json")
    doc = result.json()
    assert doc["kdf"]["name"] == "argon2id" and doc["kdf"]["time_cost"] >= 1
    key_files = set((cli.repo / "keys").iterdir())
    assert [p.name for p in key_files] == [doc["key_id"]] and not key_files & old_keys
    assert json.loads((cli.repo / "keys" / doc["key_id"]).read_text())["kdf"]["name"] == "argon2id"
    assert cli.run("snapshots").returncode == 12  # the old password no longer opens it
    assert cli.ok("snapshots", "--json", E3BACKUP_PASSWORD="a new password").json() == []


def test_repo_key_passwd_refusals(tmp_path: Path) -> None:
    plain = Cli(tmp_path / "plain", password=None)
    plain.init("--encryption", "none")
    assert_one_line_error(plain.run("repo", "key", "passwd"), "not encrypted")
    cli = Cli(tmp_path / "repo")
    cli.init()
    same = tmp_path / "same"
    same.write_text(PASSWORD)
    assert_one_line_error(
        cli.run("repo", "key", "passwd", "--new-password-file", same), "same as the old"
    )
    assert_one_line_error(cli.run("repo", "key", "passwd"), "--new-password-file")


def test_snapshots_table_prints_tags_with_brackets(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "disk[1].img"
    write_random(image, 1 * MiB, seed=4)
    cli.backup(image, "--tag", "[nightly]")
    table = cli.ok("snapshots").stdout
    assert "[nightly]" in table and "disk[1].img" in table, table
