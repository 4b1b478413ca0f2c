"""Terminal-status notifications: an e-mail over SMTP and a signed webhook POST per run.

Delivery is slow and may fail, so it never runs inside an HTTP request: the server's
notification loop (services/notifications.py) calls these functions from a background thread
and retries through its outbox with `retry_delay_s`. Content comes from the run summary and the
event catalog only — never from job secrets (repository password, access keys, webhook secret).

Webhook signature (verify with `verify_signature`): header `X-E3Backup-Signature:
sha256=<hex>` is HMAC-SHA256 over `<X-E3Backup-Timestamp>.<raw body>` with the job's webhook
secret; receivers should reject stale timestamps to stop replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any
from urllib.parse import urlsplit

import httpx

from e3backup.core.errors import E3Error
from e3backup.core.units import format_bytes
from e3backup.server import webhook_target
from e3backup.server.event_catalog import CANCELLED_TEXT, is_cancellation_error, plain_text
from e3backup.server.settings import ServerSettings

SIGNATURE_HEADER = "X-E3Backup-Signature"
TIMESTAMP_HEADER = "X-E3Backup-Timestamp"
DELIVERY_HEADER = "X-E3Backup-Delivery"
EVENT_HEADER = "X-E3Backup-Event"
EVENT_NAME = "run.finished"
WEBHOOK_TIMEOUT_S = 10.0
MAX_EVENT_LINES = 20
# Outbox backoff: 30 s, 1 min, 2 min ... capped at an hour; given up after MAX_ATTEMPTS.
RETRY_BASE_S = 30.0
RETRY_CAP_S = 3600.0
MAX_ATTEMPTS = 8

_STATUS_WORDS = {
    "success": "succeeded",
    "warning": "finished with warnings",
    "partial_success": "partly succeeded",
    "failed": "failed",
    "cancelled": "was cancelled",
}


class NotifyError(E3Error):
    """A notification could not be delivered; `retryable` says whether trying later may help."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    sender: str = "e3backup@localhost"
    user: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = False
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            user=settings.smtp_user,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )

    @property
    def configured(self) -> bool:
        return bool(self.host)


@dataclass(frozen=True)
class RunSummary:
    """What a notification may say about a finished run (nothing secret goes in here)."""

    run_id: int
    run_uuid: str
    run_type: str
    status: str
    trigger: str
    job_id: int | None
    job_name: str
    agent_name: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    bytes_total: int | None = None
    bytes_processed: int | None = None
    bytes_transferred: int | None = None
    error: str | None = None
    events: Sequence[str] = ()  # formatted event lines, oldest first

    @property
    def status_words(self) -> str:
        return _STATUS_WORDS.get(self.status, self.status)

    @property
    def error_text(self) -> str | None:
        """The error as one plain line, or the seed's cancellation phrasing."""
        if not self.error:
            return None
        if self.status == "cancelled" or is_cancellation_error(self.error):
            return CANCELLED_TEXT
        return plain_text(self.error)


def subject(summary: RunSummary) -> str:
    kind = "Restore" if summary.run_type != "backup" else "Backup"
    job = plain_text(summary.job_name)
    agent = plain_text(summary.agent_name)
    return f"[e3backup] {kind} '{job}' on {agent} {summary.status_words}"


def text_body(summary: RunSummary) -> str:
    lines = [subject(summary).removeprefix("[e3backup] ") + ".", ""]
    lines.append(f"Run: {summary.run_id} ({summary.run_uuid}), started by {summary.trigger}")
    if summary.started_at:
        lines.append(f"Started:  {summary.started_at.isoformat(timespec='seconds')}")
    if summary.finished_at:
        lines.append(f"Finished: {summary.finished_at.isoformat(timespec='seconds')}")
    if summary.started_at and summary.finished_at:
        seconds = int((summary.finished_at - summary.started_at).total_seconds())
        lines.append(f"Duration: {seconds // 3600}h {seconds // 60 % 60}m {seconds % 60}s")
    for label, value in (
        ("Size", summary.bytes_total),
        ("Read", summary.bytes_processed),
        ("Uploaded", summary.bytes_transferred),
    ):
        if value is not None:
            lines.append(f"{label + ':':<9} {format_bytes(value)}")
    if summary.error_text:
        lines += ["", f"Error: {summary.error_text}"]
    events = list(summary.events)[-MAX_EVENT_LINES:]
    if events:
        lines += ["", "Events:"] + [f"  - {plain_text(line)}" for line in events]
    return "\n".join(lines) + "\n"


