"""A staff member leaves: their steps not yet finished and their contacts go to a colleague, their calls with them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, update

from engage.errors import EngageError
from engage.plans.calls import sync_calls
from engage.staff import get_staff
from models import FINAL_STATUSES, Contact, PlanStep


@dataclass(frozen=True)
class Handover:
    """What moved to the successor: their open tasks (steps not finished) and the contacts they owned, in counts."""

    tasks: int
    contacts: int


def deactivate_staff(*, session: Session, email: str, reassign_to: str, now: datetime) -> Handover:
    """Deactivate a staff member and move their open tasks and owned contacts to another, in the caller's transaction.

    A task is open until it is final (done, skipped, cancelled): waiting, scheduled, running, open, failed and unknown
    steps all move. Their calls move with them: a cancel for the one leaving, an invite for the one taking over, both
    pending once the transaction commits.
    """
    leaving = get_staff(session=session, email=email)
    successor = get_staff(session=session, email=reassign_to, active_only=True)
    if successor.id == leaving.id:
        raise EngageError("--reassign-to must name someone else")
    final = [status.value for status in FINAL_STATUSES]
    moved: Any = session.execute(
        update(PlanStep)
        .where(col(PlanStep.assignee_id) == leaving.id, col(PlanStep.status).not_in(final))
        .values(assignee_id=successor.id, assignee_fallback=False, updated_at=now)
        .returning(col(PlanStep.id))
    )
    step_ids = [int(step_id) for step_id in moved.scalars()]
    contacts: Any = session.execute(
        update(Contact).where(col(Contact.owner_id) == leaving.id).values(owner_id=successor.id, updated_at=now)
    )
    leaving.active = False
    session.add(leaving)
    sync_calls(session=session, now=now, step_ids=step_ids)
    return Handover(tasks=len(step_ids), contacts=int(contacts.rowcount or 0))
