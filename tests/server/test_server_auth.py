"""Service-level checks on a migrated SQLite database: argon2id passwords, enrollment token
expiry and use limits, secrets at rest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from e3backup.server.context import ServerContext
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Agent, EnrollmentToken, Job
from e3backup.server.schemas.jobs import JobCreate
from e3backup.server.services import auth, enrollment, jobs, tenants, users
from e3backup.server.services.errors import Unauthorized

WHO = enrollment.AgentIdentity(hostname="h1")


def test_passwords_are_argon2id_and_verify(server_ctx: ServerContext) -> None:
    with session_scope(server_ctx.sessions) as db:
        tenant = tenants.create_tenant(db, "acme")
        user = users.create_user(db, tenant.id, "Ann@Acme.test", "long enough pw", "admin")
        assert user.password_hash.startswith("$argon2id$")
        assert "long enough pw" not in user.password_hash
        assert users.authenticate(db, "ann@acme.test", "long enough pw").id == user.id
        with pytest.raises(Unauthorized):
            users.authenticate(db, "ann@acme.test", "wrong password")
        with pytest.raises(Unauthorized):
            users.authenticate(db, "nobody@acme.test", "long enough pw")


def test_enrollment_token_max_uses(server_ctx: ServerContext) -> None:
    with session_scope(server_ctx.sessions) as db:
        tenant = tenants.create_tenant(db, "acme")
        token, secret = enrollment.create_enrollment_token(db, tenant.id, 3600, max_uses=2)
        assert token.token_hash != secret and secret not in token.token_hash
        first, _ = enrollment.enroll_with_token(db, secret, WHO)
        second, _ = enrollment.enroll_with_token(db, secret, WHO)
        assert first.tenant_id == second.tenant_id == tenant.id
        with pytest.raises(Unauthorized):
            enrollment.enroll_with_token(db, secret, WHO)
        assert db.get_one(EnrollmentToken, token.id).uses == 2


def test_enrollment_token_expires(server_ctx: ServerContext) -> None:
    with session_scope(server_ctx.sessions) as db:
        tenant = tenants.create_tenant(db, "acme")
        _, secret = enrollment.create_enrollment_token(db, tenant.id, 0.5, max_uses=None)
        enrollment.enroll_with_token(db, secret, WHO)
        time.sleep(0.6)
        with pytest.raises(Unauthorized):
            enrollment.enroll_with_token(db, secret, WHO)
        with pytest.raises(Unauthorized):
            enrollment.enroll_with_token(db, "e3e_not-a-token", WHO)


def test_secrets_are_encrypted_at_rest(server_ctx: ServerContext, tmp_path: Path) -> None:
    secret_values = ("repo-password-Q9x1", "AKIA-access-77", "s3-secret-key-55")
    with session_scope(server_ctx.sessions) as db:
        tenant = tenants.create_tenant(db, "acme")
        user = users.create_user(db, tenant.id, "a@acme.test", "long enough pw", "admin")
        actor = auth.actor_for_user(db, user, "user")
        agent, agent_token = enrollment.enroll_with_token(
            db, enrollment.create_enrollment_token(db, tenant.id, 60, None)[1], WHO
        )
        spec = JobCreate(
            name="j",
            agent_id=agent.id,
            engine="files",
            source_path="/etc",
            dest_type="s3",
            dest_bucket="b",
            repository_password=secret_values[0],
            access_key=secret_values[1],
            secret_key=secret_values[2],
        )
        job_id = jobs.create_job(db, server_ctx.box, actor, spec).id
    with session_scope(server_ctx.sessions) as db:
        context = jobs.agent_job_context(server_ctx.box, db.get_one(Job, job_id))
        assert (context["repository_password"], context["dest_access_key"]) == secret_values[:2]
        assert db.get_one(Agent, agent.id).token_hash != agent_token
    server_ctx.engine.dispose()  # checkpoint nothing away: read the DB file and its WAL
    stored = b"".join(p.read_bytes() for p in server_ctx.settings.data_dir.glob("*.db*"))
    for value in (*secret_values, agent_token):
        assert value.encode() not in stored
    assert server_ctx.settings.key_path.stat().st_mode & 0o777 == 0o600
