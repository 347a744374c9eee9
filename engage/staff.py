"""Staff members: who acts, who owns contacts, who is assigned tasks.

Deactivating one hands their open tasks and contacts over: :mod:`engage.plans.handover`.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from engage.errors import EngageError, InvalidStateError, NotFoundError
from engage.rules.clock import parse_days, parse_hours, zone
from models import Staff
from models.staff import DEFAULT_WORK_DAYS


def normalise_staff_email(email: str) -> str:
    return email.strip().lower()


def get_staff(*, session: Session, email: str, active_only: bool = False) -> Staff:
    """The staff member with this email, or a NotFoundError that says how to add them."""
    staff = session.exec(select(Staff).where(Staff.email == normalise_staff_email(email))).first()
    if staff is None:
        raise NotFoundError(f"no staff member {email!r} (add them with: engage staff add {email} --name NAME)")
    if active_only and not staff.active:
        raise InvalidStateError(f"staff member {staff.email} is not active")
    return staff


def add_staff(
    *,
    session: Session,
    email: str,
    name: str,
    timezone: str = "Europe/Paris",
    language: str = "fr",
    hours: str = "09:00-17:00",
    days: str = DEFAULT_WORK_DAYS,
) -> tuple[Staff, bool]:
    """Add a staff member, or update the one with this email; returns (staff, created)."""
    start, end = parse_hours(hours)
    values: dict[str, Any] = {
        "name": name.strip(),
        "timezone": zone(timezone).key,
        "language": language.strip().lower(),
        "work_start": start,
        "work_end": end,
        "work_days": parse_days(days),
    }
    key = normalise_staff_email(email)
    if "@" not in key:
        raise EngageError(f"staff email {email!r} is not an email address")
    existing = session.exec(select(Staff).where(Staff.email == key)).first()
    if existing is not None:
        for field, value in values.items():
            setattr(existing, field, value)
        existing.active = True
        session.add(existing)
        return existing, False
    staff = Staff(email=key, **values)
    session.add(staff)
    session.flush()
    return staff, True


def list_staff(*, session: Session, include_inactive: bool = True) -> list[Staff]:
    query = select(Staff).order_by(col(Staff.active).desc(), col(Staff.email))
    if not include_inactive:
        query = query.where(col(Staff.active).is_(True))
    return list(session.exec(query))
