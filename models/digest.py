"""Staff digests: the morning email of each staff member, at most one per local day."""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Field, SQLModel, UniqueConstraint

from models.base import DeliveryState, UTCDateTime, utcnow


class StaffDigest(SQLModel, table=True):
    """One staff member's digest of one of their days; unique per staff member and day, so it goes out once."""

    __tablename__ = "staff_digest"
    __table_args__ = (UniqueConstraint("staff_id", "day", name="uq_staff_digest_day"),)

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff.id", index=True)
    day: date = Field(description="The staff member's local date the digest is for.")
    items: int = Field(default=0, description="How many lines it listed.")
    language: str | None = Field(default=None, max_length=8)
    message_id: str | None = Field(default=None, max_length=300)
    state: str = Field(default=DeliveryState.SENDING, max_length=10)
    smtp_response: str | None = Field(default=None, max_length=1000)
    flow_run_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
