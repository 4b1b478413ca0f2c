"""Entry point: global options, command groups and the error → exit code translation.

The command modules are imported only when their command runs (or help lists it): a CLI start
then pays for one command's imports (`e3backup admin` needs no repository code, `e3backup
snapshots` no server code), which is most of its start-up time.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_group

from e3backup import __version__
from e3backup.cli.context import PASSWORD_ENV, REPO_ENV
from e3backup.cli.conventions import E3Group, apply_conventions, with_repository_options
from e3backup.cli.output import error
from e3backup.core.errors import E3Error


def _module(name: str) -> Any:
    return importlib.import_module(f"e3backup.cli.{name}")


def _repo(app: typer.Typer) -> None:
    repo_cmd = _module("repo_cmd")
    repo_cmd.app.add_typer(_module("key_cmd").app, name="key")
    app.add_typer(repo_cmd.app, name="repo")


def _group(module: str) -> Callable[[typer.Typer, str], None]:
    return lambda app, name: app.add_typer(_module(module).app, name=name)


def _command(module: str, function: str) -> Callable[[typer.Typer, str], None]:
    return lambda app, name: app.command(name)(getattr(_module(module), function))


# name → how to register it on an app, in help order (commands, then groups, as Typer lists them).
_REGISTER: dict[str, Callable[[typer.Typer, str], None]] = {
    "snapshots": _command("snapshots_cmd", "snapshots"),
    "restore": _command("restore_cmd", "restore"),
    "demo": _command("demo_cmd", "demo"),
    "quickstart": _command("quickstart_cmd", "quickstart"),
    "forget": _command("forget_cmd", "forget"),
    "prune": _command("prune_cmd", "prune_command"),
    "repo": lambda app, _name: _repo(app),
    "backup": _group("backup_cmd"),
    "vm": _group("vm_cmd"),
    # The server's groups take their own --data-dir/--db (their modules apply the conventions).
    "server": _group("server_cmd"),
    "admin": _group("admin_cmd"),
    "agent": _group("agent_cmd"),
}
_SERVER_GROUPS = {"server", "admin", "agent"}


def _without_repository(name: str) -> set[Callable[..., Any]]:
    """Commands that never open a repository."""
    if name in ("demo", "quickstart"):
        return {getattr(_module(f"{name}_cmd"), name)}
    if name == "vm":
        return {_module("vm_cmd").list_vms}
    return set()


def load_command(name: str) -> TyperCommand | TyperGroup:
    """The command (or group) `name`, its module imported now, with the CLI conventions."""
    app = typer.Typer()
    _REGISTER[name](app, name)
    if name not in _SERVER_GROUPS:
        apply_conventions(app, without_repository=_without_repository(name))
    command = get_group(app).commands[name]
    assert isinstance(command, TyperCommand | TyperGroup)
    return command


class LazyGroup(E3Group):
    """The top-level group: commands are built on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, TyperCommand | TyperGroup] = {}

    def list_commands(self, ctx: Any) -> list[str]:  # ctx: typer's vendored click Context
        return list(_REGISTER)

    def get_command(self, ctx: Any, cmd_name: str) -> TyperCommand | TyperGroup | None:
        if cmd_name not in _REGISTER:
            return None
        command = self._loaded.get(cmd_name)
        if command is None:
            command = self._loaded[cmd_name] = load_command(cmd_name)
            self.commands[cmd_name] = command
        return command


app = typer.Typer(
    name="e3backup",
    cls=LazyGroup,
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
