"""Staff digests: the morning email of each staff member, decided once per local day."""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel, UniqueConstraint

from models.base import UTCDateTime, utcnow


class StaffDigest(SQLModel, table=True):
    """What one staff member's digest of one of their days decided: how many items, none being an empty day (no
    email). Unique per staff member and day, so the day is decided once; the email itself is a `Delivery`."""

    __tablename__ = "staff_digest"
    __table_args__ = (UniqueConstraint("staff_id", "day", name="uq_staff_digest_day"),)

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True)
    day: date = Field(description="The staff member's local date the digest is for.")
    items: int = Field(default=0, description="How many lines it listed; 0: an empty day, no email.")
    flow_run_id: str | None = Field(default=None, max_length=36, description="The run that decided the day.")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
