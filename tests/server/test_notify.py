"""Notification delivery against a real SMTP server (aiosmtpd) and a real HTTP receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from e3backup.server.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_TIMEOUT_S,
    NotifyError,
    RunSummary,
    SmtpConfig,
    post_webhook,
    retry_delay_s,
    send_email,
    validate_webhook_url,
    verify_signature,
    webhook_payload,
)
from fixtures.receivers import (
    SMTP_PASSWORD,
    SMTP_USER,
    HttpReceiver,
    SmtpReceiver,
    free_port,
    http_receiver,
    smtp_receiver,
    smtp_receiver_with_auth,
)

__all__ = ["http_receiver", "smtp_receiver", "smtp_receiver_with_auth"]

WEBHOOK_SECRET = "whsec-test-5d1e"


def summary(**changes: object) -> RunSummary:
    base: dict[str, object] = {
        "run_id": 42,
        "run_uuid": "0f6c2f3e-0000-4000-8000-000000000042",
        "run_type": "backup",
        "status": "failed",
        "trigger": "schedule",
        "job_id": 7,
        "job_name": "nightly VMs",
        "agent_name": "hv-01",
        "started_at": datetime(2024, 5, 1, 2, 30, tzinfo=UTC),
        "finished_at": datetime(2024, 5, 1, 3, 45, 10, tzinfo=UTC),
        "bytes_total": 10 * 1024**3,
        "bytes_processed": 5 * 1024**3,
        "bytes_transferred": 1024**3,
        "error": "kopia: upload failed\nretry exhausted",
        "events": ("Starting backup of virtual machine 'web'.", "VM 'web' backup failed: x."),
    }
    base.update(changes)
    return RunSummary(**base)  # type: ignore[arg-type]


def test_email_reaches_a_real_smtp_server(smtp_receiver: SmtpReceiver) -> None:
    config = SmtpConfig(host=smtp_receiver.host, port=smtp_receiver.port, sender="bk@example.org")
    send_email(config, ["ops@example.org", "cto@example.org"], summary())
    [mail] = smtp_receiver.messages
    assert mail.recipients == ["ops@example.org", "cto@example.org"]
    assert mail.message["Subject"] == "[e3backup] Backup 'nightly VMs' on hv-01 failed"
    body = mail.message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Error: e3backup: upload failed retry exhausted" in body  # one line, no product name
    assert "Duration: 1h 15m 10s" in body
    assert "Uploaded: 1.0 GiB" in body
    assert "VM 'web' backup failed: x." in body


def test_email_login(smtp_receiver_with_auth: SmtpReceiver) -> None:
    good = SmtpConfig(
        host="127.0.0.1", port=smtp_receiver_with_auth.port, user=SMTP_USER, password=SMTP_PASSWORD
    )
    send_email(good, ["ops@example.org"], summary(status="success", error=None))
    assert len(smtp_receiver_with_auth.messages) == 1
    assert "succeeded" in str(smtp_receiver_with_auth.messages[0].message["Subject"])
    bad = SmtpConfig(
        host="127.0.0.1", port=smtp_receiver_with_auth.port, user=SMTP_USER, password="nope"
    )
    with pytest.raises(NotifyError) as info:
        send_email(bad, ["ops@example.org"], summary())
    assert not info.value.retryable
    assert "nope" not in str(info.value) and SMTP_PASSWORD not in str(info.value)
    assert repr(bad).count("nope") == 0  # the password is not in the config's repr either


def test_email_refused_recipient_is_permanent(smtp_receiver: SmtpReceiver) -> None:
    smtp_receiver.refuse.add("gone@example.org")
    config = SmtpConfig(host="127.0.0.1", port=smtp_receiver.port)
    with pytest.raises(NotifyError) as info:
        send_email(config, ["gone@example.org"], summary())
    assert not info.value.retryable
    assert "gone@example.org" in str(info.value)
    assert smtp_receiver.messages == []


def test_email_unreachable_server_is_retryable() -> None:
    config = SmtpConfig(host="127.0.0.1", port=free_port(), timeout_s=5)
    with pytest.raises(NotifyError) as info:
        send_email(config, ["ops@example.org"], summary())
    assert info.value.retryable
    with pytest.raises(NotifyError) as unconfigured:
        send_email(SmtpConfig(host=""), ["ops@example.org"], summary())
    assert not unconfigured.value.retryable


def test_cancelled_run_phrasing(smtp_receiver: SmtpReceiver) -> None:
    config = SmtpConfig(host="127.0.0.1", port=smtp_receiver.port)
    send_email(config, ["ops@example.org"], summary(status="cancelled", error="context canceled"))
    [mail] = smtp_receiver.messages
    assert str(mail.message["Subject"]).endswith("was cancelled")
    body = mail.message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Error: Operation was cancelled." in body and "context canceled" not in body


def test_webhook_signed_and_verified(http_receiver: HttpReceiver) -> None:
    payload = webhook_payload(summary())
    post_webhook(http_receiver.url, WEBHOOK_SECRET, payload, delivery_id="d-1", allow_private=True)
    [request] = http_receiver.requests
    assert request.path == "/hooks/e3backup"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert verify_signature(
        WEBHOOK_SECRET,
        headers[TIMESTAMP_HEADER.lower()],
        request.body,
        headers[SIGNATURE_HEADER.lower()],
    )
    assert not verify_signature(
        "wrong", headers[TIMESTAMP_HEADER.lower()], request.body, headers[SIGNATURE_HEADER.lower()]
    )
    assert headers[DELIVERY_HEADER.lower()] == "d-1"
    body = json.loads(request.body)
    assert body["run"]["status"] == "failed" and body["job"]["name"] == "nightly VMs"
    assert body["run"]["error"] == "e3backup: upload failed retry exhausted"
    assert WEBHOOK_SECRET not in request.body.decode()
    assert all(WEBHOOK_SECRET not in v for v in request.headers.values())


def _post(receiver: HttpReceiver, attempts: int, timeout_s: float = WEBHOOK_TIMEOUT_S) -> None:
    """A small payload to the test receiver, quick retries, loopback allowed."""
    post_webhook(
        receiver.url,
        WEBHOOK_SECRET,
        {"x": 1},
        timeout_s=timeout_s,
        attempts=attempts,
        backoff_s=0.01,
        allow_private=True,
    )


def test_webhook_retries_5xx_then_succeeds(http_receiver: HttpReceiver) -> None:
    http_receiver.statuses = [503, 502, 200]
    _post(http_receiver, attempts=3)
    assert len(http_receiver.requests) == 3
    ids = {r.headers[DELIVERY_HEADER] for r in http_receiver.requests}
    assert len(ids) == 1  # one delivery id across retries: receivers can deduplicate


def test_webhook_4xx_is_permanent(http_receiver: HttpReceiver) -> None:
    http_receiver.statuses = [410]
    with pytest.raises(NotifyError) as info:
        _post(http_receiver, attempts=3)
    assert not info.value.retryable and "410" in str(info.value)
    assert len(http_receiver.requests) == 1


def test_webhook_exhausted_retries_are_retryable_later(http_receiver: HttpReceiver) -> None:
    http_receiver.statuses = [500]
    with pytest.raises(NotifyError) as info:
        _post(http_receiver, attempts=2)
    assert info.value.retryable
    assert len(http_receiver.requests) == 2


def test_webhook_timeout(http_receiver: HttpReceiver) -> None:
    http_receiver.delay_s = 1.5
    with pytest.raises(NotifyError) as info:
        _post(http_receiver, attempts=1, timeout_s=0.2)
    assert info.value.retryable and "Timeout" in str(info.value)


def test_webhook_unreachable_hides_url_query() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook?token=abc123"
    with pytest.raises(NotifyError) as info:
        post_webhook(url, WEBHOOK_SECRET, {"x": 1}, attempts=1, allow_private=True)
    assert info.value.retryable and "abc123" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["ftp://x/y", "http://", "javascript:alert(1)", "https://user:pw@host/x", "x"]
)
def test_webhook_url_validation(url: str) -> None:
    with pytest.raises(ValueError):
        validate_webhook_url(url)


def test_retry_delays_back_off_and_cap() -> None:
    delays = [retry_delay_s(n) for n in range(1, 10)]
    assert delays[:3] == [30.0, 60.0, 120.0]
    assert delays == sorted(delays) and delays[-1] == 3600.0
