"""Deliveries (outgoing messages) and calls."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel, UniqueConstraint

from models.base import DeliveryState, UTCDateTime, utcnow


class Delivery(SQLModel, table=True):
    """One outgoing message: a plan step's (its contact's email, a call's invite, update or cancel), a staff digest,
    or a test send (neither). Unique per step (or digest) x kind x sequence, so a resend is explicit."""

    __table_args__ = (
        UniqueConstraint("plan_step_id", "kind", "sequence", name="uq_delivery_step_kind_seq"),
        UniqueConstraint("staff_digest_id", "kind", "sequence", name="uq_delivery_digest_kind_seq"),
    )

    id: int | None = Field(default=None, primary_key=True)
    plan_step_id: int | None = Field(default=None, foreign_key="plan_step.id", index=True)
    staff_digest_id: int | None = Field(
        default=None, foreign_key="staff_digest.id", index=True, description="The staff digest this message is."
    )
    kind: str = Field(max_length=10)
    sequence: int = Field(default=0)
    recipient: str = Field(max_length=320)
    subject: str | None = Field(default=None, max_length=500)
    language: str | None = Field(default=None, max_length=8)
    message_id: str | None = Field(default=None, max_length=300, index=True)
    state: str = Field(default=DeliveryState.SENDING, max_length=10)
    smtp_response: str | None = Field(default=None, max_length=1000)
    flow_run_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Call(SQLModel, table=True):
    """The follow-up call of a call step: who calls, when, and how it went."""

    id: int | None = Field(default=None, primary_key=True)
    plan_step_id: int = Field(foreign_key="plan_step.id", unique=True)
    assignee_id: int = Field(foreign_key="staff.id", index=True)
    slot_start: datetime = Field(sa_type=UTCDateTime)
    slot_end: datetime = Field(sa_type=UTCDateTime)
    uid: str = Field(max_length=200, unique=True)
    sequence: int = Field(default=0)
    outcome: str | None = Field(default=None, max_length=2000)
    notes: str | None = Field(default=None, max_length=4000)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    due_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, description="The step's due time the slot was placed for."
    )
    invite_pending: bool = Field(
        default=False, index=True, description="The call changed: the calendars concerned have yet to be told."
    )
