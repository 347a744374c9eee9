"""Calls in the ledger: each call step gets its slot in the assignee's calendar, and follows what happens to the step.

The plan operations change steps (release, reassign, reschedule, skip, cancel, complete); :func:`sync_calls` brings the
calls in line with their steps, in the caller's transaction, whichever operation or process made the change. A call
whose calendar entry must change is marked ``invite_pending``: the invite sender (:mod:`engage.invites`) tells the
calendars concerned once the change is committed. No SMTP and no Prefect in here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from engage.plan_templates.store import template_spec
from engage.rules.due import is_day_off, local_day
from engage.rules.slots import CallRequest, Slot, SlotBook, WorkingHours
from engage.settings import get_settings
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


#: How many call steps a sync loads at a time: its memory stays the same however many calls it covers.
CHUNK = 500


def _assignee() -> Any:
    """Who a call step's call goes to: the step's assignee, else the call's, else whoever applied the plan."""
    return func.coalesce(col(PlanStep.assignee_id), col(Call.assignee_id), col(Plan.applied_by_id))


def _selected(query: Any, step_ids: list[int] | None) -> Any:
    """The call steps a sync looks at (those needing one, among ``step_ids`` when given), with their rows joined."""
    query = (
        query.join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .join(PlanTemplate, col(PlanTemplate.id) == Plan.template_id)
        .outerjoin(Call, col(Call.plan_step_id) == PlanStep.id)
        .where(col(PlanStep.kind) == StepKind.CALL, _needs_sync())
    )
    return query if step_ids is None else query.where(col(PlanStep.id).in_(step_ids))


def sync_calls(
    *, session: Session, now: datetime, step_ids: Iterable[int] | None = None, chunk: int = CHUNK
) -> CallSync:
    """Create the calls of call steps that got their date, and update those whose step changed since.

    A new call takes the first free slot of the assignee's working hours on its due date (or the next working day);
    a reassigned or rescheduled one moves to a new slot; a skipped or cancelled step cancels its call; a done step
    completes it with the step's outcome. Every change but completion marks the call `invite_pending`. Pass
    ``step_ids`` to look only at those steps.

    Memory stays flat however many calls need a sync: the steps are read as ids, one assignee after another (each
    assignee's in due order), then ``chunk`` at a time, each chunk flushed and let go of; an assignee's calendar is
    read once, when their first call is placed, and let go of when the next assignee's calls begin.
    """
    ids = None if step_ids is None else list(step_ids)
    if ids is not None and not ids:
        return CallSync()
    order = (_assignee(), col(PlanStep.due_at), col(PlanStep.id))
    todo: list[int] = list(session.exec(_selected(select(PlanStep.id), ids).order_by(*order)).all())
    # What the caller already holds in the session stays there; what a chunk loads or creates is let go of.
    callers = {id(obj) for obj in session}
    result = CallSync()
    books = _Books(session, ids)
    for start in range(0, len(todo), chunk):
        query = select(PlanStep, Call, Plan, PlanTemplate)
        rows = session.exec(
            _selected(query, ids).where(col(PlanStep.id).in_(todo[start : start + chunk])).order_by(*order)
        )
        loaded: list[Any] = []
        for step, call, plan, template in rows.all():
            loaded += [step, plan] if call is None else [step, call, plan]
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
                if assignee_id is not None and step.due_at is not None:
                    book = books.of(assignee_id, not_before=max(step.due_at, now))
                    if book is not None:
                        created = _place(session, book, _Placement(step, call, template, assignee_id), now, result)
                        if created is not None:
                            loaded.append(created)
        session.flush()
        for obj in {id(obj): obj for obj in loaded}.values():
            if id(obj) not in callers:
                session.expunge(obj)
    session.flush()
    return result


class _Books:
    """The slot book of the assignee whose calls are being placed, read from the ledger on their first call."""

    def __init__(self, session: Session, step_ids: list[int] | None) -> None:
        self.session = session
        self.step_ids = step_ids
        self.assignee_id: int | None = None
        self.book: SlotBook | None = None

    def of(self, assignee_id: int, *, not_before: datetime) -> SlotBook | None:
        """The assignee's book (None when they are not on the staff); ``not_before`` is their first call's."""
        if assignee_id != self.assignee_id:
            # Steps come one assignee after another: the previous assignee's book is done with.
            self.assignee_id, self.book = assignee_id, self._read(assignee_id, not_before)
        return self.book

    def _read(self, assignee_id: int, not_before: datetime) -> SlotBook | None:
        session = self.session
        member = session.exec(
            select(col(Staff.timezone), col(Staff.work_days), col(Staff.work_start), col(Staff.work_end)).where(
                col(Staff.id) == assignee_id
            )
        ).first()
        if member is None:
            return None
        timezone, work_days, start, end = member
        existing = aliased(Call)
        # A call this sync still has to complete, cancel or move holds no slot: its step is still selected. Calls
        # an earlier chunk placed are flushed, so the query sees them where they are now.
        still_selected = _selected(select(PlanStep.id), self.step_ids).where(col(Call.id) == existing.id)
        busy = session.exec(
            select(existing.slot_start, existing.slot_end).where(
                col(existing.assignee_id) == assignee_id,
                col(existing.cancelled_at).is_(None),
                col(existing.completed_at).is_(None),
                # The assignee's calls are placed in due order: a slot over before the first cannot clash.
                col(existing.slot_end) > not_before,
                ~exists(still_selected),
            )
        ).all()
        hours = WorkingHours.of(timezone=timezone, work_days=work_days, start=start, end=end)
        return SlotBook(hours, (Slot(slot_start, slot_end) for slot_start, slot_end in busy))


def _place(session: Session, book: SlotBook, placement: _Placement, now: datetime, result: CallSync) -> Call | None:
    """Give a call step's call the first free slot of its assignee's book; returns the call when it is new."""
    step, call = placement.step, placement.call
    assert step.due_at is not None
    spec = template_spec(placement.template)
    rules = spec.calendar_rules()
    not_before = max(step.due_at, now)
    day = max(local_day(step.due_at, rules), book.hours.local_day(not_before))
    slot = book.place(
        CallRequest(day=day, not_before=not_before),
        spec.call_slot_minutes,
        # The template's days off (weekends, public holidays) hold no call, whatever the staff member's days.
        day_off=lambda d: is_day_off(d, rules),
    )
    if call is None:
        created = Call(
            plan_step_id=id_of(step),
            assignee_id=placement.assignee_id,
            slot_start=slot.start,
            slot_end=slot.end,
            uid=call_uid(id_of(step)),
            due_at=step.due_at,
            invite_pending=True,
            created_at=now,
        )
        session.add(created)
        result.created += 1
        return created
    call.assignee_id = placement.assignee_id
    call.slot_start, call.slot_end = slot.start, slot.end
    call.due_at = step.due_at
    call.sequence += 1
    call.invite_pending = True
    session.add(call)
    result.moved += 1
    return None
