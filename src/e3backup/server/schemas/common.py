"""Shared bases: strict write models, read models built from ORM rows, list pages."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

T = TypeVar("T")


NUL = "\x00"


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return False


class WriteModel(BaseModel):
    """Unknown fields rejected; no NUL characters in text (PostgreSQL cannot store them)."""

    model_config = ConfigDict(extra="forbid", str_max_length=10_000)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _holds_nul(value):
            raise ValueError("text must not contain NUL characters")
        return value


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class Message(BaseModel):
    status: str = "success"
    message: str = ""


# Ids are INTEGER columns: 64-bit on SQLite but 32-bit on PostgreSQL, where a larger one is a
# database error (500), not a missing row.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
CursorQuery = Annotated[int, Query(ge=0, le=MAX_ID)]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_ID)]  # larger overflows the database's integer
FilterQuery = Annotated[str | None, Query(max_length=30, pattern=r"^[A-Za-z_-]*$")]
