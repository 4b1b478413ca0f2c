"""Retention policy: table-driven, like restic's `forget` tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from e3backup.core.errors import UsageError
from e3backup.repo.manifest import Snapshot
from e3backup.repo.retention import RetentionPolicy, apply_policy

# A realistic history of one source (UTC): several per day, gaps, a year boundary.
TIMES = [
    "2023-12-30T10:00:00",
    "2023-12-31T23:30:00",
    "2024-01-01T01:00:00",
    "2024-01-01T01:30:00",
    "2024-01-01T09:00:00",
    "2024-01-02T09:00:00",
    "2024-01-08T09:00:00",
    "2024-01-15T09:00:00",
    "2024-02-01T09:00:00",
    "2024-02-01T09:10:00",
    "2024-03-15T12:00:00",
]


def _snap(time: str, source: str = "src-a") -> Snapshot:
    sid = f"{source}-{time}"
    iso = datetime.fromisoformat(time).replace(tzinfo=UTC).isoformat()
    return Snapshot(sid, iso, "host", "image", source, source, "Full", None, [])


HISTORY = [_snap(t) for t in TIMES]


def _kept(policy: RetentionPolicy) -> list[str]:
    return sorted(d.snapshot.time[:16] for d in apply_policy(HISTORY, policy) if d.keep)


CASES = [
    (RetentionPolicy(keep_last=1), ["2024-03-15T12:00"]),
    (RetentionPolicy(keep_last=3), ["2024-02-01T09:00", "2024-02-01T09:10", "2024-03-15T12:00"]),
    (RetentionPolicy(keep_last=100), [t[:16] for t in TIMES]),
    (RetentionPolicy(keep_last=-1), [t[:16] for t in TIMES]),
    (
        RetentionPolicy(keep_daily=4),
        ["2024-01-08T09:00", "2024-01-15T09:00", "2024-02-01T09:10", "2024-03-15T12:00"],
    ),
    (
        RetentionPolicy(keep_hourly=3),
        ["2024-02-01T09:10", "2024-03-15T12:00", "2024-01-15T09:00"],
    ),
    (
        RetentionPolicy(keep_weekly=3),  # ISO weeks: 2024-W11, W05, W03
        ["2024-01-15T09:00", "2024-02-01T09:10", "2024-03-15T12:00"],
    ),
    (
        RetentionPolicy(keep_monthly=3),
        ["2024-01-15T09:00", "2024-02-01T09:10", "2024-03-15T12:00"],
    ),
    (RetentionPolicy(keep_yearly=5), ["2023-12-31T23:30", "2024-03-15T12:00"]),
    (
        RetentionPolicy(keep_last=1, keep_monthly=2, keep_yearly=2),
        ["2023-12-31T23:30", "2024-02-01T09:10", "2024-03-15T12:00"],
    ),
    (
        RetentionPolicy(keep_daily=-1),
        [
            "2023-12-30T10:00",
            "2023-12-31T23:30",
            "2024-01-01T09:00",
            "2024-01-02T09:00",
            "2024-01-08T09:00",
            "2024-01-15T09:00",
            "2024-02-01T09:10",
            "2024-03-15T12:00",
        ],
    ),
]


@pytest.mark.parametrize(("policy", "expected"), CASES)
def test_policy_table(policy: RetentionPolicy, expected: list[str]) -> None:
    assert _kept(policy) == sorted(expected)


def test_reasons_list_every_rule() -> None:
    decisions = apply_policy(HISTORY, RetentionPolicy(keep_last=1, keep_daily=1, keep_yearly=1))
    newest = decisions[0]
    assert newest.snapshot.time.startswith("2024-03-15")
    assert newest.reasons == ["last", "daily", "yearly"]
    assert all(not d.reasons for d in decisions[1:] if not d.keep)


def test_groups_per_source_and_source_filter() -> None:
    other = [_snap("2024-03-16T00:00:00", "src-b"), _snap("2024-03-17T00:00:00", "src-b")]
    decisions = apply_policy(HISTORY + other, RetentionPolicy(keep_last=1))
    kept = {d.snapshot.source_id: d.snapshot.time[:10] for d in decisions if d.keep}
    assert kept == {"src-a": "2024-03-15", "src-b": "2024-03-17"}
    only_b = apply_policy(HISTORY + other, RetentionPolicy(keep_last=1), source_id="src-b")
    assert [(d.snapshot.source_id, d.keep) for d in only_b] == [("src-b", True), ("src-b", False)]


def test_empty_policy_is_refused() -> None:
    with pytest.raises(UsageError):
        apply_policy(HISTORY, RetentionPolicy())


def test_newest_first_and_timezones_normalised() -> None:
    shifted = Snapshot(
        "x", "2024-03-15T14:00:00+02:00", "h", "image", "src-a", "a", "Full", None, []
    )
    decisions = apply_policy([*HISTORY, shifted], RetentionPolicy(keep_hourly=1))
    # 14:00+02:00 is 12:00 UTC: the same hour as the newest snapshot, which it ties with.
    assert [d.keep for d in decisions].count(True) == 1
    assert decisions[0].snapshot.time >= decisions[-1].snapshot.time
