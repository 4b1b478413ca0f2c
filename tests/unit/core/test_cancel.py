"""CancelToken binding: storage-level waits (`cancel.sleep`) end when the bound token is
cancelled, in the binding thread and in pool threads reached through `run_in_context`."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from e3backup.core import cancel
from e3backup.core.cancel import CancelToken, run_in_context
from e3backup.core.errors import CancelledError

FOREVER_S = 3600.0  # a wait the test would never survive if cancellation failed


def test_sleep_without_a_bound_token_just_sleeps() -> None:
    cancel.sleep(0.001)


def test_sleep_raises_at_once_when_the_bound_token_is_cancelled() -> None:
    token = CancelToken()
    token.cancel("stop")
    with token.bound(), pytest.raises(CancelledError, match="stop"):
        cancel.sleep(FOREVER_S)


def test_binding_ends_with_the_block() -> None:
    token = CancelToken()
    token.cancel()
    with token.bound():
        pass
    cancel.sleep(0.001)  # no longer bound: not cancelled


def test_a_pool_thread_sleeping_under_run_in_context_is_woken_by_cancel() -> None:
    token = CancelToken()
    started = threading.Event()

    def wait_forever() -> None:
        started.set()
        cancel.sleep(FOREVER_S)

    with token.bound(), ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(run_in_context(wait_forever))
        plain = pool.submit(cancel.sleep, 0.001)  # no context: unaffected
        assert started.wait(FOREVER_S)
        token.cancel("cancelled by the test")
        with pytest.raises(CancelledError, match="by the test"):
            waiting.result()
        assert plain.result() is None


def test_one_wrapped_function_may_run_in_several_threads_at_once() -> None:
    token = CancelToken()
    barrier = threading.Barrier(3)

    def meet() -> bool:
        barrier.wait()  # all three inside the (copied) context at the same time
        cancel.sleep(0.001)
        return True

    with token.bound():
        wrapped = run_in_context(meet)
    with ThreadPoolExecutor(3) as pool:
        assert all(f.result() for f in [pool.submit(wrapped) for _ in range(3)])


def test_the_first_reason_is_kept() -> None:
    token = CancelToken()
    token.cancel("cancelled by signal SIGINT")
    token.cancel("backup stopped after an error")
    with pytest.raises(CancelledError, match="SIGINT"):
        token.raise_if_cancelled()
