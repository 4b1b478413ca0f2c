"""An S3 (or S3-compatible) bucket, optionally under a key prefix.

botocore's own retries are switched off: `RetryBackend` owns retrying, so an attempt count or a
backoff lives in one place and every retry is logged. This backend only classifies failures:
throttling, 5xx, timeouts and dropped connections become `TransientStorageError`; a missing key
becomes `ObjectNotFound`; rejected credentials, a missing bucket or an endpoint that was never
reachable become a plain `StorageError` whose message names the endpoint and bucket.

S3 clamps a range that runs past the end of an object and answers 416 to one that starts past it,
so `get` checks `Content-Range` and the body length against what it asked for: a short read is an
error, never data.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from e3backup.core.errors import (
    ObjectNotFound,
    RangeOutsideObject,
    StorageError,
    TransientStorageError,
)
from e3backup.storage.backend import BackendProperties, ObjectInfo, check_key

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD_BYTES = 64 * MIB
DEFAULT_PART_SIZE_BYTES = 16 * MIB
MIN_PART_SIZE_BYTES = 5 * MIB  # S3's minimum for every part but the last
DEFAULT_PARALLELISM = 8

_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "403",
    "Forbidden",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
}


_SESSION_LOCK = threading.Lock()
_SESSION: boto3.session.Session | None = None


def _session() -> boto3.session.Session:
    """One boto3 session per process: building one loads service models (~0.3 s)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = boto3.session.Session()
    return _SESSION


