"""Operations: /healthz, Prometheus /metrics (latency by route template, DB gauges, optional
token), JSON log lines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from e3backup.server.app import create_app
from e3backup.server.db.base import utcnow
from e3backup.server.db.engine import session_scope
from e3backup.server.logging_json import JsonFormatter
from e3backup.server.settings import ServerSettings
from fixtures.server_db import make_job, make_run, make_tenant_agent


def open_client(tmp_path: Path, **settings: object) -> TestClient:
    config = ServerSettings(data_dir=tmp_path, background_enabled=False, **settings)  # type: ignore[arg-type]
    return TestClient(create_app(config))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with open_client(tmp_path) as test_client:
        yield test_client


def metric_lines(client: TestClient, prefix: str) -> list[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return [line for line in response.text.splitlines() if line.startswith(prefix)]


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_latency_is_labelled_by_route_template(client: TestClient) -> None:
    for run_id in (1, 2, 3):
        assert client.get(f"/api/v1/runs/{run_id}").status_code == 401
    client.get("/no/such/path")
    lines = metric_lines(client, "e3backup_http_request_duration_seconds_count")
    runs = [line for line in lines if 'route="/api/v1/runs/{run_id}"' in line]
    assert len(runs) == 1 and runs[0].endswith(" 3.0") and 'status="401"' in runs[0]
    assert any('route="unmatched"' in line for line in lines)
    assert not any("/api/v1/runs/1" in line for line in lines)


def test_database_gauges(client: TestClient) -> None:
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    now = utcnow()
    with session_scope(ctx.sessions) as db:
        _, online = make_tenant_agent(db, last_seen_at=now)
        _, offline = make_tenant_agent(db, last_seen_at=now - timedelta(hours=1), name="far")
        job = make_job(db, online)
        make_run(db, job, status="success", finished_at=now - timedelta(seconds=3600))
        make_run(db, job, status="failed", finished_at=now - timedelta(seconds=60))
        never = make_job(db, offline, name="never succeeded")
        make_run(db, never, status="running")
        job_id, never_id = job.id, never.id
    runs = metric_lines(client, "e3backup_runs{")
    assert sorted(runs) == [
        'e3backup_runs{status="failed"} 1.0',
        'e3backup_runs{status="running"} 1.0',
        'e3backup_runs{status="success"} 1.0',
    ]
    assert metric_lines(client, "e3backup_agents{") == [
        'e3backup_agents{state="online"} 1.0',
        'e3backup_agents{state="total"} 2.0',
    ]
    [since] = metric_lines(client, "e3backup_job_seconds_since_last_success{")
    assert f'job_id="{job_id}"' in since
    assert 3599 <= float(since.rsplit(" ", 1)[1]) < 3700
    assert f'job_id="{never_id}"' not in since


def test_metrics_token(tmp_path: Path) -> None:
    with open_client(tmp_path, metrics_token="scrape-me") as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and "e3backup_runs" in ok.text


def test_json_log_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "e3backup.server.x",
            logging.ERROR,
            __file__,
            1,
            "job %s: %s",
            (7, 'a "quoted"\nline'),
            sys.exc_info(),
        )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["logger"] == "e3backup.server.x"
    assert entry["message"] == 'job 7: a "quoted"\nline'
    assert "ValueError: boom" in entry["exception"]
