"""`e3backup admin tenant|user|api-token|enrollment-token create`: bootstrap the server's
database from the host. A token is printed once and stored hashed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
from e3backup.core.units import parse_duration

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer(help="Administer the control server's database.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants.", no_args_is_help=True)
user_app = typer.Typer(help="Users.", no_args_is_help=True)
api_token_app = typer.Typer(help="API tokens for scripts.", no_args_is_help=True)
enrollment_app = typer.Typer(help="Agent enrollment tokens.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")
app.add_typer(api_token_app, name="api-token")
app.add_typer(enrollment_app, name="enrollment-token")


@contextmanager
def open_database(data_dir: Path | None, db: str | None) -> Iterator[Session]:
    """A migrated database and one transaction, committed at the end of the block."""
    from e3backup.server.context import ServerContext
    from e3backup.server.db import migrate
    from e3backup.server.db.engine import session_scope

    context = ServerContext.open(build_settings(data_dir, db))
    try:
        migrate.upgrade(context.engine)
        with session_scope(context.sessions) as session:
            yield session
    finally:
        context.close()


def cli_actor(session: Session, tenant_id: int) -> Any:
    from e3backup.server.services import tenants
    from e3backup.server.services.auth import Actor

    return Actor(
        "cli", None, tenant_id, tenants.visible_tenant_ids(session, tenant_id), "admin", "cli"
    )


def _out(doc: dict[str, Any], json_out: bool, human: str) -> None:
    if json_out:
        print_json(doc)
    else:
        console.print(human, highlight=False)


@tenant_app.command("create")
def tenant_create(
    name: str,
    parent: Annotated[str | None, typer.Option("--parent", help="Parent (MSP) tenant.")] = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a tenant, optionally under an MSP parent tenant."""
    from e3backup.server.services import audit, tenants

    with open_database(data_dir, db) as session:
        tenant = tenants.create_tenant(session, name, parent)
        audit.record(session, cli_actor(session, tenant.id), "tenant.create", "tenant", tenant.id)
        doc = {"id": tenant.id, "name": tenant.name, "parent_id": tenant.parent_id}
    _out(doc, json_out, f"tenant {doc['name']} created (id {doc['id']})")


def _read_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            return password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read {password_file}: {exc.strerror}") from None
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@user_app.command("create")
def user_create(
    email: str,
    tenant: Annotated[str, typer.Option("--tenant", help="The user's tenant.")],
    role: Annotated[str, typer.Option("--role", help="admin, operator or viewer.")] = "viewer",
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Read the password from this file.")
    ] = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a user (argon2id password hash); the password is prompted unless given a file."""
    from e3backup.server.services import audit, tenants, users

    password = _read_password(password_file)
    with open_database(data_dir, db) as session:
        owner = tenants.tenant_by_name(session, tenant)
        user = users.create_user(session, owner.id, email, password, role)
        audit.record(session, cli_actor(session, owner.id), "user.create", "user", user.id)
        doc = {"id": user.id, "email": user.email, "role": user.role, "tenant_id": owner.id}
    _out(doc, json_out, f"user {doc['email']} ({doc['role']}) created in tenant {tenant}")


@api_token_app.command("create")
def api_token_create(
    email: str,
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "",
    data_dir: DataDirOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an API token for a user (Authorization: Bearer); printed once."""
    from e3backup.server.services import audit, auth, users
    from e3backup.server.services.errors import NotFound

    with open_database(data_dir, db) as session:
        user = users.user_by_email(session, email)
        if user is None:
            raise NotFound(f"no user with email {email}")
        token, secret = auth.create_api_token(session, user, name)
        audit.record(
            session, cli_actor(session, user.tenant_id), "api_token.create", "api_token", token.id
        )
        doc = {"id": token.id, "user": user.email, "token": secret}
    _out(doc, json_out, f"API token (shown once): {secret}")


@enrollment_app.command("create")
def enrollment_token_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the agents join.")],
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime: 30m, 24h, 7d (default 24h).")
    ] = "24h",
    max_uses: Annotated[
        int | None, typer.Option("--max-uses", min=1, help="How many agents may use it.")
    ] = None,
    data_dir: DataDirOption = None,
    db: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an enrollment token for `e3backup agent enroll --token`; printed once."""
    from e3backup.server.services import audit, enrollment, tenants

    try:
        lifetime_s = parse_duration(expires_in) if expires_in else None
    except ValueError as exc:
        raise UsageError(f"--expires-in: {exc}") from None
    with open_database(data_dir, db) as session:
        owner = tenants.tenant_by_name(session, tenant)
        actor = cli_actor(session, owner.id)
        token, secret = enrollment.create_enrollment_token(
            session, owner.id, lifetime_s, max_uses, actor
        )
        audit.record(session, actor, "enrollment_token.create", "enrollment_token", token.id)
        doc = {
            "id": token.id,
            "tenant": owner.name,
            "token": secret,
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "max_uses": token.max_uses,
        }
    _out(doc, json_out, f"enrollment token (shown once): {secret}")


apply_server_conventions(app)
