"""Factories for ledger rows: real rows in the real database, with defaults a test can override."""

from __future__ import annotations

import itertools
from typing import Any

from sqlmodel import Session

from models import Contact, Staff

_counter = itertools.count(1)


def create_staff(session: Session, **overrides: Any) -> Staff:
    n = next(_counter)
    values: dict[str, Any] = {"email": f"staff{n}@nmh.example.org", "name": f"Staff Member {n}"}
    values.update(overrides)
    staff = Staff(**values)
    session.add(staff)
    session.flush()
    return staff


def create_contact(session: Session, **overrides: Any) -> Contact:
    n = next(_counter)
    email = overrides.pop("email", f"contact{n}@example.org")
    values: dict[str, Any] = {"email": email, "email_key": email.lower(), "first_name": f"Contact{n}", "language": "fr"}
    values.update(overrides)
    contact = Contact(**values)
    session.add(contact)
    session.flush()
    return contact
