"""Job notification settings through the jobs service: the webhook secret is sealed, never
answered, kept when the hook is unchanged, and required for a webhook."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from e3backup.server.crypto import SecretBox
from e3backup.server.db.engine import session_scope
from e3backup.server.schemas.jobs import JobCreate, JobUpdate
from e3backup.server.services import jobs
from e3backup.server.services.auth import Actor
from e3backup.server.services.errors import Invalid
from e3backup.server.services.notify_settings import WEBHOOK_SECRET_CONTEXT
from fixtures.server_db import make_tenant_agent, migrated_factory

BOX = SecretBox(os.urandom(32))
SECRET = "hook-secret-0123456789"


@contextmanager
def tenant_admin(tmp_path: Path) -> Iterator[tuple[Session, Actor, int]]:
    """A migrated SQLite database with one tenant and agent: (session, its admin, agent id);
    the session is rolled back at the end."""
    engine, factory = migrated_factory(f"sqlite:///{tmp_path / 's.db'}")
    with session_scope(factory) as db:
        tenant, agent = make_tenant_agent(db)
        actor = Actor("user", None, tenant.id, frozenset({tenant.id}), "admin", "admin@x")
        yield db, actor, agent.id
        db.rollback()
    engine.dispose()


def files_job(agent_id: int, notify: dict[str, Any]) -> JobCreate:
    spec = {
        "name": "n", "agent_id": agent_id, "engine": "files", "source_path": "/srv",
        "dest_type": "local", "dest_local_path": "/r", "repository_password": "pw",
        "notify": notify,
    }  # fmt: skip
    return JobCreate.model_validate(spec)


def test_webhook_secret_is_write_only(tmp_path: Path) -> None:
    with tenant_admin(tmp_path) as (db, actor, agent_id):
        notify = {"emails": ["ops@example.org"], "webhook_url": "https://h.example/x",
                  "webhook_secret": SECRET, "on": ["failed"]}  # fmt: skip
        job = jobs.create_job(db, BOX, actor, files_job(agent_id, notify))
        stored = job.notify_json or {}
        assert SECRET not in json.dumps(stored)
        assert BOX.open(stored["webhook_secret_enc"], WEBHOOK_SECRET_CONTEXT) == SECRET
        shown = jobs.job_out(job).model_dump_json()
        assert SECRET not in shown and "webhook_secret_enc" not in shown
        assert '"has_webhook_secret":true' in shown
        # same hook, no secret sent: kept; another hook without a secret: refused
        same = {"notify": {"webhook_url": "https://h.example/x", "on": ["failed", "success"]}}
        job = jobs.update_job(db, BOX, actor, job.id, JobUpdate.model_validate(same))
        assert (job.notify_json or {})["webhook_secret_enc"] == stored["webhook_secret_enc"]
        other = {"notify": {"webhook_url": "https://elsewhere.example/y"}}
        with pytest.raises(Invalid) as info:
            jobs.update_job(db, BOX, actor, job.id, JobUpdate.model_validate(other))
        assert info.value.field == "notify.webhook_secret"
        for bad, field in (
            ({"emails": ["ops@example.org\r\nBcc: x@y"]}, "notify.emails"),
            ({"webhook_url": "file:///etc/passwd", "webhook_secret": SECRET}, "notify.webhook_url"),
        ):
            with pytest.raises(Invalid) as info:
                jobs.update_job(db, BOX, actor, job.id, JobUpdate.model_validate({"notify": bad}))
            assert info.value.field == field


def test_internal_webhook_refused_on_save_unless_the_server_allows_it(tmp_path: Path) -> None:
    with tenant_admin(tmp_path) as (db, actor, agent_id):
        spec = files_job(
            agent_id, {"webhook_url": "http://10.0.0.7:9000/hook", "webhook_secret": SECRET}
        )
        with pytest.raises(Invalid) as info:
            jobs.create_job(db, BOX, actor, spec)
        assert info.value.field == "notify.webhook_url"
        assert "10.0.0.7 is a private network address" in str(info.value)
        job = jobs.create_job(db, BOX, actor, spec, allow_private_targets=True)
        assert (job.notify_json or {})["webhook_url"] == "http://10.0.0.7:9000/hook"
        metadata = {"notify": {"webhook_url": "http://169.254.169.254/", "webhook_secret": SECRET}}
        with pytest.raises(Invalid):
            jobs.update_job(db, BOX, actor, job.id, JobUpdate.model_validate(metadata))
