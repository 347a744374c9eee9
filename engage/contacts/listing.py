"""Contacts as staff list them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from models import Contact, ContactCommunity, ContactTag, Staff


@dataclass(frozen=True)
class ContactView:
    """One contact as listed: what staff want to see at a glance."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    language: str | None
    communities: tuple[str, ...]
    tags: tuple[str, ...]
    owner: str | None
    email_opt_out: bool
    do_not_call: bool

    def as_dict(self) -> dict[str, Any]:
        """The contact as plain JSON-ready data."""
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone": self.phone,
            "language": self.language,
            "communities": list(self.communities),
            "tags": list(self.tags),
            "owner": self.owner,
            "email_opt_out": self.email_opt_out,
            "do_not_call": self.do_not_call,
        }


def list_contacts(*, session: Session) -> list[ContactView]:
    """List the ledger's contacts (erased ones left out), by email, with communities, tags and owner."""
    rows = session.exec(
        select(Contact, Staff.email)
        .join(Staff, col(Contact.owner_id) == col(Staff.id), isouter=True)
        .where(col(Contact.erased_at).is_(None))
        .order_by(col(Contact.email_key))
    ).all()
    communities: dict[int, list[str]] = {}
    for contact_id, community in session.exec(
        select(ContactCommunity.contact_id, ContactCommunity.community).order_by(col(ContactCommunity.community))
    ):
        communities.setdefault(contact_id, []).append(community)
    tags: dict[int, list[str]] = {}
    for contact_id, tag in session.exec(select(ContactTag.contact_id, ContactTag.tag).order_by(col(ContactTag.tag))):
        tags.setdefault(contact_id, []).append(tag)
    views = []
    for contact, owner_email in rows:
        if contact.id is None:
            continue
        views.append(
            ContactView(
                id=contact.id,
                email=contact.email,
                first_name=contact.first_name,
                last_name=contact.last_name,
                phone=contact.phone,
                language=contact.language,
                communities=tuple(communities.get(contact.id, ())),
                tags=tuple(tags.get(contact.id, ())),
                owner=owner_email,
                email_opt_out=contact.email_opt_out,
                do_not_call=contact.do_not_call,
            )
        )
    return views
