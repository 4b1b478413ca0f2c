"""Turn a repository location into a ready backend: the one place where wrappers are stacked.

`open_backend("/backup/repo")`, `open_backend("file:///backup/repo")` or
`open_backend("s3://bucket/prefix", endpoint=...)`. The stack, innermost first:
backend → rate limit (only when a limit is given) → retry (always), so a retried upload is
charged against the bandwidth cap again, as it is on the wire.

S3 settings come from the arguments, then the environment, then boto3's default chain
(`AWS_PROFILE`, `~/.aws/credentials`, `~/.aws/config`, instance roles):
endpoint `E3BACKUP_S3_ENDPOINT`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`; region
`E3BACKUP_S3_REGION`, `AWS_REGION`, `AWS_DEFAULT_REGION`; credentials
`E3BACKUP_S3_ACCESS_KEY_ID` + `E3BACKUP_S3_SECRET_ACCESS_KEY`, then `AWS_ACCESS_KEY_ID` +
`AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from e3backup.core.errors import UsageError
from e3backup.storage.backend import Backend
from e3backup.storage.local import LocalBackend
from e3backup.storage.ratelimit import RateLimitedBackend
from e3backup.storage.retry import RetryBackend, RetryPolicy

if TYPE_CHECKING:
    from e3backup.storage.s3 import S3Backend


def open_backend(
    location: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    upload_limit_kibps: int | None = None,
    download_limit_kibps: int | None = None,
    retry: RetryPolicy | None = None,
    parallelism: int | None = None,
) -> Backend:
    """Open the backend for `location`, wrapped for production use (see the module doc)."""
    backend = open_raw_backend(
        location,
        endpoint=endpoint,
        region=region,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        parallelism=parallelism,
    )
    return wrap_backend(
        backend,
        upload_limit_kibps=upload_limit_kibps,
        download_limit_kibps=download_limit_kibps,
        retry=retry,
    )


def wrap_backend(
    backend: Backend,
    *,
    upload_limit_kibps: int | None = None,
    download_limit_kibps: int | None = None,
    retry: RetryPolicy | None = None,
) -> Backend:
    for name, limit in (("upload", upload_limit_kibps), ("download", download_limit_kibps)):
        if limit is not None and limit <= 0:
            raise UsageError(f"the {name} limit must be a positive number of KiB/s, not {limit}")
    if upload_limit_kibps or download_limit_kibps:
        backend = RateLimitedBackend(
            backend, upload_kibps=upload_limit_kibps, download_kibps=download_limit_kibps
        )
    return RetryBackend(backend, retry)


def open_raw_backend(
    location: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    parallelism: int | None = None,
) -> Backend:
    """The bare backend for `location`, without retry or rate limits."""
    if location.startswith("s3://"):
        return open_s3(
            location,
            endpoint=endpoint,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            parallelism=parallelism,
        )
    if "://" in location and not location.startswith("file://"):
        scheme = location.split("://", 1)[0]
        raise UsageError(f"unsupported repository location {location!r} (scheme {scheme!r})")
    if location.startswith("file://"):
        parsed = urlparse(location)
        if parsed.netloc not in ("", "localhost"):
            raise UsageError(f"file URL with a host is not supported: {location!r}")
        location = unquote(parsed.path)
    if not location:
        raise UsageError("empty repository location")
    return LocalBackend(Path(location).expanduser())


def open_s3(
    location: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    parallelism: int | None = None,
) -> S3Backend:
    # boto3 takes a third of a second to import: only S3 users pay for it.
    from e3backup.storage.s3 import DEFAULT_PARALLELISM, S3Backend, parse_s3_url

    try:
        bucket, prefix = parse_s3_url(location)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    endpoint = endpoint or _env("E3BACKUP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = region or _env("E3BACKUP_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    if access_key is None and secret_key is None:
        access_key = _env("E3BACKUP_S3_ACCESS_KEY_ID")
        secret_key = _env("E3BACKUP_S3_SECRET_ACCESS_KEY")
    # AWS_* variables and files are boto3's default chain: leave them to it.
    if (access_key is None) != (secret_key is None):
        raise UsageError("give both an S3 access key and a secret key, or neither")
    if endpoint and "://" not in endpoint:
        raise UsageError(f"S3 endpoint must be a URL such as https://host:port, not {endpoint!r}")
    return S3Backend(
        bucket,
        prefix,
        endpoint_url=endpoint or None,
        region=region or ("us-east-1" if endpoint else None),
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        parallelism=parallelism or DEFAULT_PARALLELISM,
    )


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None
