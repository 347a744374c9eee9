"""Plans (a template applied to one contact) and their steps, with comments left by staff."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Index
from sqlmodel import Field, SQLModel, UniqueConstraint

from models.base import PlanStatus, StepStatus, UTCDateTime, utcnow


class Plan(SQLModel, table=True):
    """One contact x one template key x one enrollment key; the template version is recorded, not keyed."""

    __table_args__ = (
        UniqueConstraint("contact_id", "template_key", "enrollment_key", name="uq_plan_enrollment"),
        CheckConstraint("enrollment_key <> ''", name="ck_plan_enrollment_key_not_empty"),
    )

    id: int | None = Field(default=None, primary_key=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    template_key: str = Field(max_length=100, index=True)
    template_id: int = Field(foreign_key="plan_template.id")
    enrollment_key: str = Field(max_length=200)
    workshop_id: int | None = Field(default=None, foreign_key="workshop.id", index=True)
    applied_by_id: int | None = Field(default=None, foreign_key="staff.id")
    status: str = Field(default=PlanStatus.ACTIVE, max_length=20, index=True)
    started_on: date
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    cancel_reason: str | None = Field(default=None, max_length=500)


class PlanStep(SQLModel, table=True):
    """One step of one plan: its status, due time, assignee and outcome."""

    __tablename__ = "plan_step"
    __table_args__ = (
        UniqueConstraint("plan_id", "step_key", name="uq_plan_step_key"),
        Index("ix_plan_step_status_due", "status", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="plan.id", index=True)
    template_step_id: int | None = Field(default=None, foreign_key="template_step.id")
    step_key: str = Field(max_length=100)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=10)
    position: int = Field(default=0)
    depends_on_step_id: int | None = Field(default=None, foreign_key="plan_step.id")
    days_after: int = Field(default=0)
    status: str = Field(default=StepStatus.WAITING, max_length=20)
    due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    assignee_id: int | None = Field(default=None, foreign_key="staff.id", index=True)
    assignee_fallback: bool = Field(default=False, description="True when the rule's person was missing.")
    priority: str = Field(default="normal", max_length=10)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=2000)
    retryable: bool = Field(
        default=False, description="A failed step whose retries ran out (not one refused for good): retry may help."
    )
    skip_reason: str | None = Field(default=None, max_length=500)
    outcome: str | None = Field(default=None, max_length=2000)
    released_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_by_id: int | None = Field(default=None, foreign_key="staff.id")
    claimed_by: str | None = Field(default=None, max_length=100)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    flow_run_id: str | None = Field(default=None, max_length=36, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class StepComment(SQLModel, table=True):
    """A note left by staff on a plan step."""

    __tablename__ = "step_comment"

    id: int | None = Field(default=None, primary_key=True)
    plan_step_id: int = Field(foreign_key="plan_step.id", index=True)
    author_id: int | None = Field(default=None, foreign_key="staff.id")
    text: str = Field(max_length=4000)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
