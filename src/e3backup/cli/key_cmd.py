"""`e3backup repo key passwd`: the repository's passwords (key files wrapping the master key)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from e3backup.cli.context import CliContext, prompt_password, read_password_file
from e3backup.cli.output import console, print_json
from e3backup.core.errors import UsageError
from e3backup.repo import formats, keys

app = typer.Typer(help="Manage the repository's passwords.", no_args_is_help=True)


@app.command()
def passwd(
    ctx: typer.Context,
    new_password_file: Annotated[
        Path | None,
        typer.Option(
            "--new-password-file",
            metavar="PATH",
            help="Read the new password from this file (default: ask twice in the terminal).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Change the password: the master key is wrapped anew under the new password with the
    current key derivation (argon2id, calibrated on this machine), then the old key file is
    deleted, so the old password stops working. Other passwords of the repository stay.
    """
    cli: CliContext = ctx.obj
    repo = cli.open_repository()
    if not repo.codec.encrypted:
        raise UsageError("this repository is not encrypted: it has no password to change")
    old_password = cli.password()
    new_password = _new_password(new_password_file)
    if new_password == old_password:
        raise UsageError("the new password is the same as the old one")
    new_key = keys.change_password(repo.backend, repo.config.repo_id, old_password, new_password)
    kdf = keys.kdf_summary(repo.backend.get(new_key))
    key_id = new_key.removeprefix(formats.KEYS_PREFIX)
    if json_out:
        print_json({"key_id": key_id, "kdf": kdf})
        return
    console.print(
        f"password changed (key {key_id[:12]}, {kdf['name']} "
        f"{kdf.get('time_cost')} passes over {kdf.get('memory_kib', 0) // 1024} MiB); "
        "the old password no longer opens the repository",
        highlight=False,
    )


def _new_password(path: Path | None) -> str:
    if path is not None:
        password = read_password_file(path)
    elif sys.stdin.isatty():
        password = prompt_password("new repository password: ", confirm=True)
    else:
        raise UsageError("a new password is needed: pass --new-password-file or run in a terminal")
    if not password:
        raise UsageError("the new password is empty")
    return password
