"""Prometheus metrics: an API latency histogram (pure ASGI middleware, labelled by route
template, not by raw path) and gauges read from the database at scrape time (runs by status,
agents online, seconds since each job's last successful backup).

Each app owns its registry, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent, Job, Run

LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def new_registry() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry(auto_describe=True)
    latency = Histogram(
        "e3backup_http_request_duration_seconds",
        "API request latency by route template, method and status code.",
        ("method", "route", "status"),
        buckets=LATENCY_BUCKETS_S,
        registry=registry,
    )
    return registry, latency


class LatencyMiddleware:
    """Times every HTTP request; the route label is the matched template (/api/v1/runs/{run_id})
    so the label set stays small whatever ids callers send."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], template, str(status["code"])).observe(
                time.perf_counter() - started
            )


class DatabaseCollector(Collector):
    """Gauges computed from the database when Prometheus scrapes."""

    def __init__(self, sessions: sessionmaker[Session], online_window_s: float) -> None:
        self.sessions = sessions
        self.online_window_s = online_window_s

    def collect(self) -> Iterable[Metric]:
        now = utcnow()
        with self.sessions() as db:
            by_status = db.execute(select(Run.status, func.count()).group_by(Run.status)).all()
            online = db.scalar(
                select(func.count())
                .select_from(Agent)
                .where(
                    Agent.status == "enabled",
                    Agent.last_seen_at >= now - timedelta(seconds=self.online_window_s),
                )
            )
            agents_total = db.scalar(select(func.count()).select_from(Agent))
            last_success: list[Any] = list(
                db.execute(
                    select(Job.id, Job.tenant_id, func.max(Run.finished_at))
                    .join(Run, Run.job_id == Job.id)
                    .where(Job.deleted_at.is_(None), Run.run_type == "backup")
                    .where(Run.status.in_(("success", "warning")))
                    .group_by(Job.id, Job.tenant_id)
                ).all()
            )
        runs = GaugeMetricFamily("e3backup_runs", "Runs by status.", labels=["status"])
        for status, count in by_status:
            runs.add_metric([status], count)
        yield runs
        agents = GaugeMetricFamily("e3backup_agents", "Agents by state.", labels=["state"])
        agents.add_metric(["online"], online or 0)
        agents.add_metric(["total"], agents_total or 0)
        yield agents
        since = GaugeMetricFamily(
            "e3backup_job_seconds_since_last_success",
            "Seconds since the job's last successful backup run finished.",
            labels=["job_id", "tenant_id"],
        )
        for job_id, tenant_id, finished_at in last_success:
            if finished_at is not None:
                if finished_at.tzinfo is None:  # an aggregate bypasses the column type
                    finished_at = finished_at.replace(tzinfo=now.tzinfo)
                age = (now - finished_at).total_seconds()
                since.add_metric([str(job_id), str(tenant_id)], max(age, 0.0))
        yield since
