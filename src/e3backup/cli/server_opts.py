"""Options shared by `e3backup server` and `e3backup admin`: where the server's data lives."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

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
