"""RateLimitedBackend: a tiny limit must visibly slow transfers; no limit must not."""

from __future__ import annotations

import threading
import time

import pytest

from e3backup.storage.memory import MemoryBackend
from e3backup.storage.ratelimit import RateLimitedBackend, TokenBucket

KIB = 1024


def test_upload_limit_caps_throughput() -> None:
    backend = RateLimitedBackend(MemoryBackend(), upload_kibps=512)
    started = time.monotonic()
    for index in range(4):
        backend.put(f"k{index}", b"x" * (64 * KIB))
    # 256 KiB at 512 KiB/s is 0.5 s less the 0.1 s burst; only a lower bound is asserted.
    assert time.monotonic() - started >= 0.35


def test_download_limit_caps_throughput_and_spares_uploads() -> None:
    backend = RateLimitedBackend(MemoryBackend(), download_kibps=512)
    started = time.monotonic()
    backend.put("k", b"x" * (256 * KIB))
    assert time.monotonic() - started < 0.3  # uploads are not limited here
    started = time.monotonic()
    assert len(backend.get("k")) == 256 * KIB
    assert time.monotonic() - started >= 0.35


def test_limit_is_shared_between_threads() -> None:
    backend = RateLimitedBackend(MemoryBackend(), upload_kibps=1024)

    def work(thread: int) -> None:
        for index in range(4):
            backend.put(f"t{thread}/{index}", b"x" * (32 * KIB))

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 512 KiB in total at 1024 KiB/s: at least ~0.4 s whatever the thread count.
    assert time.monotonic() - started >= 0.35
    assert len(list(backend.list())) == 16


def test_token_bucket_debt_is_paid_in_order() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    bucket.consume(100)  # the 0.1 s burst
    assert slept == []
    bucket.consume(500)
    assert slept == [pytest.approx(0.5)]


@pytest.mark.parametrize("rate", [0, -1])
def test_non_positive_rate_is_rejected(rate: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate)
