"""Calls in the ledger: each call step gets its slot in the assignee's calendar, and follows what happens to the step.

The plan operations change steps (release, reassign, reschedule, skip, cancel, complete); :func:`sync_calls` brings the
calls in line with their steps, in the caller's transaction, whichever operation or process made the change. A call
whose calendar entry must change is marked ``invite_pending``: the invite sender (:mod:`engage.invites`) tells the
calendars concerned once the change is committed. No SMTP and no Prefect in here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, true
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from engage.plans import template_spec
from engage.settings import get_settings
from engage.slots import CallRequest, Slot, SlotBook, WorkingHours
from engage.timerules import is_day_off, local_day
from models import Call, Contact, Plan, PlanStatus, PlanStep, PlanTemplate, Staff, StepKind, StepStatus, id_of

__all__ = ["CallSync", "call_uid", "sync_calls", "working_hours"]

#: Statuses of a call step whose call belongs in a calendar: its date is known and nobody finished it.
LIVE_STATUSES = (StepStatus.SCHEDULED, StepStatus.RUNNING, StepStatus.OPEN)
#: Statuses of a call step whose call leaves the calendar.
GONE_STATUSES = (StepStatus.SKIPPED, StepStatus.CANCELLED)


@dataclass
class CallSync:
    """What one sync changed, in counts (Prefect keeps these)."""

    created: int = 0
    moved: int = 0
    cancelled: int = 0
    completed: int = 0

    @property
    def invites_pending(self) -> int:
        return self.created + self.moved + self.cancelled

    def as_dict(self) -> dict[str, int]:
        return {"created": self.created, "moved": self.moved, "cancelled": self.cancelled, "completed": self.completed}


def call_uid(step_id: int) -> str:
    """The iCalendar UID of a call step's call: stable for its life, unique across organisations."""
    domain = get_settings().organisation_email.rpartition("@")[2] or "engage.local"
    return f"engage-call-{step_id}@{domain}"


def working_hours(staff: Staff) -> WorkingHours:
    """A staff member's working hours, as the slot rules take them."""
    return WorkingHours.of(
        timezone=staff.timezone, work_days=staff.work_days, start=staff.work_start, end=staff.work_end
    )


@dataclass
class _Placement:
    step: PlanStep
    call: Call | None
    template: PlanTemplate
    assignee_id: int


def _needs_sync() -> Any:
    """Call steps whose call is missing, or no longer matches its step."""
    missing = and_(
        col(Call.id).is_(None),
        col(PlanStep.status).in_(LIVE_STATUSES),
        col(PlanStep.due_at).is_not(None),
        col(Plan.status) == PlanStatus.ACTIVE,
        col(Contact.do_not_call).is_(False),
        col(Contact.erased_at).is_(None),
    )
    stale = and_(
        col(Call.id).is_not(None),
        col(Call.cancelled_at).is_(None),
        col(Call.completed_at).is_(None),
        or_(
            col(PlanStep.status).in_((StepStatus.DONE, *GONE_STATUSES)),
            col(Plan.status) != PlanStatus.ACTIVE,
            col(PlanStep.assignee_id) != col(Call.assignee_id),
            col(PlanStep.due_at) != col(Call.due_at),
        ),
    )
    return or_(missing, stale)


def sync_calls(*, session: Session, now: datetime, step_ids: Iterable[int] | None = None) -> CallSync:
    """Create the calls of call steps that got their date, and update those whose step changed since.

    A new call takes the first free slot of the assignee's working hours on its due date (or the next working day);
    a reassigned or rescheduled one moves to a new slot; a skipped or cancelled step cancels its call; a done step
    completes it with the step's outcome. Every change but completion marks the call `invite_pending`. Reads the
    assignees' calls once for the whole batch. Pass ``step_ids`` to look only at those steps.
    """
    query = (
        select(PlanStep, Call, Plan, PlanTemplate)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .join(PlanTemplate, col(PlanTemplate.id) == Plan.template_id)
        .outerjoin(Call, col(Call.plan_step_id) == PlanStep.id)
        .where(col(PlanStep.kind) == StepKind.CALL, _needs_sync())
        .order_by(col(PlanStep.due_at), col(PlanStep.id))
    )
    if step_ids is not None:
        ids = list(step_ids)
        if not ids:
            return CallSync()
        query = query.where(col(PlanStep.id).in_(ids))
    result = CallSync()
    placements: list[_Placement] = []
    for step, call, plan, template in session.exec(query).all():
        if call is not None and step.status == StepStatus.DONE:
            call.completed_at = step.completed_at or now
            call.outcome = step.outcome
            session.add(call)
            result.completed += 1
        elif call is not None and (step.status in GONE_STATUSES or plan.status != PlanStatus.ACTIVE):
            call.cancelled_at = now
            call.sequence += 1
            call.invite_pending = True
            session.add(call)
            result.cancelled += 1
        else:
            assignee_id = step.assignee_id or (call.assignee_id if call else None) or plan.applied_by_id
            if assignee_id is not None:
                placements.append(_Placement(step, call, template, assignee_id))
    if placements:
        _place(session, placements, now, result)
    session.flush()
    return result


def _place(session: Session, placements: list[_Placement], now: datetime, result: CallSync) -> None:
    """Give each placement a slot: one query for the assignees, one for the calls already in their calendars."""
    assignee_ids = sorted({p.assignee_id for p in placements})
    staff = {id_of(s): s for s in session.exec(select(Staff).where(col(Staff.id).in_(assignee_ids)))}
    moving = {id_of(p.call) for p in placements if p.call is not None}
    earliest = min(max(p.step.due_at or now, now) for p in placements)
    existing = aliased(Call)
    busy = session.exec(
        select(existing).where(
            col(existing.assignee_id).in_(assignee_ids),
            col(existing.cancelled_at).is_(None),
            col(existing.completed_at).is_(None),
            col(existing.slot_end) > earliest,
            col(existing.id).not_in(moving) if moving else true(),
        )
    ).all()
    taken: dict[int, list[Slot]] = defaultdict(list)
    for other in busy:
        taken[other.assignee_id].append(Slot(other.slot_start, other.slot_end))
    books = {staff_id: SlotBook(working_hours(member), taken[staff_id]) for staff_id, member in staff.items()}
    for placement in placements:
        step, call = placement.step, placement.call
        book = books.get(placement.assignee_id)
        if book is None or step.due_at is None:
            continue
        spec = template_spec(placement.template)
        rules = spec.calendar_rules()
        not_before = max(step.due_at, now)
        day = max(local_day(step.due_at, rules), book.hours.local_day(not_before))
        slot = book.place(
            CallRequest(day=day, not_before=not_before),
            spec.call_slot_minutes,
            # The template's days off (weekends, public holidays) hold no call, whatever the staff member's days.
            day_off=lambda d, rules=rules: is_day_off(d, rules),  # type: ignore[misc]
        )
        if call is None:
            session.add(
                Call(
                    plan_step_id=id_of(step),
                    assignee_id=placement.assignee_id,
                    slot_start=slot.start,
                    slot_end=slot.end,
                    uid=call_uid(id_of(step)),
                    due_at=step.due_at,
                    invite_pending=True,
                    created_at=now,
                )
            )
            result.created += 1
        else:
            call.assignee_id = placement.assignee_id
            call.slot_start, call.slot_end = slot.start, slot.end
            call.due_at = step.due_at
            call.sequence += 1
            call.invite_pending = True
            session.add(call)
            result.moved += 1
