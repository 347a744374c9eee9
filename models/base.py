"""Shared column types and vocabularies of the ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from engage.vocabulary import (
    FINAL_STATUSES,
    RELEASING_STATUSES,
    Community,
    DeliveryKind,
    DeliveryState,
    PlanStatus,
    StepKind,
    StepStatus,
    utcnow,
)

__all__ = [
    "FINAL_STATUSES",
    "RELEASING_STATUSES",
    "Community",
    "DeliveryKind",
    "DeliveryState",
    "PlanStatus",
    "StepKind",
    "StepStatus",
    "UTCDateTime",
    "id_of",
    "utcnow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back aware, so SQLite and PostgreSQL give the same answers."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the ledger: pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class _HasId(Protocol):
    id: int | None


def id_of(row: _HasId) -> int:
    """The primary key of a row that has been flushed (a missing id is a bug, not a user error)."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id yet: flush the session first")
    return row.id
