"""Progress throttling: never more often than the interval, and never a stale last word."""

from __future__ import annotations

import threading

from e3backup.engines.progress import Progress, ProgressTracker, TrailingThrottle

WAIT_S = 10.0  # upper bound for a deferred call to arrive; never a measured duration


def test_calls_inside_the_interval_are_deferred_not_dropped() -> None:
    fired: list[int] = []
    arrived = threading.Event()
    state = {"value": 0}

    def fire() -> None:
        fired.append(state["value"])
        if state["value"] == 3:
            arrived.set()

    throttle = TrailingThrottle(0.2, fire)
    for value in (1, 2, 3):
        state["value"] = value
        throttle()
    assert fired[0] == 1  # the first call goes out at once
    assert arrived.wait(WAIT_S), fired  # the newest one follows without any further call
    assert fired == [1, 3]


def test_force_fires_at_once_and_drops_the_deferred_call() -> None:
    fired: list[str] = []
    throttle = TrailingThrottle(0.2, lambda: fired.append("x"))
    throttle()
    throttle()  # deferred
    throttle(force=True)
    assert fired == ["x", "x"]
    done = threading.Event()
    threading.Timer(0.5, done.set).start()
    done.wait(WAIT_S)
    assert fired == ["x", "x"]  # the deferred call was superseded by the forced one


def test_tracker_reports_the_newest_counters_when_work_goes_quiet() -> None:
    """A backup whose reads finish and whose uploads then take long must not leave the last
    report at the first value of the interval (the live page showed 0.2 % for a whole upload)."""
    seen: list[Progress] = []
    arrived = threading.Event()

    def callback(p: Progress) -> None:
        seen.append(p)
        if p.bytes_processed == 1000:
            arrived.set()

    tracker = ProgressTracker(1000, callback, interval_s=0.2)
    for _ in range(10):
        tracker.add(processed=100)
    assert seen[0].bytes_processed == 100
    assert arrived.wait(WAIT_S), [p.bytes_processed for p in seen]
    assert [p.bytes_processed for p in seen] == sorted(p.bytes_processed for p in seen)
