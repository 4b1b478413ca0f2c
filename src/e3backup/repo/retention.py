"""Retention: which snapshots a policy keeps, as a pure function (restic's `forget` rules).

Snapshots are grouped per source (`source_id`); within a group, newest first:
- `keep_last=n` keeps the n newest snapshots;
- `keep_hourly/daily/weekly/monthly/yearly=n` keeps the newest snapshot of each of the n newest
  hours/days/ISO weeks/months/years that have a snapshot (a negative n means "every one").
A snapshot kept by several rules lists every reason. Buckets use UTC. A policy that keeps nothing
is refused: forgetting every snapshot must be asked for explicitly, one id at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from e3backup.core.errors import UsageError
from e3backup.repo.manifest import Snapshot


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def is_empty(self) -> bool:
        return not any(
            (
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
            )
        )


@dataclass
class Decision:
    snapshot: Snapshot
    keep: bool
    reasons: list[str] = field(default_factory=list)


_BUCKETS: list[tuple[str, str, Callable[[datetime], tuple[int, ...]]]] = [
    ("keep_hourly", "hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("keep_daily", "daily", lambda t: (t.year, t.month, t.day)),
    ("keep_weekly", "weekly", lambda t: tuple(t.isocalendar()[:2])),
    ("keep_monthly", "monthly", lambda t: (t.year, t.month)),
    ("keep_yearly", "yearly", lambda t: (t.year,)),
]


def snapshot_time(snapshot: Snapshot) -> datetime:
    moment = datetime.fromisoformat(snapshot.time)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def apply_policy(
    snapshots: Iterable[Snapshot], policy: RetentionPolicy, source_id: str | None = None
) -> list[Decision]:
    """Keep/forget decisions, newest first. With `source_id`, other sources are left alone
    (not returned at all)."""
    if policy.is_empty():
        raise UsageError("the retention policy keeps nothing: give at least one --keep-* option")
    groups: dict[str, list[Snapshot]] = {}
    for snap in snapshots:
        if source_id is None or snap.source_id == source_id:
            groups.setdefault(snap.source_id, []).append(snap)
    decisions: list[Decision] = []
    for group in groups.values():
        decisions.extend(_decide_group(group, policy))
    decisions.sort(key=lambda d: (snapshot_time(d.snapshot), d.snapshot.id), reverse=True)
    return decisions


def _decide_group(group: list[Snapshot], policy: RetentionPolicy) -> list[Decision]:
    ordered = sorted(group, key=lambda s: (snapshot_time(s), s.id), reverse=True)
    decisions = [Decision(s, keep=False) for s in ordered]
    for position, decision in enumerate(decisions):
        if policy.keep_last < 0 or position < policy.keep_last:
            decision.reasons.append("last")
    for attribute, label, bucket_of in _BUCKETS:
        remaining = getattr(policy, attribute)
        last_bucket: tuple[int, ...] | None = None
        for decision in decisions:
            if remaining == 0:
                break
            bucket = bucket_of(snapshot_time(decision.snapshot))
            if bucket != last_bucket:
                decision.reasons.append(label)
                last_bucket = bucket
                remaining -= 1
    for decision in decisions:
        decision.keep = bool(decision.reasons)
    return decisions
