"""Factories: real ledger rows in the real database, and attendee files as tools export them; defaults a test can
override."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from models import Contact, Plan, Staff

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


WORKSHOP_DAY = date(2026, 11, 20)  # a Friday: the worked example of the README
ENROLLED_AT = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)  # the evening of the workshop


def apply_seed_plans(
    session: Session,
    contacts: Iterable[dict[str, Any]],
    *,
    applier: Staff,
    template: str = "volunteer-followup",
    workshop: str = "Atelier Lyon",
    place: str | None = "Lyon 1er",
) -> list[Plan]:
    """Give new contacts a seed template's plan for a workshop of Friday 20 November 2026; committed."""
    from engage import plans
    from engage.plan_templates.store import current_template

    found, _ = plans.get_or_create_workshop(session=session, name=workshop, on=WORKSHOP_DAY, place=place)
    version = current_template(session=session, key=template)
    requests = [(create_contact(session, **fields), version) for fields in contacts]
    applied = plans.apply_templates(
        session=session,
        requests=requests,
        enrollment_key=found.enrollment_key,
        started_on=WORKSHOP_DAY,
        applied_by=applier,
        workshop_id=found.id,
        now=ENROLLED_AT,
    )
    created = [plans.get_plan(session=session, plan_id=plan.plan_id) for plan in applied]
    session.commit()
    return created


def write_csv(
    folder: Path,
    rows: list[list[str]],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    name: str = "attendees.csv",
) -> Path:
    """Write rows as a spreadsheet would export them (CRLF, minimal quoting) and return the file."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    path = folder / name
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path
