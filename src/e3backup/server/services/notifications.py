"""The notification outbox: terminal runs → one outbox row per (run, channel, target) → sent.

Two steps, both safe on several replicas:

- `enqueue_finished_runs`: every run in a terminal status with `notified_at` NULL is marked
  (conditional UPDATE, so exactly one replica does it) and gets an outbox row per target of its
  job's `notify_json` whose `on` list holds the run's status. UNIQUE(run_id, channel, target)
  makes a repeated enqueue a no-op.
- `deliver_due`: an outbox row whose `next_attempt_at` has come is leased (its
  `next_attempt_at` pushed `LEASE_S` ahead in a short transaction), delivered outside any
  transaction, then marked `sent`, rescheduled with backoff, or `failed` for good.

Job `notify_json` (jobs API NotifySpec): ``{"emails": [...], "webhook_url": "...",
"webhook_secret_enc": <SecretBox>, "on": ["failed", ...]}``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session, sessionmaker

from e3backup.server import notify
from e3backup.server.crypto import SecretBox, SecretDecryptError
from e3backup.server.db.base import utcnow
from e3backup.server.db.engine import session_scope
from e3backup.server.db.models import Agent, Job, NotificationOutbox, Run, RunEvent
from e3backup.server.db.models.runs import TERMINAL_STATUSES
from e3backup.server.event_catalog import format_event
from e3backup.server.schemas.jobs import DEFAULT_NOTIFY_ON
from e3backup.server.services.notify_settings import WEBHOOK_SECRET_CONTEXT
from e3backup.server.services.server_events import insert_ignoring_conflicts

log = logging.getLogger(__name__)

BATCH_SIZE = 100
LEASE_S = 300.0  # a replica that dies mid-delivery leaves the row to be retried after this
_OUTBOX: Table = NotificationOutbox.__table__  # type: ignore[assignment]


@dataclass
class DeliveryReport:
    enqueued: int = 0
    sent: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def targets_for(notify_json: dict[str, Any] | None, status: str) -> list[tuple[str, str]]:
    """(channel, target) pairs a run with `status` is reported to."""
    if not notify_json:
        return []
    if status not in (notify_json.get("on") or DEFAULT_NOTIFY_ON):
        return []
    out = [("email", str(address)) for address in notify_json.get("emails") or []]
    if notify_json.get("webhook_url"):
        out.append(("webhook", str(notify_json["webhook_url"])))
    return out


def _skip_locked(db: Session, query: Any) -> Any:
    if db.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def enqueue_finished_runs(db: Session, now: datetime) -> int:
    """Outbox rows for newly finished runs; returns how many rows were added."""
    query = (
        select(Run.id, Run.job_id, Run.status)
        .where(Run.status.in_(TERMINAL_STATUSES), Run.notified_at.is_(None))
        .order_by(Run.id)
        .limit(BATCH_SIZE)
    )
    added = 0
    for run_id, job_id, status in db.execute(_skip_locked(db, query)).all():
        marked = db.execute(
            update(Run)
            .where(Run.id == run_id, Run.notified_at.is_(None))
            .values(notified_at=now)
            .execution_options(synchronize_session=False)
        )
        if marked.rowcount != 1:  # type: ignore[attr-defined]
            continue
        job = db.get(Job, job_id) if job_id is not None else None
        for channel, target in targets_for(job.notify_json if job else None, status):
            row = {"run_id": run_id, "channel": channel, "target": target[:1000]}
            row |= {"status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
            added += insert_ignoring_conflicts(db, _OUTBOX, row)
    return added


def _lease_due(db: Session, now: datetime) -> list[int]:
    query = (
        select(NotificationOutbox.id, NotificationOutbox.next_attempt_at)
        .where(NotificationOutbox.status == "pending", NotificationOutbox.next_attempt_at <= now)
        .order_by(NotificationOutbox.next_attempt_at)
        .limit(BATCH_SIZE)
    )
    leased = []
    for row_id, due_at in db.execute(_skip_locked(db, query)).all():
        claimed = db.execute(
            update(NotificationOutbox)
            .where(NotificationOutbox.id == row_id, NotificationOutbox.next_attempt_at == due_at)
            .values(
                next_attempt_at=now + timedelta(seconds=LEASE_S),
                attempts=NotificationOutbox.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            leased.append(row_id)
    return leased


@dataclass(frozen=True)
class _Delivery:
    channel: str
    target: str
    attempts: int
    summary: notify.RunSummary
    webhook_secret: str | None


def run_summary(db: Session, run: Run) -> notify.RunSummary:
    job = db.get(Job, run.job_id) if run.job_id is not None else None
    agent = db.get(Agent, run.agent_id) if run.agent_id is not None else None
    events = db.execute(
        select(RunEvent.message_id, RunEvent.params_json)
        .where(RunEvent.run_id == run.id)
        .order_by(RunEvent.id.desc())
        .limit(notify.MAX_EVENT_LINES)
    ).all()
    return notify.RunSummary(
        run_id=run.id,
        run_uuid=run.uuid,
        run_type=run.run_type,
        status=run.status,
        trigger=run.trigger,
        job_id=run.job_id,
        job_name=job.name if job else "(deleted job)",
        agent_name=(agent.hostname or f"agent {agent.id}") if agent else "(no agent)",
        started_at=run.started_at or run.claimed_at,
        finished_at=run.finished_at,
        bytes_total=run.bytes_total,
        bytes_processed=run.bytes_processed,
        bytes_transferred=run.bytes_transferred,
        error=run.error,
        events=tuple(format_event(m, p) for m, p in reversed(events)),
    )


def _load(db: Session, box: SecretBox, row_id: int) -> _Delivery | None:
    row = db.get(NotificationOutbox, row_id)
    run = db.get(Run, row.run_id) if row else None
    if row is None or run is None:
        return None
    secret = None
    if row.channel == "webhook":
        job = db.get(Job, run.job_id) if run.job_id is not None else None
        sealed = (job.notify_json or {}).get("webhook_secret_enc") if job else None
        if sealed:
            secret = box.open(str(sealed), WEBHOOK_SECRET_CONTEXT)
    return _Delivery(row.channel, row.target, row.attempts, run_summary(db, run), secret)


@dataclass(frozen=True)
class WebhookPolicy:
    backoff_s: float = 1.0  # paces the few quick retries inside one attempt
    allow_private_targets: bool = False  # server setting notify_allow_private_targets


def _send(
    delivery: _Delivery, smtp: notify.SmtpConfig, delivery_id: str, policy: WebhookPolicy
) -> None:
    if delivery.channel == "email":
        notify.send_email(smtp, [delivery.target], delivery.summary)
        return
    if not delivery.webhook_secret:
        raise notify.NotifyError("the job's webhook has no secret to sign with", False)
    notify.post_webhook(
        delivery.target,
        delivery.webhook_secret,
        notify.webhook_payload(delivery.summary),
        delivery_id=delivery_id,
        backoff_s=policy.backoff_s,
        allow_private=policy.allow_private_targets,
    )


def _deliver_one(
    factory: sessionmaker[Session],
    box: SecretBox,
    smtp: notify.SmtpConfig,
    row_id: int,
    now: datetime,
    report: DeliveryReport,
    policy: WebhookPolicy,
) -> None:
    error: notify.NotifyError | None = None
    with session_scope(factory) as db:
        try:
            delivery = _load(db, box, row_id)
        except SecretDecryptError as exc:
            delivery, error = None, notify.NotifyError(str(exc), False)
    if delivery is not None:
        try:
            _send(delivery, smtp, f"outbox-{row_id}", policy)
        except notify.NotifyError as exc:
            error = exc
    attempts = delivery.attempts if delivery else notify.MAX_ATTEMPTS
    values: dict[str, Any]
    if error is None and delivery is not None:
        values = {"status": "sent", "sent_at": now, "last_error": None}
        report.sent.append(row_id)
    elif error is not None and error.retryable and attempts < notify.MAX_ATTEMPTS:
        delay = notify.retry_delay_s(attempts)
        values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": str(error)}
        report.retrying.append(row_id)
    else:
        values = {"status": "failed", "last_error": str(error) if error else "run is gone"}
        report.failed.append(row_id)
    with session_scope(factory) as db:
        db.execute(
            update(NotificationOutbox).where(NotificationOutbox.id == row_id).values(**values)
        )


def deliver_due(
    factory: sessionmaker[Session],
    box: SecretBox,
    smtp: notify.SmtpConfig,
    now: datetime | None = None,
    webhook_backoff_s: float = 1.0,
    allow_private_targets: bool = False,
) -> DeliveryReport:
    """Enqueue finished runs, then deliver every due outbox row (one notification loop pass).

    `webhook_backoff_s` paces the few quick retries inside one attempt; the outbox itself
    backs off between attempts (`notify.retry_delay_s`). Webhooks to internal addresses are
    refused unless `allow_private_targets` (server setting notify_allow_private_targets)."""
    policy = WebhookPolicy(webhook_backoff_s, allow_private_targets)
    now = now or utcnow()
    report = DeliveryReport()
    with session_scope(factory) as db:
        report.enqueued = enqueue_finished_runs(db, now)
    with session_scope(factory) as db:
        leased = _lease_due(db, now)
    for row_id in leased:
        _deliver_one(factory, box, smtp, row_id, now, report, policy)
    if report.failed:
        log.warning("notifications: %d delivery(ies) failed for good", len(report.failed))
    return report
