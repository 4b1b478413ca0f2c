"""Control-server load: N simulated agents against ONE `e3backup server` process.

Each agent does what the seed's agent does: every 5 s `next_run` + `poll_commands`; while it
has a run "running" (a fraction of agents), every 2 s `update_run` + `push_events`. The load
comes from several client processes (asyncio + httpx) so the client is not the bottleneck on
its own. N is ramped; a step passes with p99 < 100 ms and zero errors. Per-route server time
comes from the server's own /metrics histogram.

    .venv/bin/python bench/server_load.py --db sqlite --db postgresql --steps 250,500,1000,2000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_common import write_section  # noqa: E402
from e3backup.server.db.base import utcnow  # noqa: E402
from e3backup.server.db.engine import make_engine, make_session_factory, session_scope  # noqa: E402
from e3backup.server.db.migrate import upgrade  # noqa: E402
from e3backup.server.db.models import Agent, Job, Run, Tenant  # noqa: E402
from e3backup.server.services.tokens import hash_token  # noqa: E402
from fixtures.postgres_process import find_pg_bindir, running_postgres  # noqa: E402
from fixtures.server_process import running_server  # noqa: E402

POLL_S = 5.0
PROGRESS_S = 2.0
P99_LIMIT_MS = 100.0
RESULTS = ROOT / "bench" / "RESULTS.md"


def populate(db_url: str, agents: int, running_fraction: float) -> list[dict[str, Any]]:
    """N enrolled agents (direct inserts: enrollment is not what is measured); a fraction has a
    job with a run in `running`. Returns each agent's credentials and run id."""
    engine = make_engine(db_url)
    upgrade(engine)
    factory = make_session_factory(engine)
    out: list[dict[str, Any]] = []
    now = utcnow()
    with session_scope(factory) as db:
        tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:8]}")
        db.add(tenant)
        db.flush()
        rows = []
        for i in range(agents):
            token = f"e3a_bench_{uuid.uuid4().hex}"
            agent = Agent(tenant_id=tenant.id, hostname=f"h{i}", token_hash=hash_token(token))
            rows.append((agent, token))
        db.add_all([a for a, _ in rows])
        db.flush()
        running = set(random.sample(range(agents), int(agents * running_fraction)))
        for i, (agent, token) in enumerate(rows):
            entry: dict[str, Any] = {"id": agent.id, "token": token, "run_id": None}
            if i in running:
                job = Job(
                    tenant_id=tenant.id,
                    agent_id=agent.id,
                    name=f"j{i}",
                    engine="kvm",
                    dest_type="local",
                    dest_local_path="/r",
                    vms_json=["v"],
                )
                db.add(job)
                db.flush()
                run = Run(
                    uuid=str(uuid.uuid4()),
                    tenant_id=tenant.id,
                    job_id=job.id,
                    agent_id=agent.id,
                    engine="kvm",
                    status="running",
                    claimed_at=now,
                    started_at=now,
                    heartbeat_at=now,
                )
                db.add(run)
                db.flush()
                entry["run_id"] = run.id
            out.append(entry)
    engine.dispose()
    return out


