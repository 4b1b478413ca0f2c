"""The run's repository, from the job's destination: a local path or S3 (decrypted keys, the
endpoint with or without a scheme), probed before storage is touched, created on first use.

First use: an absent or empty location gets a new repository (`Repository.init` refuses a
location holding anything, so nothing stored is ever at risk); a missing S3 bucket is created
only when the job allows it (seed bucket_auto_create).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from e3backup.agent import preflight
from e3backup.agent.policy import RunPolicy
from e3backup.agent.wire import JobContext
from e3backup.core.errors import RepositoryNotFound, StorageError, UsageError
from e3backup.repo.repository import Repository
from e3backup.storage.backend import Backend
from e3backup.storage.factory import open_backend, open_s3

log = logging.getLogger(__name__)
AWS_ENDPOINT = "https://s3.amazonaws.com"
Emit = Callable[..., None]  # emit(message_id, level, **params)


class StorageUnreachable(StorageError):
    """The preflight probe failed; `message_id` is the seed's diagnostic."""

    def __init__(self, message: str, message_id: str) -> None:
        super().__init__(message)
        self.message_id = message_id


@dataclass(frozen=True)
class Destination:
    kind: str  # local | s3
    location: str  # a directory, or s3://bucket/prefix
    endpoint: str = ""
    region: str = ""
    auto_create_bucket: bool = False
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        return f"{self.location} at {self.endpoint}" if self.endpoint else self.location


def destination_of(job: JobContext) -> Destination:
    if job.dest_type == "s3":
        if not job.dest_bucket:
            raise UsageError("the job's S3 destination has no bucket")
        prefix = (job.dest_prefix or "").strip("/")
        try:
            endpoint = preflight.normalize_endpoint(job.dest_endpoint or "")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return Destination(
            "s3",
            f"s3://{job.dest_bucket}/{prefix}" if prefix else f"s3://{job.dest_bucket}",
            endpoint=endpoint,
            region=job.dest_region or "",
            auto_create_bucket=job.bucket_auto_create,
            access_key=job.dest_access_key,
            secret_key=job.dest_secret_key,
            password=job.repository_password,
        )
    path = job.dest_local_path or job.repository or ""
    if not path:
        raise UsageError("the job has no destination path")
    return Destination("local", path, password=job.repository_password)


def check_reachable(dest: Destination, emit: Emit, timeout_s: float = 5.0) -> None:
    """Preflight (S3 only): raise StorageUnreachable with the diagnostic, after emitting it."""
    if dest.kind != "s3":
        return
    result = preflight.probe(dest.endpoint or AWS_ENDPOINT, timeout_s)
    if not result.ok:
        emit(result.message_id, "error", **result.params)
        raise StorageUnreachable(
            f"storage preflight failed for {dest.endpoint or AWS_ENDPOINT}: {result.error}",
            result.message_id,
        )


def open_destination_backend(
    dest: Destination, policy: RunPolicy, download_limit_kibps: int | None = None
) -> Backend:
    return open_backend(
        dest.location,
        endpoint=dest.endpoint or None,
        region=dest.region or None,
        access_key=dest.access_key or None,
        secret_key=dest.secret_key or None,
        upload_limit_kibps=policy.bandwidth_limit_kibps,
        download_limit_kibps=download_limit_kibps,
        parallelism=policy.parallelism if dest.kind == "s3" else None,
    )


def open_repository(
    dest: Destination,
    policy: RunPolicy,
    emit: Emit,
    create: bool = True,
    download_limit_kibps: int | None = None,
) -> Repository:
    """Probe, open (or create on first use), and apply the job's compression."""
    check_reachable(dest, emit)
    if not dest.password:
        raise UsageError("the job has no repository password")
    if dest.kind == "s3" and dest.auto_create_bucket and create:
        open_s3(
            dest.location,
            endpoint=dest.endpoint or None,
            region=dest.region or None,
            access_key=dest.access_key or None,
            secret_key=dest.secret_key or None,
        ).ensure_bucket()
    backend = open_destination_backend(dest, policy, download_limit_kibps)
    try:
        repo = Repository.open(backend, dest.password)
    except RepositoryNotFound:
        if not create:
            raise
        repo = Repository.init(backend, dest.password, compression_level=policy.compression_level)
        emit("REPO_INITIALIZED", "info", repository=dest.display)
    repo.codec.compression_level = policy.compression_level  # the job's setting, per run
    log.info("repository %s opened (compression %s)", dest.display, policy.compression)
    emit("REPO_CONNECTED", "info", repository=dest.display)
    return repo
