"""open_backend: locations, environment and the wrapper stack, without contacting any server."""

from __future__ import annotations

from pathlib import Path

import pytest

from e3backup.core.errors import UsageError
from e3backup.storage.factory import open_backend
from e3backup.storage.local import LocalBackend
from e3backup.storage.ratelimit import RateLimitedBackend
from e3backup.storage.retry import RetryBackend, RetryPolicy
from e3backup.storage.s3 import S3Backend

S3_ENV = [
    "E3BACKUP_S3_ENDPOINT",
    "E3BACKUP_S3_REGION",
    "E3BACKUP_S3_ACCESS_KEY_ID",
    "E3BACKUP_S3_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in S3_ENV:
        monkeypatch.delenv(name, raising=False)


def unwrap(backend: object) -> object:
    assert isinstance(backend, RetryBackend)
    return backend.inner


@pytest.mark.parametrize("form", ["{p}", "file://{p}"])
def test_paths_open_a_local_backend_with_retry(tmp_path: Path, form: str) -> None:
    backend = open_backend(form.format(p=tmp_path / "repo"))
    inner = unwrap(backend)
    assert isinstance(inner, LocalBackend)
    assert inner.root == tmp_path / "repo"
    backend.put("k", b"v")
    assert (tmp_path / "repo" / "k").read_bytes() == b"v"


def test_rate_limits_sit_inside_retry(tmp_path: Path) -> None:
    policy = RetryPolicy(max_attempts=2)
    backend = open_backend(str(tmp_path), upload_limit_kibps=100, retry=policy)
    assert isinstance(backend, RetryBackend)
    assert backend.policy is policy
    assert isinstance(backend.inner, RateLimitedBackend)
    assert isinstance(backend.inner.inner, LocalBackend)


def test_s3_url_with_arguments() -> None:
    backend = open_backend(
        "s3://bucket/repos/host1",
        endpoint="http://127.0.0.1:1",
        access_key="key",
        secret_key="secret",
        parallelism=3,
    )
    inner = unwrap(backend)
    assert isinstance(inner, S3Backend)
    assert inner.bucket == "bucket"
    assert inner.endpoint == "http://127.0.0.1:1"
    props = backend.properties()
    assert props.parallelism == 3
    assert props.location.startswith("s3://bucket/repos/host1/")
    assert "secret" not in props.location


def test_s3_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    monkeypatch.setenv("E3BACKUP_S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("E3BACKUP_S3_SECRET_ACCESS_KEY", "secret")
    inner = unwrap(open_backend("s3://bucket"))
    assert isinstance(inner, S3Backend)
    assert inner.endpoint == "http://127.0.0.1:2"
    monkeypatch.setenv("E3BACKUP_S3_ENDPOINT", "http://127.0.0.1:3")
    inner = unwrap(open_backend("s3://bucket"))
    assert isinstance(inner, S3Backend)
    assert inner.endpoint == "http://127.0.0.1:3"


@pytest.mark.parametrize(
    ("location", "options"),
    [
        ("ftp://host/repo", {}),
        ("s3://", {}),
        ("s3://bucket/../x", {}),
        ("s3://bucket", {"access_key": "only-the-key"}),
        ("s3://bucket", {"endpoint": "127.0.0.1:9000"}),
        ("", {}),
        ("/repo", {"upload_limit_kibps": 0}),
    ],
)
def test_bad_locations_are_usage_errors(location: str, options: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        open_backend(location, **options)  # type: ignore[arg-type]
