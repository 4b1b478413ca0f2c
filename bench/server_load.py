"""Control-server load: N simulated agents against ONE `e3backup server` process.

Each agent does what the agent does: every 5 s the combined `poll` (`--split`: `next_run` +
`poll_commands`, as older agents); while it has a run "running" (a fraction of agents), every
2 s `update_run` + `push_events`. The agents run in one cheap process (bench/agent_swarm.py)
pinned to CPU 1, the server to CPU 0, so the two never fight for a core; CPU is counted for
server, swarm and PostgreSQL. N is ramped; a step passes with p99 < 100 ms and zero errors.
`--py-spy` profiles the server in each step (where the time goes).

    .venv/bin/python bench/server_load.py --db sqlite --db postgresql --steps 1000,2000,5000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from agent_swarm import POLL_S, PROGRESS_S, run_swarm  # noqa: E402
from bench_common import write_section  # noqa: E402
from e3backup.server.db.base import utcnow  # noqa: E402
from e3backup.server.db.engine import make_engine, make_session_factory, session_scope  # noqa: E402
from e3backup.server.db.migrate import upgrade  # noqa: E402
from e3backup.server.db.models import Agent, Job, Run, Tenant  # noqa: E402
from e3backup.server.services.tokens import hash_token  # noqa: E402
from fixtures.postgres_process import find_pg_bindir, running_postgres  # noqa: E402
from fixtures.server_process import running_server  # noqa: E402
from py_spy_profile import finish_py_spy, start_py_spy  # noqa: E402

SERVER_CPUS = {0}  # the server has CPU 0 to itself; load generator (and PostgreSQL) on CPU 1
CLIENT_CPUS = {1}
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


def pin(pid: int, cpus: set[int], children: bool = False) -> None:
    """Pin every thread of `pid` (and of its children) to `cpus`; later threads inherit."""
    procs = [psutil.Process(pid)]
    if children:
        procs += procs[0].children(recursive=True)
    for proc in procs:
        for thread in proc.threads():
            with suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(thread.id, cpus)


def cpu_seconds(pid: int, children: bool = False) -> float:
    root = psutil.Process(pid)
    procs = [root, *(root.children(recursive=True) if children else [])]
    total = 0.0
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            total += sum(proc.cpu_times()[:2])
    return total


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with suppress(OSError, IndexError, ValueError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


def run_step(db_url: str, n: int, args: argparse.Namespace, pg_pid: int | None) -> dict[str, Any]:
    agents = populate(db_url, n, args.running_fraction)
    quiet = {"log_json": "false"}
    with (
        tempfile.TemporaryDirectory(prefix="e3bench-") as data_dir,
        running_server(Path(data_dir), db_url, settings=quiet) as server,
    ):
        ctx = mp.get_context("fork")
        queue: Any = ctx.Queue()
        swarm = ctx.Process(
            target=_pinned_swarm, args=(server.url, agents, args.duration, args.split, queue)
        )
        if args.pin_server:
            pin(server.pid, SERVER_CPUS)
        if pg_pid is not None:
            pin(pg_pid, CLIENT_CPUS, children=True)
        server_before = cpu_seconds(server.pid)
        wait_before = runqueue_wait_s(server.pid)
        pg_before = cpu_seconds(pg_pid, children=True) if pg_pid else 0.0
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        swarm.start()
        spy = None
        if args.py_spy:
            spy = start_py_spy(server.pid, args.duration, Path(data_dir), CLIENT_CPUS)
        samples, errors, codes, client_cpu_s = queue.get(timeout=args.duration + 300)
        swarm.join(timeout=60)
        elapsed = time.monotonic() - started
        server_cpu_s = cpu_seconds(server.pid) - server_before
        wait_s = runqueue_wait_s(server.pid) - wait_before
        pg_cpu_s = (cpu_seconds(pg_pid, children=True) - pg_before) if pg_pid else 0.0
        load = (load_before + os.getloadavg()[0]) / 2
        profile = finish_py_spy(spy) if spy else []
        routes = server_route_times(server.url)
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
        "codes": codes,
        "routes": {r: (percentile(v, 99), statistics.fmean(v)) for r, v in samples.items()},
        "cpu_ms": server_cpu_s * 1000 / max(len(every), 1),
        "server_cpu_pct": server_cpu_s / elapsed * 100,
        "client_cpu_pct": client_cpu_s / elapsed * 100,
        "pg_cpu_pct": pg_cpu_s / elapsed * 100,
        "wait_pct": wait_s / elapsed * 100,
        "load": load,
        "server_routes": routes,
        "profile": profile,
    }


def _pinned_swarm(
    url: str, agents: list[dict[str, Any]], duration: float, split: bool, queue: Any
) -> None:
    os.sched_setaffinity(0, CLIENT_CPUS)
    run_swarm(url, agents, duration, not split, queue)


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
        row = run_step(url, n, args, cluster.pid if cluster else None)
        row["db"] = kind
        rows.append(row)
        report_step(row)
        if not passed(row) and not args.keep_going:
            break
    return rows


def passed(row: dict[str, Any]) -> bool:
    return bool(row["p99"] < P99_LIMIT_MS and row["errors"] == 0)


def report_step(row: dict[str, Any]) -> None:
    print(
        f"{row['db']:10} N={row['n']:5}  {row['rps']:7.0f} req/s  p50 {row['p50']:6.1f} ms  "
        f"p99 {row['p99']:7.1f} ms  errors {row['errors']}  server CPU "
        f"{row['cpu_ms']:.3f} ms/req ({row['server_cpu_pct']:.0f}%)  "
        f"waiting for CPU {row['wait_pct']:.0f}%  "
        f"swarm {row['client_cpu_pct']:.0f}%  postgres {row['pg_cpu_pct']:.0f}%  "
        f"load {row['load']:.1f}  {'ok' if passed(row) else 'FAIL'}",
        flush=True,
    )
    if row["errors"]:
        print("   errors:", row["error_kinds"], flush=True)
    for route, (p99, mean) in sorted(row["routes"].items()):
        print(f"   {route:14} client p99 {p99:7.1f} ms  mean {mean:6.1f} ms", flush=True)
    for label, share in row["profile"]:
        print(f"   {share:5.1f}%  {label}", flush=True)


def capacity(rows: list[dict[str, Any]]) -> str:
    """What the server's own CPU per request allows, whatever the rest of the machine does."""
    parts = []
    for db in dict.fromkeys(r["db"] for r in rows):
        last = max((r for r in rows if r["db"] == db), key=lambda r: r["n"])
        per_agent = last["rps"] / last["n"]  # requests per agent per second in this mix
        agents = 1000 / last["cpu_ms"] / per_agent
        parts.append(
            f"{db}: {last['cpu_ms']:.2f} ms of server CPU per request at {last['n']} agents "
            f"({per_agent:.2f} req/s each) ≈ {agents:.0f} agents per fully busy core"
        )
    return "Capacity from CPU alone — " + "; ".join(parts) + "."


