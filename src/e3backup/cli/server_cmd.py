"""`e3backup server [--listen HOST:PORT] [--tls-cert F --tls-key F]` and `e3backup server
migrate`: the control server on uvicorn, migrated on start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from e3backup.cli.output import console, print_json
from e3backup.cli.server_opts import (
    DataDirOption,
    DbOption,
    JsonOption,
    apply_server_conventions,
    build_settings,
)
from e3backup.core.errors import UsageError

KEEP_ALIVE_S = 75

app = typer.Typer(
    help="The control server: agent API, client API, scheduler and watchdog.",
    invoke_without_command=True,
)


@app.callback()
def serve(
    ctx: typer.Context,
    listen: Annotated[
        str | None,
        typer.Option("--listen", envvar="E3BACKUP_SERVER_LISTEN", help="HOST:PORT to serve on."),
    ] = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
) -> None:
    """Serve the API (default 127.0.0.1:8420); the database is migrated first."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (data_dir, db)
        return
    import uvicorn

    from e3backup.server import logging_json
    from e3backup.server.app import create_app
    from e3backup.server.context import ServerContext
    from e3backup.server.db import migrate

    settings = build_settings(data_dir, db, listen=listen, tls_cert=tls_cert, tls_key=tls_key)
    try:
        host, port = settings.listen_host_port()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for path in (settings.tls_cert, settings.tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"TLS file not found: {path}")
    logging_json.configure(logging_json.use_json(settings.log_json))
    context = ServerContext.open(settings)
    try:
        migrate.upgrade(context.engine)
        uvicorn.run(
            create_app(settings, context),
            host=host,
            port=port,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            log_level="info",
            log_config=None,  # uvicorn's loggers go through the root handler configured above
            access_log=False,
            # agents poll every 5 s (60 s while backing off): keep their connections open
            # rather than make each poll a new TCP connection racing uvicorn's 5 s default
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=10,
        )
    finally:
        context.close()


@app.command()
def migrate(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Apply the database migrations and exit."""
    from e3backup.server.context import ServerContext
    from e3backup.server.db import migrate as migrations

    parent_dir, parent_db = ctx.obj or (None, None)
    settings = build_settings(data_dir or parent_dir, db or parent_db)
    context = ServerContext.open(settings)
    try:
        revision = migrations.upgrade(context.engine)
    finally:
        context.close()
    if json_out:
        print_json({"revision": revision, "database": context.engine.dialect.name})
    else:
        console.print(f"database at revision {revision}")


apply_server_conventions(app)
