"""RetryBackend on a MemoryBackend with injected faults; sleeps are recorded, not slept."""

from __future__ import annotations

import logging

import pytest

from e3backup.core.cancel import CancelToken
from e3backup.core.errors import (
    CancelledError,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
)
from e3backup.storage.backend import Backend, ObjectInfo
from e3backup.storage.faulty import FaultyBackend
from e3backup.storage.memory import MemoryBackend
from e3backup.storage.retry import RetryBackend, RetryPolicy


def retrying(inner: Backend, **policy: float) -> tuple[RetryBackend, list[float]]:
    slept: list[float] = []
    backend = RetryBackend(inner, RetryPolicy(**policy), sleep=slept.append, seed=1)  # type: ignore[arg-type]
    return backend, slept


@pytest.mark.parametrize("method", ["put", "get", "stat", "delete", "list"])
def test_succeeds_after_transient_failures(method: str) -> None:
    memory = MemoryBackend()
    memory.put("k", b"value")
    faulty = FaultyBackend(memory, transient_failures={method: 3})
    backend, slept = retrying(faulty, max_attempts=5)
    calls = {
        "put": lambda: backend.put("k", b"value"),
        "get": lambda: backend.get("k"),
        "stat": lambda: backend.stat("k"),
        "delete": lambda: backend.delete("k"),
        "list": lambda: list(backend.list()),
    }
    result = calls[method]()
    assert faulty.calls[method] == 4
    assert len(slept) == 3
    expected = {"get": b"value", "stat": ObjectInfo("k", 5), "list": [ObjectInfo("k", 5)]}
    assert result == expected.get(method)


def test_persistent_transient_failure_surfaces_the_last_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faulty = FaultyBackend(MemoryBackend(), transient_failures={"put": 100})
    backend, slept = retrying(faulty, max_attempts=4)
    with caplog.at_level(logging.WARNING), pytest.raises(TransientStorageError, match="put"):
        backend.put("k", b"v")
    assert faulty.calls["put"] == 4
    assert len(slept) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert "retrying" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("error_setup", "error"),
    [({"fail_calls": {"get": {1}}}, StorageError), ({}, ObjectNotFound)],
    ids=["storage-error", "not-found"],
)
def test_non_transient_errors_are_not_retried(error_setup: dict[str, object], error: type) -> None:
    faulty = FaultyBackend(MemoryBackend(), **error_setup)  # type: ignore[arg-type]
    backend, slept = retrying(faulty)
    with pytest.raises(error):
        backend.get("missing")
    assert faulty.calls["get"] == 1
    assert slept == []


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    faulty = FaultyBackend(MemoryBackend(), transient_failures={"stat": 100})
    backend, slept = retrying(
        faulty, max_attempts=8, base_delay_s=1.0, max_delay_s=10.0, max_elapsed_s=1e9
    )
    with pytest.raises(TransientStorageError):
        backend.stat("k")
    nominal = [1, 2, 4, 8, 10, 10, 10]
    assert len(slept) == len(nominal)
    for delay, cap in zip(slept, nominal, strict=True):
        assert cap * 0.5 <= delay <= cap


def test_gives_up_when_the_time_budget_is_spent() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    faulty = FaultyBackend(MemoryBackend(), transient_failures={"stat": 100})
    policy = RetryPolicy(max_attempts=1000, base_delay_s=1.0, max_delay_s=4.0, max_elapsed_s=20.0)
    backend = RetryBackend(faulty, policy, sleep=sleep, clock=lambda: now[0], seed=3)
    with pytest.raises(TransientStorageError):
        backend.stat("k")
    assert now[0] <= 20.0
    assert faulty.calls["stat"] < 20


class FlakyList:
    """A listing that breaks after yielding some items, once."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.broken = False

    def list(self, prefix: str = "") -> object:
        for index, info in enumerate(sorted(self.inner.list(prefix), key=lambda i: i.key)):
            if index == 2 and not self.broken:
                self.broken = True
                raise TransientStorageError("connection reset while listing")
            yield info


def test_list_restarted_midway_yields_each_key_once() -> None:
    memory = MemoryBackend()
    for index in range(5):
        memory.put(f"packs/{index}", b"x" * index)
    flaky = FlakyList(memory)
    backend = RetryBackend(memory, sleep=lambda _s: None)
    backend.inner = flaky  # type: ignore[assignment]
    keys = [info.key for info in backend.list("packs/")]
    assert flaky.broken
    assert sorted(keys) == [f"packs/{i}" for i in range(5)]
    assert len(keys) == len(set(keys))


def test_a_cancel_ends_the_backoff_wait() -> None:
    """The real sleep (no test double): a cancelled token bound by the engine stops retrying
    at once instead of sleeping out a backoff of up to 30 s per attempt."""
    faulty = FaultyBackend(MemoryBackend(), transient_failures={"put": 100})
    backend = RetryBackend(faulty, RetryPolicy(max_attempts=2, base_delay_s=20, max_delay_s=20))
    token = CancelToken()
    token.cancel("cancelled by the test")
    with token.bound(), pytest.raises(CancelledError, match="by the test"):
        backend.put("k", b"v")
    assert faulty.calls["put"] == 1
