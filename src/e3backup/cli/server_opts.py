"""Options shared by `e3backup server` and `e3backup admin`: where the server's data lives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from e3backup.cli.conventions import apply_conventions
from e3backup.core.errors import UsageError
from e3backup.server.settings import ServerSettings

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="E3BACKUP_SERVER_DATA_DIR",
        help="Server data directory (default /var/lib/e3backup as root, else the XDG data dir).",
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="E3BACKUP_SERVER_DB_URL",
        help="Database URL: sqlite:///PATH (default: under the data dir) or "
        "postgresql+psycopg://USER@HOST:PORT/DB.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def build_settings(data_dir: Path | None, db: str | None, **more: Any) -> ServerSettings:
    given = {k: v for k, v in {"data_dir": data_dir, "db_url": db, **more}.items() if v is not None}
    try:
        return ServerSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"server settings: {first.get('msg', exc)}") from None


def _every_callback(app: typer.Typer) -> set[Callable[..., Any]]:
    found = {c.callback for c in app.registered_commands if c.callback is not None}
    for group in app.registered_groups:
        if group.typer_instance is not None:
            found |= _every_callback(group.typer_instance)
    return found


def apply_server_conventions(app: typer.Typer) -> None:
    """The CLI's help conventions, without the repository options (these commands take
    --data-dir/--db instead)."""
    apply_conventions(app, without_repository=_every_callback(app))
