"""Shared bases: strict write models, read models built from ORM rows, list pages."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

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