def webhook_payload(summary: RunSummary) -> dict[str, Any]:
    def iso(t: datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {
        "event": EVENT_NAME,
        "run": {
            "run_id": summary.run_id,
            "run_uuid": summary.run_uuid,
            "run_type": summary.run_type,
            "status": summary.status,
            "trigger": summary.trigger,
            "started_at": iso(summary.started_at),
            "finished_at": iso(summary.finished_at),
            "bytes_total": summary.bytes_total,
            "bytes_processed": summary.bytes_processed,
            "bytes_transferred": summary.bytes_transferred,
            "error": summary.error_text,
        },
        "job": {"job_id": summary.job_id, "name": summary.job_name},
        "agent": {"name": summary.agent_name},
        "message": subject(summary).removeprefix("[e3backup] "),
        "events": [plain_text(line) for line in list(summary.events)[-MAX_EVENT_LINES:]],
    }


# --- e-mail --------------------------------------------------------------------------------------


def build_email(summary: RunSummary, sender: str, recipients: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(summary)
    message["From"] = formataddr(("e3backup", sender))
    message["To"] = ", ".join(recipients)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "e3backup")
    message.set_content(text_body(summary))
    return message


def send_email(config: SmtpConfig, recipients: Sequence[str], summary: RunSummary) -> None:
    """Deliver one message to `recipients`; raises NotifyError (retryable unless refused)."""
    if not config.configured:
        raise NotifyError("e-mail notifications need smtp_host in the server settings", False)
    if not recipients:
        raise NotifyError("no e-mail recipients", False)
    message = build_email(summary, config.sender, recipients)
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.user:
                smtp.login(config.user, config.password)
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotifyError(f"the mail server refused {', '.join(exc.recipients)}", False) from None
    except smtplib.SMTPAuthenticationError:
        raise NotifyError("the mail server rejected the SMTP user or password", False) from None
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        raise NotifyError(f"mail server answered {exc.smtp_code}", not permanent) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise NotifyError(f"cannot reach the mail server {config.host}: {exc}", True) from None


# --- webhook -------------------------------------------------------------------------------------


def validate_webhook_url(url: str) -> str:
    """An http(s) URL with a host, or ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("webhook URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise ValueError("webhook URL must not carry credentials; use the webhook secret")
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def post_webhook(
    url: str,
    secret: str,
    payload: Mapping[str, Any],
    *,
    delivery_id: str | None = None,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
    attempts: int = 3,
    backoff_s: float = 1.0,
    allow_private: bool = False,
    resolver: webhook_target.Resolver = webhook_target.system_resolver,
) -> None:
    """POST `payload` signed with `secret`; a few quick retries on connection errors, 429 and
    5xx, then NotifyError (retryable, so the outbox tries again later). 4xx and 3xx (redirects
    are not followed) are permanent, and so is an internal target (see webhook_target): the
    host is resolved once and the request goes to the checked address."""
    try:
        targets = webhook_target.pin(url, allow_private, resolver)
    except webhook_target.TargetRefused as exc:
        raise NotifyError(str(exc), False) from None
    except webhook_target.TargetUnresolvable as exc:
        raise NotifyError(str(exc), True) from None
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    delivery_id = delivery_id or str(uuid.uuid4())
    problem = "not attempted"
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        for attempt in range(max(attempts, 1)):
            if attempt:
                time.sleep(backoff_s * 2 ** (attempt - 1))
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "e3backup-server",
                EVENT_HEADER: EVENT_NAME,
                DELIVERY_HEADER: delivery_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
            }
            try:
                response = _post_pinned(client, url, targets, body, headers)
            except httpx.HTTPError as exc:
                problem = f"cannot reach the webhook: {type(exc).__name__}"
                continue
            if response.status_code < 300:
                return
            problem = f"webhook answered HTTP {response.status_code}"
            if 300 <= response.status_code < 400:
                raise NotifyError(problem + " (redirects are not followed)", False)
            if response.status_code != 429 and response.status_code < 500:
                raise NotifyError(problem, False)
    raise NotifyError(problem, True)


def _post_pinned(
    client: httpx.Client,
    url: str,
    targets: Sequence[webhook_target.PinnedTarget],
    body: bytes,
    headers: dict[str, str],
) -> httpx.Response:
    """POST to the first checked address that accepts a connection; the URL's name stays the
    Host header and the TLS server name (SNI and certificate check)."""
    original = httpx.URL(url)
    headers = {**headers, "Host": original.netloc.decode("ascii")}
    for index, target in enumerate(targets):
        pinned = original.copy_with(host=str(target.address))
        extensions = {}
        if original.scheme == "https":
            extensions["sni_hostname"] = target.host
        try:
            return client.post(pinned, content=body, headers=headers, extensions=extensions)
        except httpx.ConnectError:
            if index == len(targets) - 1:
                raise
    raise httpx.ConnectError("no address to connect to")


def retry_delay_s(attempts_made: int) -> float:
    """How long the outbox waits before attempt number `attempts_made + 1`."""
    return float(min(RETRY_BASE_S * 2 ** max(attempts_made - 1, 0), RETRY_CAP_S))
