"""Entry point: global options, command groups and the error → exit code translation."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from e3backup import __version__
from e3backup.cli import (
    admin_cmd,
    agent_cmd,
    backup_cmd,
    demo_cmd,
    key_cmd,
    quickstart_cmd,
    repo_cmd,
    restore_cmd,
    server_cmd,
    snapshots_cmd,
    vm_cmd,
)
from e3backup.cli.context import PASSWORD_ENV, REPO_ENV
from e3backup.cli.conventions import E3Group, apply_conventions, with_repository_options
from e3backup.cli.forget_cmd import forget
from e3backup.cli.output import error
from e3backup.cli.prune_cmd import prune_command
from e3backup.core.errors import E3Error

app = typer.Typer(
    name="e3backup",
    cls=E3Group,
    help=(
        "Deduplicating, compressing, encrypting backups of VM disks and images.\n\n"
        f"The repository comes from --repo or ${REPO_ENV}; its password from ${PASSWORD_ENV}, "
        "--password-file or a prompt. Repository options go before or after the command "
        "(e3backup snapshots --repo DIR); given twice, the later one wins."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
repo_cmd.app.add_typer(key_cmd.app, name="key")
app.add_typer(repo_cmd.app, name="repo")
app.add_typer(backup_cmd.app, name="backup")
app.add_typer(vm_cmd.app, name="vm")
app.command("snapshots")(snapshots_cmd.snapshots)
app.command("restore")(restore_cmd.restore)
app.command("demo")(demo_cmd.demo)
app.command("quickstart")(quickstart_cmd.quickstart)
app.command("forget")(forget)
app.command("prune")(prune_command)
apply_conventions(
    app, without_repository={demo_cmd.demo, quickstart_cmd.quickstart, vm_cmd.list_vms}
)
# The server's groups take their own --data-dir/--db, not the repository options.
app.add_typer(server_cmd.app, name="server")
app.add_typer(admin_cmd.app, name="admin")
app.add_typer(agent_cmd.app, name="agent")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"e3backup {__version__}")
        raise typer.Exit()


def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """The repository options themselves are added and applied by with_repository_options."""


app.callback()(with_repository_options(main, before_command=True))


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
