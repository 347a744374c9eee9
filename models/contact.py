"""Contacts: the people a nonprofit keeps in touch with, with what they agreed to."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel, UniqueConstraint

from models.base import UTCDateTime, utcnow


class ContactBase(SQLModel):
    email: str = Field(max_length=320, description="Normalised: trimmed, compared without regard to case.")
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=50)
    language: str | None = Field(default=None, max_length=8)
    city: str | None = Field(default=None, max_length=200)
    postal_code: str | None = Field(default=None, max_length=20)
    country: str | None = Field(default=None, max_length=2)
    timezone: str | None = Field(default=None, max_length=64)
    availability: str | None = Field(default=None, max_length=200, description="e.g. 'evenings', 'weekends'")
    organisation: str | None = Field(default=None, max_length=200)
    total_given_cents: int | None = Field(default=None, description="Lifetime giving, integer cents.")


class Contact(ContactBase, table=True):
    __table_args__ = (UniqueConstraint("email_key", name="uq_contact_email_key"),)

    id: int | None = Field(default=None, primary_key=True)
    email_key: str = Field(max_length=320, description="Lower-cased email: the natural key.")
    owner_id: int | None = Field(default=None, foreign_key="staff.id", index=True)
    email_opt_out: bool = Field(default=False)
    email_opt_out_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    email_opt_out_source: str | None = Field(default=None, max_length=200)
    do_not_call: bool = Field(default=False)
    consent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    consent_source: str | None = Field(default=None, max_length=200)
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


class ContactCommunity(SQLModel, table=True):
    """A community a contact belongs to (volunteer, donor, member, beneficiary)."""

    __tablename__ = "contact_community"

    contact_id: int = Field(foreign_key="contact.id", primary_key=True, ondelete="CASCADE")
    community: str = Field(max_length=40, primary_key=True)


class ContactTag(SQLModel, table=True):
    """A free tag on a contact, for segments."""

    __tablename__ = "contact_tag"

    contact_id: int = Field(foreign_key="contact.id", primary_key=True, ondelete="CASCADE")
    tag: str = Field(max_length=80, primary_key=True)
