"""The agent API's front door without an ORM session: who is calling (a short-lived in-process
cache of agent id → token hash, tenant, status) and when each agent was last seen (kept in
memory, written in one batched UPDATE every few seconds).

Thousands of agents poll every 5 s; reading the agent row and writing last_seen on each poll
was most of the server's work. Consistency bounds:

- `AUTH_CACHE_TTL_S`: a cached agent is re-read from the database after this long. Disable and
  delete invalidate the entry at once in the process that served them; another replica on the
  same database honours them within the TTL.
- `LAST_SEEN_FLUSH_S`: last_seen in the database lags the real last poll by at most this (plus
  one background tick); the online window (90 s) and the scheduler's offline check are far
  coarser. An agent seen for the first time, or from a new address, is written at once.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, bindparam, or_, select, update

from e3backup.server.db.base import utcnow
from e3backup.server.db.models import Agent
from e3backup.server.services.errors import Unauthorized

AUTH_CACHE_TTL_S = 5.0
LAST_SEEN_FLUSH_S = 5.0
_MAX_CACHED = 200_000
FLUSH_BATCH = 250  # rows per flush transaction: short write locks, short GIL holds
_BAD = "unknown agent or wrong agent token"

_LOAD = select(Agent.id, Agent.tenant_id, Agent.token_hash, Agent.status, Agent.last_ip).where(
    Agent.id == bindparam("agent_id")
)
_TOUCH = (
    update(Agent)
    .where(Agent.id == bindparam("b_id"))
    .where(or_(Agent.last_seen_at.is_(None), Agent.last_seen_at < bindparam("b_seen")))
    .values(last_seen_at=bindparam("b_seen"), last_ip=bindparam("b_ip"))
)


@dataclass(frozen=True, slots=True)
class AgentRef:
    """What the hot routes need of the calling agent (the ORM row is loaded only on rare
    paths that need more)."""

    id: int
    tenant_id: int
    status: str
    token_hash: str
    last_ip: str
    loaded_at: float


class AgentGate:
    def __init__(self, engine: Engine, ttl_s: float = AUTH_CACHE_TTL_S) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._cache: dict[int, AgentRef] = {}
        self._seen: dict[int, tuple[datetime, str]] = {}
        self._lock = threading.Lock()

    def authenticate(
        self,
        conn: Connection,
        agent_id: str | None,
        token: str | None,
        ip: str,
        rechecked: bool = False,
    ) -> AgentRef:
        """The agent, or Unauthorized; records it as seen (in memory). `rechecked`: the caller's
        own statement re-checks status and token hash in the database (the combined poll), so
        a cached entry of any age will do."""
        if not agent_id or not token or not agent_id.isdigit() or len(agent_id) > 18:
            raise Unauthorized(_BAD)
        key = int(agent_id)
        ref = self._cache.get(key)
        if ref is None or (not rechecked and time.monotonic() - ref.loaded_at > self.ttl_s):
            ref = self._load(conn, key)
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not hmac.compare_digest(digest, ref.token_hash):
            raise Unauthorized(_BAD)
        if ref.status != "enabled":
            raise Unauthorized("this agent is disabled; enroll it again")
        self._mark_seen(conn, ref, ip[:64])
        return ref

    def _load(self, conn: Connection, agent_id: int) -> AgentRef:
        row = conn.execute(_LOAD, {"agent_id": agent_id}).first()
        if row is None:
            self.invalidate(agent_id)
            raise Unauthorized(_BAD)
        now = time.monotonic()
        ref = AgentRef(row.id, row.tenant_id, row.status, row.token_hash, row.last_ip, now)
        with self._lock:
            if len(self._cache) > _MAX_CACHED:
                self._cache.clear()
            self._cache[agent_id] = ref
        return ref

    def _mark_seen(self, conn: Connection, ref: AgentRef, ip: str) -> None:
        now = utcnow()
        with self._lock:
            previous = self._seen.get(ref.id)
            self._seen[ref.id] = (now, ip)
        known_ip = previous[1] if previous else ref.last_ip
        if ip != known_ip:  # a new address is worth writing now (and re-caching)
            conn.execute(_TOUCH, [{"b_id": ref.id, "b_seen": now, "b_ip": ip}])
            with self._lock:
                self._cache.pop(ref.id, None)

    def invalidate(self, agent_id: int) -> None:
        """Forget a cached agent (disable, delete, new token) so the next call re-reads it."""
        with self._lock:
            self._cache.pop(agent_id, None)
            self._seen.pop(agent_id, None)

    def flush_last_seen(self) -> int:
        """Write the buffered last_seen/last_ip values, FLUSH_BATCH rows per transaction; how
        many agents."""
        with self._lock:
            pending, self._seen = self._seen, {}
        if not pending:
            return 0
        ids = list(pending)
        rows = [{"b_id": a, "b_seen": pending[a][0], "b_ip": pending[a][1]} for a in ids]
        written = 0
        try:
            for start in range(0, len(rows), FLUSH_BATCH):
                with self.engine.begin() as conn:
                    conn.execute(_TOUCH, rows[start : start + FLUSH_BATCH])
                written = start + FLUSH_BATCH
        except Exception:  # keep the unwritten ones for the next pass; newer sightings win
            with self._lock:
                self._seen = {a: pending[a] for a in ids[written:]} | self._seen
            raise
        return len(rows)
