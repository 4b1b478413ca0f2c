"""`/healthz`: the process answers and the database is reachable."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from e3backup.server.deps import Db

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(db: Db) -> dict[str, str]:
    db.execute(text("SELECT 1"))
    return {"status": "ok"}
