"""Entry point: global options, command groups and the error → exit code translation."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from e3backup import __version__
from e3backup.cli import backup_cmd, demo_cmd, repo_cmd, restore_cmd, snapshots_cmd, vm_cmd
from e3backup.cli.context import PASSWORD_ENV, REPO_ENV, CliContext
from e3backup.cli.forget_cmd import forget
from e3backup.cli.output import error
from e3backup.cli.prune_cmd import prune_command
from e3backup.core.errors import E3Error

app = typer.Typer(
    name="e3backup",
    help=(
        "Deduplicating, compressing, encrypting backups of VM disks and images.\n\n"
        f"The repository comes from --repo or ${REPO_ENV}; its password from ${PASSWORD_ENV}, "
        "--password-file or a prompt."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(repo_cmd.app, name="repo")
app.add_typer(backup_cmd.app, name="backup")
app.add_typer(vm_cmd.app, name="vm")
app.command("snapshots")(snapshots_cmd.snapshots)
app.command("restore")(restore_cmd.restore)
app.command("demo")(demo_cmd.demo)
app.command("forget")(forget)
app.command("prune")(prune_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"e3backup {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            "-r",
            envvar=REPO_ENV,
            help="Repository: a directory path or s3://bucket/prefix.",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="S3 endpoint URL for S3-compatible stores (default: $AWS_ENDPOINT_URL or AWS). "
            "Credentials come from $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY or ~/.aws.",
        ),
    ] = None,
    limit_upload: Annotated[
        int | None, typer.Option("--limit-upload", min=1, help="Upload cap in KiB/s.")
    ] = None,
    limit_download: Annotated[
        int | None, typer.Option("--limit-download", min=1, help="Download cap in KiB/s.")
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="Read the repository password from this file."),
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext(repo, password_file, endpoint, limit_upload, limit_download)


def run() -> None:
    """Console entry: usage errors are Typer's (exit 2); ours print one line and their code."""
    try:
        app()
    except E3Error as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
