"""The simulated agents of bench/server_load.py, made cheap enough not to be the bottleneck.

One process, uvloop, one keep-alive HTTP/1.1 connection per agent (as real agents have),
requests pre-serialised as bytes and a minimal response parser (status line, Content-Length).
httpx cost ~1 ms of client CPU per request and took the server's core; this costs tens of µs.

Each agent polls every POLL_S (the combined `poll`, or `next_run` + `poll_commands` as older
agents do); an agent with a run "running" also sends `update_run` + `push_events` every
PROGRESS_S. Start times are spread over the first interval so agents never poll in lockstep.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from typing import Any

POLL_S = 5.0
PROGRESS_S = 2.0
TIMEOUT_S = 30.0


class Swarm:
    def __init__(self, host: str, port: int, combined: bool) -> None:
        self.host = host
        self.port = port
        self.combined = combined
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.codes: dict[str, int] = defaultdict(int)

    def request(self, agent: dict[str, Any], route: str, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST /api/agent/{route} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"X-Agent-ID: {agent['id']}\r\nX-Agent-Token: {agent['token']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    async def agent(self, agent: dict[str, Any], until: float) -> None:
        run_id = agent["run_id"]
        if self.combined:
            polls = [("poll", self.request(agent, "poll", {"run_id": run_id, "claim": False}))]
        else:
            polls = [
                ("next_run", self.request(agent, "next_run", {})),
                ("poll_commands", self.request(agent, "poll_commands", {"run_id": run_id})),
            ]
        await asyncio.sleep(random.uniform(0, POLL_S))
        conn: list[Any] = []
        next_poll = next_progress = time.monotonic()
        sequence = 0
        while time.monotonic() < until:
            if time.monotonic() >= next_poll:
                next_poll += POLL_S
                for route, raw in polls:
                    await self.call(conn, route, raw)
            if run_id and time.monotonic() >= next_progress:
                next_progress += PROGRESS_S
                sequence += 1
                for route, body in progress_bodies(agent, sequence):
                    await self.call(conn, route, self.request(agent, route, body))
            wake = min(next_poll, next_progress) if run_id else next_poll
            await asyncio.sleep(max(wake - time.monotonic(), 0))
        if conn:
            conn[1].close()

    async def call(self, conn: list[Any], route: str, raw: bytes) -> None:
        started = time.perf_counter()
        try:
            if not conn:
                conn.extend(await asyncio.open_connection(self.host, self.port))
            status = await asyncio.wait_for(exchange(conn[0], conn[1], raw), TIMEOUT_S)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors.append(f"{route}: {type(exc).__name__}")
            if conn:
                conn[1].close()
                conn.clear()
            return
        self.samples[route].append((time.perf_counter() - started) * 1000)
        self.codes[f"{route} {status}"] += 1
        if status >= 300 and not (route == "next_run" and status == 204):
            self.errors.append(f"{route}: HTTP {status}")


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """Send one request, read one response; its status code."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        length = int(lower[at + 17 : end])
        if length:
            await reader.readexactly(length)
    elif status not in (204, 304) and b"transfer-encoding" in lower:
        raise ValueError("chunked answers are not parsed here")
    return status


def progress_bodies(agent: dict[str, Any], sequence: int) -> list[tuple[str, dict[str, Any]]]:
    run_id = agent["run_id"]
    update = {
        "run_id": run_id,
        "status": "running",
        "progress_pct": min(sequence * 0.1, 99.0),
        "bytes_processed": sequence << 20,
        "bytes_transferred": sequence << 18,
        "bytes_total": 1 << 40,
        "speed_bytes_per_sec": 50 << 20,
        "current_item": "disk0",
    }
    event = {
        "event_id": f"{agent['id']}-{sequence}",
        "type": "progress",
        "level": "info",
        "message_id": "BACKUP_PROGRESS_UPDATE",
        "params": {"seq": sequence},
    }
    return [("update_run", update), ("push_events", {"run_id": run_id, "events": [event]})]


def run_swarm(
    url: str, agents: list[dict[str, Any]], duration_s: float, combined: bool, queue: Any
) -> None:
    """Child-process entry: run every agent for `duration_s`; put the samples on `queue`."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - the bench runs where uvloop is installed
        pass
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    swarm = Swarm(host, int(port), combined)

    async def main() -> None:
        until = time.monotonic() + duration_s
        await asyncio.gather(*(swarm.agent(a, until) for a in agents))

    asyncio.run(main())
    queue.put((dict(swarm.samples), swarm.errors, dict(swarm.codes), time.process_time()))
