"""The ledger's vocabulary: kinds and statuses of steps, plans and deliveries, and the clock's "now".

It imports nothing, so pure rules and the tables share the same words (``models`` re-exports them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


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
