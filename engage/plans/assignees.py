"""Who a step goes to: the template's assignee rule turned into a staff member."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from models import (
    Contact,
    Staff,
)


@dataclass
class AssigneeResolver:
    """Turns a template's assignee rule into a staff member, remembering look-ups across one enrollment."""

    session: Session
    applied_by: Staff
    _by_email: dict[str, Staff | None]
    _by_id: dict[int, Staff | None]

    @classmethod
    def for_applier(cls, session: Session, applied_by: Staff) -> AssigneeResolver:
        return cls(session, applied_by, {}, {})

    def resolve(self, rule: str, contact: Contact) -> tuple[Staff, bool]:
        """(assignee, fell back): owner -> record owner, applier -> who applied, else a staff email."""
        if rule == "applier":
            return self.applied_by, False
        if rule == "owner":
            owner = self._staff_by_id(contact.owner_id) if contact.owner_id else None
        else:
            owner = self._staff_by_email(rule)
        if owner is None or not owner.active:
            return self.applied_by, True
        return owner, False

    def _staff_by_id(self, staff_id: int) -> Staff | None:
        if staff_id not in self._by_id:
            self._by_id[staff_id] = self.session.get(Staff, staff_id)
        return self._by_id[staff_id]

    def _staff_by_email(self, email: str) -> Staff | None:
        key = email.strip().lower()
        if key not in self._by_email:
            self._by_email[key] = self.session.exec(select(Staff).where(Staff.email == key)).first()
        return self._by_email[key]