def tables(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        "| database | agents | req/s | p50 ms | p99 ms | max ms | errors | server CPU ms/req "
        "| server CPU % | server waiting for CPU % | swarm CPU % | postgres CPU % | load avg "
        "| pass |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['db']} | {r['n']} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['max']:.0f} | {r['errors']} | {r['cpu_ms']:.3f} | {r['server_cpu_pct']:.0f} | "
            f"{r['wait_pct']:.0f} | "
            f"{r['client_cpu_pct']:.0f} | {r['pg_cpu_pct']:.0f} | "
            f"{r['load']:.1f} | {'yes' if passed(r) else 'no'} |"
        )
    best: dict[str, int] = {}
    for r in rows:
        if passed(r):
            best[r["db"]] = max(best.get(r["db"], 0), r["n"])
    summary = ", ".join(f"{db}: {n}" for db, n in best.items()) or "none passed"
    where = ["| database | agents | route | requests | server mean ms | client p99 ms |"]
    where.append("|---|---:|---|---:|---:|---:|")
    for r in rows:
        for route, (count, mean_ms) in sorted(r["server_routes"].items()):
            client = r["routes"].get(route.rsplit("/", 1)[-1], (0.0, 0.0))[0]
            where.append(
                f"| {r['db']} | {r['n']} | {route} | {count:.0f} | {mean_ms:.2f} | {client:.1f} |"
            )
    out = [
        "\n".join(lines),
        f"Largest N with p99 < {P99_LIMIT_MS:.0f} ms and zero errors — {summary}. {capacity(rows)}",
        "Per route (server-side mean from its own /metrics histogram):\n\n" + "\n".join(where),
    ]
    for r in rows:
        if r["profile"] and r is max((x for x in rows if x["db"] == r["db"]), key=lambda x: x["n"]):
            body = "\n".join(f"| {label} | {share:.1f} |" for label, share in r["profile"])
            out.append(
                f"Server CPU by py-spy ({r['db']}, {r['n']} agents; self time, % of samples):"
                f"\n\n| where | % |\n|---|---:|\n{body}"
            )
    return out


