"""Webhook SSRF guard: internal targets are refused at save and at send time (also when a
name resolves to one), the request goes to the address that was checked (no second lookup),
and the server setting lets on-prem deployments use internal receivers."""

from __future__ import annotations

import ipaddress

import pytest

from e3backup.server import webhook_target
from e3backup.server.notify import NotifyError, post_webhook
from e3backup.server.settings import ServerSettings
from fixtures.receivers import HttpReceiver, http_receiver

__all__ = ["http_receiver"]

SECRET = "whsec-guard-0123456789"


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata service)"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private network"),
        ("172.16.0.1", "private network"),
        ("172.31.255.254", "private network"),
        ("192.168.1.1", "private network"),
        ("fd12:3456::1", "unique local (private network)"),
        ("0.0.0.0", "unspecified ('this network')"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local (cloud metadata service)"),
        ("2002:a00:1::", "private network"),  # 6to4 of 10.0.0.1
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("224.0.0.1", "multicast"),
        ("192.0.2.10", "non-public (reserved)"),  # documentation range
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refusal_rules(address: str, rule: str | None) -> None:
    assert webhook_target.refusal(ipaddress.ip_address(address)) == rule


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("http://127.0.0.1:8080/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://[::1]/x", "loopback"),
        ("http://localhost/x", "localhost resolves to"),  # a name resolving to loopback
        ("http://0.0.0.0/x", "unspecified"),
        ("http://10.0.0.5/x", "private network"),
    ],
)
def test_save_time_check_refuses_internal_targets(url: str, word: str) -> None:
    with pytest.raises(webhook_target.TargetRefused) as info:
        webhook_target.check_on_save(url, allow_private=False)
    assert word in str(info.value) and "notify_allow_private_targets" in str(info.value)
    webhook_target.check_on_save(url, allow_private=True)


def test_save_time_check_accepts_public_and_not_yet_resolvable_names() -> None:
    webhook_target.check_on_save("https://8.8.8.8/hook", allow_private=False)
    webhook_target.check_on_save("https://hooks.invalid/x", allow_private=False)  # sent-time check


def test_send_refuses_loopback_receiver_without_contacting_it(http_receiver: HttpReceiver) -> None:
    for url in (http_receiver.url, http_receiver.url.replace("127.0.0.1", "localhost")):
        with pytest.raises(NotifyError) as info:
            post_webhook(url, SECRET, {"x": 1}, attempts=1)
        assert not info.value.retryable and "loopback" in str(info.value)
    assert http_receiver.requests == []


def test_send_refuses_a_name_resolving_to_the_metadata_service() -> None:
    with pytest.raises(NotifyError) as info:
        post_webhook(
            "https://hooks.example.org/x",
            SECRET,
            {"x": 1},
            attempts=1,
            resolver=lambda host, port: ["93.184.216.34", "169.254.169.254"],
        )
    assert not info.value.retryable
    assert "hooks.example.org resolves to 169.254.169.254" in str(info.value)


def test_send_connects_to_the_checked_address_with_the_name_as_host(
    http_receiver: HttpReceiver,
) -> None:
    """Resolved once per delivery; every retry goes to that address even though the name's
    later answers would point elsewhere (DNS rebinding)."""
    port = int(http_receiver.url.rsplit(":", 1)[1].split("/", 1)[0])
    answers = [["127.0.0.1"], ["10.255.255.1"], ["10.255.255.1"]]
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return answers[len(lookups) - 1]

    http_receiver.statuses = [503, 503, 200]
    url = f"http://hooks.test:{port}/hooks/e3backup"
    post_webhook(
        url, SECRET, {"x": 1}, attempts=3, backoff_s=0.01, allow_private=True, resolver=resolver
    )
    assert lookups == ["hooks.test"]
    assert len(http_receiver.requests) == 3
    assert {r.headers["Host"] for r in http_receiver.requests} == {f"hooks.test:{port}"}


def test_redirect_is_not_followed(http_receiver: HttpReceiver) -> None:
    http_receiver.statuses = [302]
    with pytest.raises(NotifyError) as info:
        post_webhook(http_receiver.url, SECRET, {"x": 1}, attempts=3, allow_private=True)
    assert not info.value.retryable and "redirects are not followed" in str(info.value)
    assert len(http_receiver.requests) == 1


def test_setting_defaults_to_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E3BACKUP_SERVER_NOTIFY_ALLOW_PRIVATE_TARGETS", raising=False)
    assert ServerSettings().notify_allow_private_targets is False
    monkeypatch.setenv("E3BACKUP_SERVER_NOTIFY_ALLOW_PRIVATE_TARGETS", "true")
    assert ServerSettings().notify_allow_private_targets is True
