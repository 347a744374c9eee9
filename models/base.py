"""Shared column types and vocabularies of the ledger."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


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


class StepKind(StrEnum):
    EMAIL = "email"
    CALL = "call"
    TASK = "task"


class StepStatus(StrEnum):
    """Where a plan step is in its life; see DESIGN.md, "Step lifecycle"."""

    WAITING = "waiting"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    OPEN = "open"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


#: Statuses after which a step's dependents may proceed.
RELEASING_STATUSES = frozenset({StepStatus.DONE, StepStatus.SKIPPED})
#: Statuses a step never leaves by itself.
FINAL_STATUSES = frozenset({StepStatus.DONE, StepStatus.SKIPPED, StepStatus.CANCELLED})


class PlanStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class DeliveryKind(StrEnum):
    EMAIL = "email"
    INVITE = "invite"
    UPDATE = "update"
    CANCEL = "cancel"
    DIGEST = "digest"
    TEST = "test"


class DeliveryState(StrEnum):
    """Where an outgoing message is; see `engage.mail.outbox` for the protocol that moves it."""

    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    DEFERRED = "deferred"


class Community(StrEnum):
    VOLUNTEER = "volunteer"
    DONOR = "donor"
    MEMBER = "member"
    BENEFICIARY = "beneficiary"


class _HasId(Protocol):
    id: int | None


def id_of(row: _HasId) -> int:
    """The primary key of a row that has been flushed (a missing id is a bug, not a user error)."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id yet: flush the session first")
    return row.id
