"""Workshops: the events that trigger enrollments."""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel, UniqueConstraint

from models.base import UTCDateTime, utcnow


class Workshop(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "date", name="uq_workshop_name_date"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    date: date
    place: str | None = Field(default=None, max_length=200)
    template_key: str | None = Field(default=None, max_length=100)
    source: str | None = Field(default=None, max_length=500, description="The attendee file it came from.")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    @property
    def enrollment_key(self) -> str:
        return f"workshop:{self.id}"