async def _agent(
    client: httpx.AsyncClient,
    agent: dict[str, Any],
    until: float,
    samples: dict[str, list[float]],
    errors: list[str],
) -> None:
    headers = {"X-Agent-ID": str(agent["id"]), "X-Agent-Token": agent["token"]}

    async def call(route: str, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            response = await client.post(f"/api/agent/{route}", json=body, headers=headers)
        except httpx.HTTPError as exc:
            errors.append(f"{route}: {type(exc).__name__}")
            return
        samples[route].append((time.perf_counter() - started) * 1000)
        if response.status_code >= 300 and not (
            route == "next_run" and response.status_code == 204
        ):
            errors.append(f"{route}: HTTP {response.status_code}")

    await asyncio.sleep(random.uniform(0, POLL_S))  # agents do not poll in lockstep
    next_poll = next_progress = time.monotonic()
    sequence = 0
    while time.monotonic() < until:
        now = time.monotonic()
        if now >= next_poll:
            next_poll += POLL_S
            await call("next_run", {})
            await call("poll_commands", {"run_id": agent["run_id"]} if agent["run_id"] else {})
        if agent["run_id"] and now >= next_progress:
            next_progress += PROGRESS_S
            sequence += 1
            await call(
                "update_run",
                {
                    "run_id": agent["run_id"],
                    "status": "running",
                    "progress_pct": min(sequence * 0.1, 99.0),
                    "bytes_processed": sequence * 1 << 20,
                    "bytes_transferred": sequence * 1 << 18,
                    "bytes_total": 1 << 40,
                    "speed_bytes_per_sec": 50 << 20,
                    "current_item": "disk0",
                },
            )
            await call(
                "push_events",
                {
                    "run_id": agent["run_id"],
                    "events": [
                        {
                            "event_id": f"{agent['id']}-{sequence}",
                            "type": "progress",
                            "level": "info",
                            "message_id": "BACKUP_PROGRESS_UPDATE",
                            "params": {"seq": sequence},
                        }
                    ],
                },
            )
        wake = min(next_poll, next_progress if agent["run_id"] else next_poll)
        await asyncio.sleep(max(wake - time.monotonic(), 0))


def _client_process(url: str, agents: list[dict[str, Any]], duration_s: float, queue: Any) -> None:
    async def main() -> tuple[dict[str, list[float]], list[str]]:
        samples: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        limits = httpx.Limits(max_connections=len(agents) + 10, max_keepalive_connections=None)
        timeout = httpx.Timeout(30.0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
            until = time.monotonic() + duration_s
            await asyncio.gather(*(_agent(client, a, until, samples, errors) for a in agents))
        return samples, errors

    samples, errors = asyncio.run(main())
    queue.put((samples, errors, time.process_time()))


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def server_route_times(url: str) -> dict[str, tuple[float, float]]:
    """route → (requests, mean server-side ms) from the server's latency histogram."""
    text = httpx.get(f"{url}/metrics", timeout=300).text
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("e3backup_http_request_duration_seconds_"):
            continue
        name, value = line.rsplit(" ", 1)
        route = name.split('route="', 1)[1].split('"', 1)[0] if 'route="' in name else "?"
        if name.startswith("e3backup_http_request_duration_seconds_sum"):
            sums[route] += float(value)
        elif name.startswith("e3backup_http_request_duration_seconds_count"):
            counts[route] += float(value)
    return {r: (counts[r], sums[r] / counts[r] * 1000) for r in counts if counts[r]}


def run_step(
    db_url: str, n: int, duration_s: float, clients: int, running_fraction: float
) -> dict[str, Any]:
    agents = populate(db_url, n, running_fraction)
    quiet = {"log_json": "false"}
    with (
        tempfile.TemporaryDirectory(prefix="e3bench-") as data_dir,
        running_server(Path(data_dir), db_url, settings=quiet) as server,
    ):
        queue: Any = mp.get_context("fork").Queue()
        shards = [agents[i::clients] for i in range(clients)]
        procs = [
            mp.get_context("fork").Process(
                target=_client_process, args=(server.url, shard, duration_s, queue)
            )
            for shard in shards
            if shard
        ]
        server_proc = psutil.Process(server.pid)
        cpu_before = sum(server_proc.cpu_times()[:2])
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        for proc in procs:
            proc.start()
        results = [queue.get(timeout=duration_s + 300) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        elapsed = time.monotonic() - started
        server_cpu_s = sum(server_proc.cpu_times()[:2]) - cpu_before
        load = (load_before + os.getloadavg()[0]) / 2
        scrape_started = time.monotonic()
        routes = server_route_times(server.url)
        print(f"   /metrics answered after {time.monotonic() - scrape_started:.1f} s", flush=True)
    samples: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    client_cpu_s = sum(part[2] for part in results)
    for part_samples, part_errors, _ in results:
        for route, values in part_samples.items():
            samples[route].extend(values)
        errors.extend(part_errors)
    every = [v for values in samples.values() for v in values]
    return {
        "n": n,
        "requests": len(every),
        "rps": len(every) / elapsed,
        "p50": percentile(every, 50),
        "p99": percentile(every, 99),
        "max": max(every) if every else 0.0,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "routes": {r: (percentile(v, 99), statistics.fmean(v)) for r, v in samples.items()},
        "cpu_ms": server_cpu_s * 1000 / max(len(every), 1),
        "server_cpu_pct": server_cpu_s / elapsed * 100,
        "client_cpu_pct": client_cpu_s / elapsed * 100,
        "load": load,
        "server_routes": routes,
    }


def run_database(kind: str, args: argparse.Namespace, stack: ExitStack) -> list[dict[str, Any]]:
    rows = []
    cluster = None
    if kind == "postgresql":  # one cluster; each step adds its own tenant and agents
        bindir = find_pg_bindir()
        if bindir is None:
            raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
        cluster = stack.enter_context(running_postgres(bindir))
    for n in args.steps:
        if cluster is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="e3sq-"))
            url = f"sqlite:///{directory}/bench.db"
        else:
            url = cluster.url()
        row = run_step(url, n, args.duration, args.clients, args.running_fraction)
        row["db"] = kind
        rows.append(row)
        ok = row["p99"] < P99_LIMIT_MS and row["errors"] == 0
        print(
            f"{kind:10} N={n:5}  {row['rps']:7.0f} req/s  p50 {row['p50']:6.1f} ms  "
            f"p99 {row['p99']:7.1f} ms  errors {row['errors']}  server CPU "
            f"{row['cpu_ms']:.2f} ms/req ({row['server_cpu_pct']:.0f}%)  "
            f"clients {row['client_cpu_pct']:.0f}%  load {row['load']:.1f}  "
            f"{'ok' if ok else 'FAIL'}",
            flush=True,
        )
        if row["errors"]:
            print("   errors:", row["error_kinds"], flush=True)
        if not ok and not args.keep_going:
            break
    return rows


def tables(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        "| database | agents | req/s | p50 ms | p99 ms | max ms | errors | server CPU ms/req "
        "| server CPU % | client CPU % | load avg | pass |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ok = r["p99"] < P99_LIMIT_MS and r["errors"] == 0
        lines.append(
            f"| {r['db']} | {r['n']} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['max']:.0f} | {r['errors']} | {r['cpu_ms']:.2f} | {r['server_cpu_pct']:.0f} | "
            f"{r['client_cpu_pct']:.0f} | "
            f"{r['load']:.1f} | {'yes' if ok else 'no'} |"
        )
    best = {}
    for r in rows:
        if r["p99"] < P99_LIMIT_MS and r["errors"] == 0:
            best[r["db"]] = max(best.get(r["db"], 0), r["n"])
    summary = ", ".join(f"{db}: {n}" for db, n in best.items()) or "none passed"
    per_agent_rps = 2 / POLL_S  # idle agents: next_run + poll_commands per poll interval
    capacity = ", ".join(
        f"{r['db']} ≈ {1000 / r['cpu_ms'] / per_agent_rps:.0f} idle agents per core"
        for r in rows[-1:]
        if r["cpu_ms"]
    )
    where = ["| database | agents | route | requests | server mean ms | client p99 ms |"]
    where.append("|---|---:|---|---:|---:|---:|")
    for r in rows:
        for route, (count, mean_ms) in sorted(r["server_routes"].items()):
            client = r["routes"].get(route.rsplit("/", 1)[-1], (0.0, 0.0))[0]
            where.append(
                f"| {r['db']} | {r['n']} | {route} | {count:.0f} | {mean_ms:.2f} | {client:.1f} |"
            )
    return [
        "\n".join(lines),
        f"Largest N with p99 < {P99_LIMIT_MS:.0f} ms and zero errors — {summary}. "
        f"From the server's CPU per request (last step): {capacity}.",
        "Where the time goes (server-side mean from its own /metrics histogram):\n\n"
        + "\n".join(where),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--steps", default="250,500,1000,2000,3000,5000")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per step")
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    parser.add_argument("--running-fraction", type=float, default=0.1)
    parser.add_argument("--keep-going", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    rows: list[dict[str, Any]] = []
    for kind in args.db or ["sqlite", "postgresql"]:
        with ExitStack() as stack:
            rows += run_database(kind, args, stack)
    if not args.no_write:
        setup = [
            f"One `e3backup server` process (uvicorn, 1 worker), {args.clients} client processes "
            f"(asyncio + httpx) on the same 2-core machine shared with other work; each agent "
            f"polls next_run + poll_commands every {POLL_S:.0f} s, "
            f"{args.running_fraction:.0%} of them report update_run + push_events every "
            f"{PROGRESS_S:.0f} s; {args.duration:.0f} s per step. PostgreSQL 15 throwaway "
            "cluster (the test fixture's: fsync off); SQLite in WAL mode, synchronous=NORMAL.",
        ]
        write_section(RESULTS, "server_load", ["## Control server load", *tables(rows)], setup)


if __name__ == "__main__":
    main()
