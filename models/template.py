"""Plan templates as synced from YAML: one immutable row per version, with its steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel, UniqueConstraint

from models.base import UTCDateTime, utcnow


class PlanTemplate(SQLModel, table=True):
    """One version of a plan template; a changed YAML file gives a new version, old plans keep theirs."""

    __tablename__ = "plan_template"
    __table_args__ = (
        UniqueConstraint("key", "version", name="uq_plan_template_key_version"),
        UniqueConstraint("key", "content_hash", name="uq_plan_template_key_hash"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=100)
    version: int
    name: str = Field(max_length=200)
    content_hash: str = Field(max_length=64)
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    source_file: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class TemplateStep(SQLModel, table=True):
    """One step of one template version."""

    __tablename__ = "template_step"
    __table_args__ = (UniqueConstraint("template_id", "key", name="uq_template_step_key"),)

    id: int | None = Field(default=None, primary_key=True)
    template_id: int = Field(foreign_key="plan_template.id", index=True)
    position: int
    key: str = Field(max_length=100)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=10)
    days_after: int
    depends_on: str | None = Field(default=None, max_length=100)
    assignee: str | None = Field(default=None, max_length=320)
    priority: str = Field(default="normal", max_length=10)
    email_template: str | None = Field(default=None, max_length=200)
