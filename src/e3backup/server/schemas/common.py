"""Shared bases: strict write models, read models built from ORM rows, list pages."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class WriteModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000)


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


MAX_ID = 2**63 - 1  # the largest id any database column holds
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
CursorQuery = Annotated[int, Query(ge=0, le=MAX_ID)]
