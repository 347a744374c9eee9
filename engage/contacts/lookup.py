"""Finding a contact by email or id."""

from __future__ import annotations

from sqlmodel import Session, select

from engage.errors import NotFoundError
from models import (
    Contact,
)


def get_contact(*, session: Session, email: str) -> Contact:
    contact = session.exec(select(Contact).where(Contact.email_key == email.strip().lower())).first()
    if contact is None:
        raise NotFoundError(f"no contact {email!r} (import them first: engage contacts import FILE)")
    return contact


def get_contact_by_id(*, session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFoundError(f"no contact {contact_id}")
    return contact