def parse_s3_url(url: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' → ('bucket', 'some/prefix'); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r} (expected s3://bucket/prefix)")
    if prefix:
        check_key(prefix)
    return bucket, prefix


class S3Backend:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        parallelism: int = DEFAULT_PARALLELISM,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES,
        part_size_bytes: int = DEFAULT_PART_SIZE_BYTES,
    ) -> None:
        if part_size_bytes < MIN_PART_SIZE_BYTES:
            raise ValueError(f"part size must be at least {MIN_PART_SIZE_BYTES} bytes")
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._parallelism = parallelism
        self._multipart_threshold = max(multipart_threshold_bytes, part_size_bytes)
        self._part_size = part_size_bytes
        # Path-style addressing for custom endpoints: most S3-compatible servers (SeaweedFS,
        # MinIO, rclone) have no wildcard DNS for virtual-hosted buckets.
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # Room for a second pool of workers (restore's page fetchers, check's listing)
            # beside the main one: an overflowing pool drops connections with a warning.
            max_pool_connections=2 * parallelism + 2,
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # Newer botocore adds CRC checksums by default, which several S3-compatible servers
            # reject; content is verified above this layer anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        with _SESSION_LOCK:  # a boto3 session is not thread-safe; its clients are
            self._client: Any = _session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=session_token,
                config=config,
            )
        self.endpoint = cast(str, self._client.meta.endpoint_url)
        # Until one request has succeeded, a refused connection means a wrong endpoint, not a
        # blip: report it at once instead of retrying for minutes.
        self._reached = False

    # --- protocol ------------------------------------------------------------------------------

    def properties(self) -> BackendProperties:
        location = f"s3://{self.bucket}/{self._prefix} at {self.endpoint}"
        return BackendProperties(location=location, parallelism=self._parallelism)

    def put(self, key: str, data: bytes | memoryview) -> None:
        name = self._name(key)
        view = memoryview(data).cast("B")
        with self._errors("put", key):
            if len(view) < self._multipart_threshold:
                self._client.put_object(Bucket=self.bucket, Key=name, Body=_body(view))
            else:
                self._put_multipart(name, view)
        self._reached = True

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        name = self._name(key)
        if offset < 0 or (length is not None and length < 0):
            raise StorageError(f"invalid range {offset}+{length} for {key}")
        if length == 0 or (offset > 0 and length is None):
            # S3 cannot express an empty range, and "bytes=N-" at the end is a 416: decide
            # from the size instead.
            size = self.stat(key).size_bytes
            if offset > size:
                raise RangeOutsideObject(f"range {offset}+{length} outside {key} ({size} bytes)")
            if length == 0 or offset == size:
                return b""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if length is not None:
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        with self._errors("get", key, offset=offset, length=length):
            response = self._client.get_object(**args)
            body = cast(bytes, response["Body"].read())
        self._reached = True
        _check_range(key, response, body, offset, length)
        return body

    def stat(self, key: str) -> ObjectInfo:
        name = self._name(key)
        with self._errors("stat", key):
            response = self._client.head_object(Bucket=self.bucket, Key=name)
        self._reached = True
        return ObjectInfo(key, int(response["ContentLength"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self._prefix + prefix)
        strip = len(self._prefix)
        with self._errors("list", prefix or "/"):
            for page in pages:
                self._reached = True
                for item in page.get("Contents", ()):
                    key = item["Key"][strip:]
                    # Some servers list "directory" markers ('a/'); they are never objects here.
                    if key and not key.endswith("/"):
                        yield ObjectInfo(key, int(item["Size"]))

    def delete(self, key: str) -> None:
        name = self._name(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=name)
        self._reached = True

    def close(self) -> None:
        self._client.close()

    # --- beyond the protocol -------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (for `repo init`; never called implicitly)."""
        with self._errors("create bucket", self.bucket, bucket_may_be_missing=True):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND_CODES | {"NoSuchBucket"}:
                    raise
            region = self._client.meta.region_name
            args: dict[str, Any] = {"Bucket": self.bucket}
            if region and region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                self._client.create_bucket(**args)
            except ClientError as exc:
                if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise
        self._reached = True

    # --- internals -----------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _put_multipart(self, name: str, view: memoryview) -> None:
        """Upload in parts; abort on any failure so no invisible parts are left to pay for."""
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=name)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(view), self._part_size), start=1):
                part = bytes(view[start : start + self._part_size])
                response = self._client.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=part
                )
                parts.append({"ETag": response["ETag"], "PartNumber": number})
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id
                )
            except (BotoCoreError, ClientError) as exc:
                log.warning("could not abort multipart upload of %s: %s", name, exc)
            raise

    @contextmanager
    def _errors(
        self,
        operation: str,
        key: str,
        *,
        offset: int = 0,
        length: int | None = None,
        bucket_may_be_missing: bool = False,
    ) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            self._reached = True
            self._raise_client_error(exc, operation, key, offset, length, bucket_may_be_missing)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageError(
                f"no usable S3 credentials for bucket {self.bucket!r} at {self.endpoint}: {exc} "
                "(give an access key and secret, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            ) from exc
        except EndpointConnectionError as exc:
            if not self._reached:
                raise StorageError(
                    f"cannot reach S3 endpoint {self.endpoint} (bucket {self.bucket!r}): {exc}"
                ) from exc
            raise TransientStorageError(f"S3 {operation} {key}: {exc}") from exc
        except (ConnectionError, BotoCoreError) as exc:
            # Timeouts, resets, truncated bodies: all worth another attempt.
            raise TransientStorageError(f"S3 {operation} {key} at {self.endpoint}: {exc}") from exc

    def _raise_client_error(
        self,
        exc: ClientError,
        operation: str,
        key: str,
        offset: int,
        length: int | None,
        bucket_may_be_missing: bool,
    ) -> NoReturn:
        code = _code(exc)
        status = _status(exc)
        where = f"bucket {self.bucket!r} at {self.endpoint}"
        if code == "NoSuchBucket" and not bucket_may_be_missing:
            raise StorageError(f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}")
        if code in _NOT_FOUND_CODES:
            raise ObjectNotFound(f"object not found: {key}") from exc
        if code == "InvalidRange" or status == 416:
            raise RangeOutsideObject(f"range {offset}+{length} outside {key}") from exc
        if code in _AUTH_CODES or status in (401, 403):
            raise StorageError(
                f"S3 refused access to {where} ({code}): check the access key, secret key and "
                "the permissions of that key"
            ) from exc
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            raise TransientStorageError(f"S3 {operation} {key} in {where}: {code}") from exc
        raise StorageError(f"S3 {operation} {key} in {where} failed: {exc}") from exc


def _body(view: memoryview) -> bytes | bytearray:
    """The bytes behind `view` without a copy when it spans a whole bytes/bytearray object (a
    sealed 16 MiB pack is a bytearray: copying it cost 16 MiB of RSS per upload in flight)."""
    owner = view.obj
    if isinstance(owner, (bytes, bytearray)) and len(owner) == len(view) and view.contiguous:
        return owner
    return bytes(view)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _check_range(key: str, response: Any, body: bytes, offset: int, length: int | None) -> None:
    """Refuse a clamped range or a short body: the caller asked for exact bytes."""
    declared = int(response.get("ContentLength", len(body)))
    if declared != len(body):
        raise TransientStorageError(f"short read of {key}: {len(body)} of {declared} bytes")
    content_range = response.get("ContentRange")
    if length is None:
        if offset and content_range is None:
            raise StorageError(f"server ignored the range request for {key}")
        return
    if len(body) != length:
        total = content_range.rpartition("/")[2] if content_range else "?"
        raise RangeOutsideObject(f"range {offset}+{length} outside {key} ({total} bytes)")
    if content_range is not None and not content_range.startswith(
        f"bytes {offset}-{offset + length - 1}/"
    ):
        raise StorageError(f"server answered range {content_range!r} for {key}, not {offset}+")