def raise_autogroup(nice: int) -> str:
    """With autogroup scheduling (Linux default) `nice` only ranks processes inside one session:
    other sessions' niced tests still get an equal share of a core against this bench. Give
    this session's autogroup the priority `nice` alone was meant to give (run under `setsid`
    so the group is the bench's own: server, swarm and PostgreSQL are its children)."""
    path = Path("/proc/self/autogroup")
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if not path.exists() or enabled.read_text().strip() != "1":
        return "no autogroup scheduling"
    try:
        path.write_text(str(nice))
    except OSError as exc:
        return f"autogroup nice unchanged ({exc.strerror})"
    return f"bench session's autogroup at nice {nice}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--steps", default="1000,2000,3000,4000,5000,6000")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per step")
    parser.add_argument("--running-fraction", type=float, default=0.1)
    parser.add_argument(
        "--split", action="store_true", help="poll with next_run + poll_commands (older agents)"
    )
    parser.add_argument("--py-spy", action="store_true", help="profile the server each step")
    parser.add_argument(
        "--autogroup-nice", type=int, default=-20, help="this session's autogroup priority"
    )
    parser.add_argument(
        "--no-pin-server",
        dest="pin_server",
        action="store_false",
        help="let the server use both CPUs",
    )
    parser.add_argument("--keep-going", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.steps = [int(s) for s in args.steps.split(",")]
    scheduling = raise_autogroup(args.autogroup_nice)
    print(scheduling, flush=True)
    rows: list[dict[str, Any]] = []
    for kind in args.db or ["sqlite", "postgresql"]:
        with ExitStack() as stack:
            rows += run_database(kind, args, stack)
    if not args.no_write:
        poll = "next_run + poll_commands" if args.split else "the combined poll"
        setup = [
            "One `e3backup server` process (uvicorn, 1 worker) pinned to CPU 0; the simulated "
            "agents in one process (uvloop, raw keep-alive HTTP/1.1, one connection per agent) "
            f"and PostgreSQL pinned to CPU 1; other work on the shared 2-core machine runs niced "
            f"({scheduling}). "
            f"Each agent sends {poll} every {POLL_S:.0f} s, "
            f"{args.running_fraction:.0%} of them also update_run + push_events every "
            f"{PROGRESS_S:.0f} s; {args.duration:.0f} s per step. PostgreSQL 15 throwaway "
            "cluster (the test fixture's: fsync off); SQLite in WAL mode, synchronous=NORMAL.",
        ]
        write_section(RESULTS, "server_load", ["## Control server load", *tables(rows)], setup)


if __name__ == "__main__":
    main()
