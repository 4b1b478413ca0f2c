"""RateLimitedBackend: a tiny limit must visibly slow transfers; no limit must not."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from e3backup.core.cancel import CancelToken, run_in_context
from e3backup.core.errors import CancelledError
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


def test_a_throttled_upload_ends_at_a_cancel() -> None:
    """Before the fix the waits ignored cancellation: a cancelled backup sat out the debt of
    every pack in flight (31 s at --limit-upload 2048 on a 64 MiB image)."""
    inner = MemoryBackend()
    backend = RateLimitedBackend(inner, upload_kibps=1)  # a 64 KiB put waits about a minute
    token = CancelToken()
    entered = threading.Event()

    def upload() -> None:
        entered.set()
        backend.put("pack", b"x" * 64 * KIB)

    with token.bound(), ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_in_context(upload))
        assert entered.wait(60)
        token.cancel("cancelled by the test")
        with pytest.raises(CancelledError, match="by the test"):
            future.result()
    assert list(inner.list()) == []  # never sent


def test_a_cancelled_wait_gives_its_tokens_back() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        if not slept:
            slept.append(seconds)
            raise CancelledError("cancelled while waiting")
        slept.append(seconds)

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(CancelledError):
        bucket.consume(50_000)  # 50 s of debt for bytes never sent
    bucket.consume(100)  # the burst is whole again: no second wait
    assert slept == [pytest.approx(49.9)]
