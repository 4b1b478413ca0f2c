"""S3 behaviour beyond the shared contract, against a real SeaweedFS server."""

from __future__ import annotations

import itertools
import os
import socket
import time

import pytest

from e3backup.core.errors import ObjectNotFound, StorageError, TransientStorageError
from e3backup.storage.factory import open_backend
from e3backup.storage.retry import RetryBackend
from e3backup.storage.s3 import MIB, S3Backend, parse_s3_url
from fixtures.seaweed import SeaweedServer

_buckets = itertools.count()


def make(server: SeaweedServer, bucket: str = "s3-tests", **kwargs: object) -> S3Backend:
    options: dict[str, object] = {
        "endpoint_url": server.endpoint,
        "region": "us-east-1",
        "access_key": server.access_key,
        "secret_key": server.secret_key,
    }
    options.update(kwargs)
    return S3Backend(bucket, f"p{next(_buckets)}", **options)  # type: ignore[arg-type]


@pytest.fixture
def s3(seaweed_server: SeaweedServer) -> S3Backend:
    backend = make(seaweed_server)
    backend.ensure_bucket()
    return backend


def test_multipart_put_round_trip(seaweed_server: SeaweedServer) -> None:
    backend = make(seaweed_server, multipart_threshold_bytes=6 * MIB, part_size_bytes=5 * MIB)
    backend.ensure_bucket()
    data = os.urandom(13 * MIB + 17)  # three parts, the last one short
    backend.put("packs/ab/big", memoryview(data))
    assert backend.stat("packs/ab/big").size_bytes == len(data)
    assert backend.get("packs/ab/big") == data
    assert backend.get("packs/ab/big", 5 * MIB - 3, 10) == data[5 * MIB - 3 : 5 * MIB + 7]
    uploads = seaweed_server.client().list_multipart_uploads(Bucket="s3-tests")  # type: ignore[attr-defined]
    assert not uploads.get("Uploads")


def test_ranged_get_past_end_is_an_error_not_a_short_read(s3: S3Backend) -> None:
    s3.put("r", b"0123456789")
    with pytest.raises(StorageError, match="outside") as excinfo:
        s3.get("r", 8, 5)
    assert not isinstance(excinfo.value, (ObjectNotFound, TransientStorageError))
    with pytest.raises(StorageError):
        s3.get("r", 11)
    assert s3.get("r", 10) == b""
    assert s3.get("r", 8, 2) == b"89"


def test_prefix_isolates_backends(seaweed_server: SeaweedServer) -> None:
    first, second = make(seaweed_server), make(seaweed_server)
    first.ensure_bucket()
    first.put("config", b"one")
    second.put("config", b"two")
    assert [i.key for i in first.list()] == ["config"]
    assert first.get("config") == b"one"
    assert "s3://s3-tests/p" in first.properties().location


def test_listing_is_paginated(s3: S3Backend) -> None:
    for index in range(1005):  # one more page than S3's 1,000-key default
        s3.put(f"index/{index:05d}", b"")
    assert len({i.key for i in s3.list("index/")}) == 1005


def test_wrong_secret_key_is_a_clear_permanent_error(seaweed_server: SeaweedServer) -> None:
    backend = make(seaweed_server, secret_key="not-the-secret")
    wrapped = open_backend(
        "s3://s3-tests/x",
        endpoint=seaweed_server.endpoint,
        access_key=seaweed_server.access_key,
        secret_key="not-the-secret",
    )
    for candidate in (backend, wrapped):
        started = time.monotonic()
        with pytest.raises(StorageError) as excinfo:
            candidate.put("k", b"v")
        assert time.monotonic() - started < 5
        assert not isinstance(excinfo.value, TransientStorageError)
        message = str(excinfo.value)
        assert seaweed_server.endpoint in message
        assert "s3-tests" in message
        assert "not-the-secret" not in message


def test_missing_bucket_is_a_clear_error(seaweed_server: SeaweedServer) -> None:
    """Reads and listings name the bucket. (SeaweedFS creates a bucket on a first put.)"""
    backend = make(seaweed_server, bucket="no-such-bucket-here")
    with pytest.raises(StorageError, match=r"'no-such-bucket-here' does not exist"):
        backend.get("config")
    with pytest.raises(StorageError, match="does not exist"):
        list(backend.list())


def test_ensure_bucket_creates_once(seaweed_server: SeaweedServer) -> None:
    backend = make(seaweed_server, bucket=f"fresh-{os.getpid()}")
    backend.ensure_bucket()
    backend.ensure_bucket()
    backend.put("k", b"v")
    assert backend.get("k") == b"v"


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def test_unreachable_endpoint_is_a_clear_error_within_seconds() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    backend = open_backend("s3://bucket/prefix", endpoint=endpoint, access_key="a", secret_key="b")
    assert isinstance(backend, RetryBackend)
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach S3 endpoint") as excinfo:
        backend.get("config")
    assert time.monotonic() - started < 5
    assert endpoint in str(excinfo.value)
    assert not isinstance(excinfo.value, TransientStorageError)


def test_endpoint_lost_after_contact_is_transient(seaweed_server: SeaweedServer) -> None:
    """Once the endpoint answered, a refused connection is a blip worth retrying."""
    backend = make(seaweed_server)
    backend.ensure_bucket()
    backend.put("k", b"v")
    lost = make(seaweed_server, endpoint_url=f"http://127.0.0.1:{closed_port()}")
    lost._reached = True  # as if it had answered before
    with pytest.raises(TransientStorageError):
        lost.get("k")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/a/b/", ("bucket", "a/b")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://b/../x", "http://b/x"])
def test_parse_s3_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_url(url)
