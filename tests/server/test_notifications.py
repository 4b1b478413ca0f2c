"""The notification outbox end to end: finished runs → outbox → a real SMTP server and a real
HTTP receiver, on SQLite and PostgreSQL; retries with backoff; nothing secret in a message."""

from __future__ import annotations

import json
import os
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from e3backup.server.crypto import SecretBox
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import NotificationOutbox, Run, RunEvent
from e3backup.server.notify import (
    MAX_ATTEMPTS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SmtpConfig,
    verify_signature,
)
from e3backup.server.services import notifications
from fixtures.receivers import HttpReceiver, SmtpReceiver, http_receiver, smtp_receiver
from fixtures.server_db import db_factory, make_job, make_run, make_tenant_agent, utc

__all__ = ["db_factory", "http_receiver", "smtp_receiver"]

BOX = SecretBox(os.urandom(32))
HOOK_SECRET = "hook-secret-9b2c"
REPO_PASSWORD = "repo-pass-e81d"
T0 = utc(2024, 5, 1, 10, 0)


def setup_job(
    factory: sessionmaker[Session], http: HttpReceiver, on: list[str] | None = None
) -> tuple[int, int, int]:
    """A job notifying ops@ and the webhook; one failed, one successful and one running run."""
    notify_json = {
        "emails": ["ops@example.org"],
        "webhook_url": http.url,
        "webhook_secret_enc": BOX.seal(HOOK_SECRET, notifications.WEBHOOK_SECRET_CONTEXT),
        "on": on or ["failed"],
    }
    with session_scope(factory) as db:
        _, agent = make_tenant_agent(db, last_seen_at=T0)
        job = make_job(
            db,
            agent,
            name="db-server",
            notify_json=notify_json,
            repository_password_enc=BOX.seal(REPO_PASSWORD, "jobs.repository_password"),
        )
        failed = make_run(
            db,
            job,
            status="failed",
            finished_at=T0,
            error="disk read error at offset 4096",
        )
        db.add(
            RunEvent(
                run_id=failed.id,
                event_id="e1",
                ts=T0,
                message_id="HYPERV_VM_FAILED",
                params_json={"vm_name": "db01", "message": "disk read error"},
            )
        )
        ok = make_run(db, job, status="success", finished_at=T0)
        running = make_run(db, job, status="running")
        return failed.id, ok.id, running.id


def outbox(db: Session) -> list[NotificationOutbox]:
    return list(db.scalars(select(NotificationOutbox).order_by(NotificationOutbox.id)))


def test_finished_run_is_mailed_and_posted_once(
    db_factory: sessionmaker[Session], smtp_receiver: SmtpReceiver, http_receiver: HttpReceiver
) -> None:
    failed_id, ok_id, running_id = setup_job(db_factory, http_receiver)
    smtp = SmtpConfig(host="127.0.0.1", port=smtp_receiver.port)
    report = notifications.deliver_due(db_factory, BOX, smtp, now=T0, allow_private_targets=True)
    assert report.enqueued == 2 and len(report.sent) == 2
    again = notifications.deliver_due(
        db_factory, BOX, smtp, now=T0 + timedelta(minutes=1), allow_private_targets=True
    )
    assert again.enqueued == 0 and again.sent == []

    [mail] = smtp_receiver.messages
    assert mail.recipients == ["ops@example.org"]
    body = mail.message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Backup 'db-server' on host-acme failed" in str(mail.message["Subject"])
    assert "VM 'db01' backup failed: disk read error." in body
    [hook] = http_receiver.requests
    headers = {k.lower(): v for k, v in hook.headers.items()}
    assert verify_signature(
        HOOK_SECRET, headers[TIMESTAMP_HEADER.lower()], hook.body, headers[SIGNATURE_HEADER.lower()]
    )
    payload = json.loads(hook.body)
    assert payload["run"]["run_id"] == failed_id and payload["run"]["status"] == "failed"
    for secret in (HOOK_SECRET, REPO_PASSWORD):
        assert secret not in body and secret not in hook.body.decode()
    with session_scope(db_factory) as db:
        assert [(r.channel, r.status) for r in outbox(db)] == [
            ("email", "sent"),
            ("webhook", "sent"),
        ]
        # every finished run was looked at once (the success was not wanted), running was not
        assert db.get(Run, ok_id).notified_at is not None  # type: ignore[union-attr]
        assert db.get(Run, running_id).notified_at is None  # type: ignore[union-attr]


def test_webhook_down_is_retried_with_backoff_then_given_up(
    db_factory: sessionmaker[Session], http_receiver: HttpReceiver
) -> None:
    setup_job(db_factory, http_receiver)
    with session_scope(db_factory) as db:  # webhook only: drop the e-mail target
        for run in db.scalars(select(Run)):
            run.notified_at = None
    http_receiver.statuses = [503]
    smtp = SmtpConfig(host="")  # e-mail unconfigured: that row fails for good at once
    now = T0
    report = notifications.deliver_due(
        db_factory, BOX, smtp, now=now, webhook_backoff_s=0.01, allow_private_targets=True
    )
    assert len(report.retrying) == 1 and len(report.failed) == 1
    # not due again before the backoff has passed
    assert (
        notifications.deliver_due(
            db_factory,
            BOX,
            smtp,
            now=now + timedelta(seconds=5),
            webhook_backoff_s=0.01,
            allow_private_targets=True,
        ).retrying
        == []
    )
    for _ in range(MAX_ATTEMPTS - 1):
        with session_scope(db_factory) as db:
            [row] = [r for r in outbox(db) if r.channel == "webhook"]
            now = row.next_attempt_at
        last = notifications.deliver_due(
            db_factory, BOX, smtp, now=now, webhook_backoff_s=0.01, allow_private_targets=True
        )
    assert last.failed and not last.retrying
    with session_scope(db_factory) as db:
        [row] = [r for r in outbox(db) if r.channel == "webhook"]
        assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
        assert row.last_error == "webhook answered HTTP 503"
    assert len(http_receiver.requests) == MAX_ATTEMPTS * 3  # three quick tries per attempt


def test_status_filter_and_unconfigured_jobs(
    db_factory: sessionmaker[Session], http_receiver: HttpReceiver
) -> None:
    assert notifications.targets_for(None, "failed") == []
    assert notifications.targets_for({"emails": ["a@x"]}, "success") == []  # default: problems
    assert notifications.targets_for({"emails": ["a@x"], "on": ["success"]}, "success") == [
        ("email", "a@x")
    ]
    setup_job(db_factory, http_receiver, on=["success"])
    report = notifications.deliver_due(db_factory, BOX, SmtpConfig(host=""), now=T0)
    assert report.enqueued == 2  # the successful run's e-mail and webhook, not the failed one


def test_internal_webhook_target_is_refused_by_default(
    db_factory: sessionmaker[Session], http_receiver: HttpReceiver
) -> None:
    """Without notify_allow_private_targets the loopback receiver is never contacted and the
    outbox row fails for good, naming the rule."""
    setup_job(db_factory, http_receiver)
    report = notifications.deliver_due(db_factory, BOX, SmtpConfig(host=""), now=T0)
    assert len(report.failed) == 2 and not report.retrying  # e-mail unconfigured, hook refused
    assert http_receiver.requests == []
    with session_scope(db_factory) as db:
        [row] = [r for r in outbox(db) if r.channel == "webhook"]
        assert row.status == "failed"
        assert "loopback" in (row.last_error or "")
        assert "notify_allow_private_targets" in (row.last_error or "")
