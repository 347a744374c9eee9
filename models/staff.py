"""Staff: the people of the nonprofit who own contacts and are assigned tasks."""

from __future__ import annotations

from datetime import datetime, time

from sqlmodel import Field, SQLModel

from models.base import UTCDateTime, utcnow

DEFAULT_WORK_DAYS = "mon,tue,wed,thu,fri"


class StaffBase(SQLModel):
    email: str = Field(max_length=320, unique=True, index=True)
    name: str = Field(max_length=200)
    timezone: str = Field(default="Europe/Paris", max_length=64)
    language: str = Field(default="fr", max_length=8)
    work_days: str = Field(default=DEFAULT_WORK_DAYS, max_length=40)
    work_start: time = Field(default=time(9, 0))
    work_end: time = Field(default=time(17, 0))
    active: bool = Field(default=True)


class Staff(StaffBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
