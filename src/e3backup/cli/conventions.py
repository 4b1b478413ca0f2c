"""Conventions every command follows, applied in one place (`apply_conventions`, from main.py).

- Repository options (`--repo`, `--endpoint`, `--password-file`, `--limit-upload`,
  `--limit-download`, `-v`) are declared once (`GLOBAL_OPTIONS`) and accepted both before and
  after the command, as restic and kopia users type them: `e3backup snapshots --repo DIR`. When
  both are given the later one (after the command) wins; the environment comes first of all.
- Help shows readable metavars (PATH, URL, KIB/S, N) instead of `<str>`/`<bool>`, and help texts
  are plain text: "[offset, length]" is printed, not swallowed as Rich markup.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from e3backup.cli.context import REPO_ENV, CliContext

REPOSITORY_PANEL = "Repository options"
_CTX_PARAM = "global_cli_context"


@dataclass(frozen=True)
class GlobalOption:
    field: str  # the CliContext attribute it sets
    annotation: Any
    decls: tuple[str, ...]
    metavar: str
    help: str
    envvar: str | None = None  # read once, before the command
    min: int | None = None
    count: bool = False

    @property
    def param_name(self) -> str:
        return f"global_{self.field}"


GLOBAL_OPTIONS = (
    GlobalOption(
        "repo_location",
        str | None,
        ("--repo", "-r"),
        "PATH|URL",
        "Repository: a directory path or s3://bucket/prefix.",
        envvar=REPO_ENV,
    ),
    GlobalOption(
        "endpoint",
        str | None,
        ("--endpoint",),
        "URL",
        "S3 endpoint URL for S3-compatible stores (default: $AWS_ENDPOINT_URL or AWS). "
        "Credentials come from $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY or ~/.aws.",
    ),
    GlobalOption(
        "upload_limit_kibps", int | None, ("--limit-upload",), "KIB/S", "Upload cap.", min=1
    ),
    GlobalOption(
        "download_limit_kibps", int | None, ("--limit-download",), "KIB/S", "Download cap.", min=1
    ),
    GlobalOption(
        "password_file",
        Path | None,
        ("--password-file",),
        "PATH",
        "Read the repository password from this file.",
    ),
    GlobalOption("verbosity", int, ("--verbose", "-v"), "", "More logs (-vv: debug).", count=True),
)


def _parameter(option: GlobalOption, before_command: bool) -> inspect.Parameter:
    info = typer.Option(
        *option.decls,
        metavar=option.metavar,
        help=option.help,
        envvar=option.envvar if before_command else None,
        min=option.min,
        count=option.count,
        rich_help_panel=REPOSITORY_PANEL,
        show_default=False,
    )
    return inspect.Parameter(
        option.param_name,
        inspect.Parameter.KEYWORD_ONLY,
        default=0 if option.count else None,
        annotation=Annotated[option.annotation, info],
    )


def with_repository_options(
    func: Callable[..., Any], *, before_command: bool = False
) -> Callable[..., Any]:
    """`func` as a command that also takes GLOBAL_OPTIONS; given ones update the CliContext."""
    signature = inspect.signature(func, eval_str=True)
    params = list(signature.parameters.values())
    ctx_name = next((p.name for p in params if p.annotation is typer.Context), None)
    extra = [_parameter(option, before_command) for option in GLOBAL_OPTIONS]
    if ctx_name is None:
        extra.append(
            inspect.Parameter(_CTX_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        )

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        ctx: typer.Context = kwargs[ctx_name] if ctx_name else kwargs.pop(_CTX_PARAM)
        cli = ctx.ensure_object(CliContext)
        for option in GLOBAL_OPTIONS:
            value = kwargs.pop(option.param_name)
            if value is not None and not (option.count and value == 0):
                setattr(cli, option.field, value)
        configure_logging(cli.verbosity)
        return func(**kwargs)

    all_params = [*params, *extra]
    command.__signature__ = signature.replace(parameters=all_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in all_params}
    return command


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


def apply_conventions(app: typer.Typer, without_repository: Collection[Callable[..., Any]]) -> None:
    """Give every command of `app` (recursively) the help conventions and the repository
    options, except the commands in `without_repository` (they never open one)."""
    app.info.cls = E3Group
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = E3Command
        if command.callback is not None and command.callback not in without_repository:
            command.callback = with_repository_options(command.callback)
    for group in app.registered_groups:
        group.cls = E3Group
        if group.typer_instance is not None:
            apply_conventions(group.typer_instance, without_repository)


# --- help rendering -----------------------------------------------------------------------------

_READABLE_TYPES = {"str": "TEXT", "int": "N", "float": "NUMBER", "path": "PATH"}


class _ReadableOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:  # ctx: typer's vendored click Context
        if self.metavar is not None:
            return self.metavar or None
        if self.is_flag or self.count:
            return None  # a flag takes no value: nothing to show
        shown = (super().display_type_rich(ctx) or "").strip("<>").removesuffix(" range")
        inner = shown.removeprefix("list[").removesuffix("]")
        return _READABLE_TYPES.get(inner, inner.upper())


class _NamedArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:  # ctx: typer's vendored click Context
        return None  # its metavar, shown as its name, says it


def _readable_params(params: list[Any]) -> list[Any]:
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = _ReadableOption
        elif type(param) is TyperArgument:
            param.__class__ = _NamedArgument
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
    return params


def _plain_help(command: TyperCommand | TyperGroup) -> None:
    """Help texts are text: escape what Rich would read as markup ("[offset, length]")."""
    if command.rich_markup_mode != "rich":
        return
    if command.help:
        command.help = escape(command.help)
    for param in command.params:
        if isinstance(param, TyperOption | TyperArgument) and param.help:
            param.help = escape(param.help)


class E3Command(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_help(self)

    def get_params(self, ctx: Any) -> list[Any]:
        return _readable_params(super().get_params(ctx))


class E3Group(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_help(self)

    def get_params(self, ctx: Any) -> list[Any]:
        return _readable_params(super().get_params(ctx))
