"""Workshops: the events plans follow up."""

from __future__ import annotations

from datetime import date

from sqlmodel import Session, col, select

from engage.errors import EngageError, NotFoundError
from models import (
    Workshop,
)


def get_or_create_workshop(
    *,
    session: Session,
    name: str,
    on: date,
    place: str | None = None,
    template_key: str | None = None,
    source: str | None = None,
) -> tuple[Workshop, bool]:
    """The workshop of this name on this date, created when new; (workshop, created)."""
    name = name.strip()
    if not name:
        raise EngageError("a workshop needs a name")
    workshop = session.exec(select(Workshop).where(Workshop.name == name, Workshop.date == on)).first()
    if workshop is not None:
        if place and not workshop.place:
            workshop.place = place
            session.add(workshop)
        return workshop, False
    workshop = Workshop(name=name, date=on, place=place, template_key=template_key, source=source)
    session.add(workshop)
    session.flush()
    return workshop, True


def find_workshop(*, session: Session, name: str, on: date | None = None) -> Workshop:
    """The workshop called ``name`` (on ``on`` when given; the most recent otherwise)."""
    query = select(Workshop).where(Workshop.name == name.strip())
    if on is not None:
        query = query.where(Workshop.date == on)
    workshop = session.exec(query.order_by(col(Workshop.date).desc())).first()
    if workshop is None:
        raise NotFoundError(f"no workshop named {name!r}" + (f" on {on}" if on else ""))
    return workshop
