"""What staff do to plans and steps, in the caller's transaction: complete, skip, resolve, reassign, reschedule,
comment, follow up, cancel, retry.

Each operation that changes steps owns what follows: a step finishes through the step lifecycle
(:class:`~engage.plans.lifecycle.StepFinisher`), and the calls of the steps changed or released are brought in line
(:func:`~engage.plans.calls.sync_calls`) in the same transaction, so their invites are pending when it commits.
:mod:`engage.plans.operations` runs each in a transaction of its own and sends those invites once it is committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, func, select

from engage.errors import EngageError, InvalidStateError, NotFoundError
from engage.plan_templates.store import plan_spec
from engage.plans.calls import sync_calls
from engage.plans.lifecycle import StepFinisher, StepRow
from engage.plans.queries import get_plan, get_step, plan_steps
from engage.rules.due import CalendarRules, independent_due_at
from engage.staff import get_staff
from models import (
    FINAL_STATUSES,
    Delivery,
    DeliveryState,
    Plan,
    PlanStatus,
    PlanStep,
    Staff,
    StepComment,
    StepKind,
    StepStatus,
    id_of,
)


def _step_to_change(session: Session, step_id: int) -> PlanStep:
    """The step as the database has it now, locked until the transaction ends (PostgreSQL; SQLite has one writer).

    Two staff members acting on one task at once take turns: the second sees what the first did.
    """
    step = session.get(PlanStep, step_id, with_for_update=True, populate_existing=True)
    if step is None:
        raise NotFoundError(f"no task {step_id}")
    return step


def _follow_calls(session: Session, now: datetime, step_ids: Iterable[int | None]) -> None:
    """Bring the calls of these steps in line with them: their invites are pending once the transaction commits."""
    sync_calls(session=session, now=now, step_ids=[step_id for step_id in step_ids if step_id is not None])


def _finish(session: Session, step: PlanStep, status: StepStatus, now: datetime, **details: Any) -> list[StepRow]:
    """Finish a step through the lifecycle, and bring the calls of the step and of the steps released in line."""
    plan = session.get(Plan, step.plan_id, populate_existing=True)
    if plan is None:  # a foreign key makes this impossible short of a broken database
        raise NotFoundError(f"no plan {step.plan_id}")
    released = StepFinisher(session=session, plans=[plan]).finish(step, status, now, **details)
    _follow_calls(session, now, [step.id, *(row.id for row in released)])
    return released


def cancel_plan(*, session: Session, plan_id: int, reason: str, now: datetime) -> list[PlanStep]:
    """Cancel a plan and every step not yet finished (their calls leave the calendars); returns the steps cancelled."""
    plan = get_plan(session=session, plan_id=plan_id)
    if plan.status != PlanStatus.ACTIVE:
        raise InvalidStateError(f"plan {plan_id} is {plan.status}, not active")
    if not reason.strip():
        raise EngageError("say why the plan is cancelled (--reason TEXT)")
    plan.status = PlanStatus.CANCELLED
    plan.cancelled_at = now
    plan.cancel_reason = reason.strip()
    session.add(plan)
    cancelled = []
    for step in plan_steps(session=session, plan_id=plan_id):
        if step.status not in FINAL_STATUSES:
            step.status = StepStatus.CANCELLED
            step.skip_reason = f"plan cancelled: {plan.cancel_reason}"
            step.lease_until = None
            step.updated_at = now
            session.add(step)
            cancelled.append(step)
    _follow_calls(session, now, (step.id for step in cancelled))
    return cancelled


def complete_task(
    *, session: Session, step_id: int, now: datetime, outcome: str | None = None, by: Staff | None = None
) -> list[StepRow]:
    """Record that staff did a call or task step; release the next steps. Returns the released steps."""
    step = _step_to_change(session, step_id)
    if step.kind == StepKind.EMAIL:
        raise InvalidStateError(
            f"task {step_id} is an email step: it completes when the email is sent (skip it with engage tasks skip)"
        )
    if step.status in FINAL_STATUSES:
        raise InvalidStateError(f"task {step_id} is already {step.status}")
    if step.status == StepStatus.WAITING:
        raise InvalidStateError(f"task {step_id} is still waiting for the step before it")
    return _finish(session, step, StepStatus.DONE, now, outcome=outcome, by=by)


def skip_task(*, session: Session, step_id: int, reason: str, now: datetime, by: Staff | None = None) -> list[StepRow]:
    """Give up on a step (with a reason) and release its dependents. Returns the released steps."""
    step = _step_to_change(session, step_id)
    if not reason.strip():
        raise EngageError("say why the task is skipped (--reason TEXT)")
    if step.status in FINAL_STATUSES:
        raise InvalidStateError(f"task {step_id} is already {step.status}")
    return _finish(session, step, StepStatus.SKIPPED, now, reason=reason.strip(), by=by)


def reassign_task(*, session: Session, step_id: int, email: str, now: datetime) -> tuple[PlanStep, Staff | None]:
    """Give a step to another active staff member (its call moves to their calendar); returns (step, previous)."""
    step = _step_to_change(session, step_id)
    if step.status in FINAL_STATUSES:
        raise InvalidStateError(f"task {step_id} is already {step.status}")
    new = get_staff(session=session, email=email, active_only=True)
    previous = session.get(Staff, step.assignee_id) if step.assignee_id else None
    step.assignee_id = new.id
    step.assignee_fallback = False
    step.updated_at = now
    session.add(step)
    _follow_calls(session, now, [step.id])
    return step, previous


def reschedule_task(*, session: Session, step_id: int, on: date, now: datetime) -> PlanStep:
    """Move a step with a real date to another day (the start of that day's send window or working hours)."""
    step = _step_to_change(session, step_id)
    if step.status == StepStatus.WAITING:
        raise InvalidStateError(f"task {step_id} is waiting for the step before it: its date is not known yet")
    if step.status not in (StepStatus.SCHEDULED, StepStatus.OPEN, StepStatus.FAILED):
        raise InvalidStateError(f"task {step_id} is {step.status}: only scheduled, open or failed tasks move")
    rules = plan_spec(session=session, plan=get_plan(session=session, plan_id=step.plan_id)).calendar_rules()
    due = independent_due_at(on, 0, rules) if step.kind == StepKind.EMAIL else _start_of_day(on, rules)
    step.due_at = due
    if step.status == StepStatus.FAILED:
        step.status = StepStatus.SCHEDULED
    step.updated_at = now
    session.add(step)
    _follow_calls(session, now, [step.id])
    return step


def _start_of_day(on: date, rules: CalendarRules) -> datetime:
    """The start of the send window on ``on`` in the template's time zone, in UTC."""
    return datetime.combine(on, rules.send_window_start, tzinfo=ZoneInfo(rules.timezone)).astimezone(UTC)


def comment_task(*, session: Session, step_id: int, text: str, by: Staff | None, now: datetime) -> StepComment:
    """Leave a note on a step."""
    step = get_step(session=session, step_id=step_id)
    if not text.strip():
        raise EngageError("a comment needs some text")
    comment = StepComment(plan_step_id=id_of(step), author_id=by.id if by else None, text=text.strip(), created_at=now)
    session.add(comment)
    session.flush()
    return comment


def add_follow_up(*, session: Session, step_id: int, on: date, subject: str, by: Staff, now: datetime) -> PlanStep:
    """Add a new open task to the plan of ``step_id``, due on ``on``, assigned like that step."""
    step = get_step(session=session, step_id=step_id)
    plan = get_plan(session=session, plan_id=step.plan_id)
    if plan.status == PlanStatus.CANCELLED:
        raise InvalidStateError(f"plan {plan.id} is cancelled")
    if not subject.strip():
        raise EngageError("a follow-up needs a subject (--subject TEXT)")
    count = session.exec(
        select(func.count())
        .select_from(PlanStep)
        .where(PlanStep.plan_id == plan.id, col(PlanStep.step_key).startswith("follow-up-"))
    ).one()
    rules = plan_spec(session=session, plan=plan).calendar_rules()
    last_position = max((s.position for s in plan_steps(session=session, plan_id=id_of(plan))), default=0)
    follow_up = PlanStep(
        plan_id=id_of(plan),
        step_key=f"follow-up-{count + 1}",
        name=subject.strip(),
        kind=StepKind.TASK,
        position=last_position + 1,
        status=StepStatus.OPEN,
        due_at=_start_of_day(on, rules),
        assignee_id=step.assignee_id or by.id,
        released_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(follow_up)
    if plan.status == PlanStatus.COMPLETED:
        plan.status = PlanStatus.ACTIVE
        plan.completed_at = None
        session.add(plan)
    session.flush()
    _follow_calls(session, now, [follow_up.id])
    return follow_up


def retry_steps(
    *,
    session: Session,
    now: datetime,
    step_ids: Sequence[int] = (),
    flow_run_id: str | None = None,
    all_failed: bool = False,
) -> list[PlanStep]:
    """Put failed steps back on the schedule, due now: those named, those a run failed, or every retryable one.

    A step named by id is retried even when it was refused for good (staff know best, e.g. after fixing an
    address); the other ways take only steps whose retries ran out. Steps in doubt (`unknown`) are never retried
    here: staff say first whether they went out (`engage tasks resolve`).
    """
    query = select(PlanStep).where(PlanStep.status == StepStatus.FAILED)
    if step_ids:
        query = query.where(col(PlanStep.id).in_(list(step_ids)))
    elif flow_run_id is not None:
        query = query.where(PlanStep.flow_run_id == flow_run_id, col(PlanStep.retryable).is_(True))
    elif all_failed:
        query = query.where(col(PlanStep.retryable).is_(True))
    else:
        raise EngageError("say which steps to retry: step ids, a flow run, or all failed steps")
    steps = list(session.exec(query.order_by(col(PlanStep.id))))
    if step_ids:
        found = {s.id for s in steps}
        for step_id in step_ids:
            if step_id not in found:
                status = get_step(session=session, step_id=step_id).status
                raise InvalidStateError(f"task {step_id} is {status}, not failed: nothing to retry")
    for step in steps:
        step.status = StepStatus.SCHEDULED
        step.due_at = now
        step.retryable = False
        step.completed_at = None
        step.updated_at = now
        session.add(step)
    _follow_calls(session, now, (step.id for step in steps))
    return steps


def resolve_unknown(
    *, session: Session, step_id: int, went_out: bool, now: datetime, by: Staff | None = None
) -> list[StepRow]:
    """Staff say whether a send in doubt went out: `sent` records it and releases the next step, or send again.

    Returns the steps released (none when the step is to be sent again).
    """
    step = _step_to_change(session, step_id)
    if step.status != StepStatus.UNKNOWN:
        raise InvalidStateError(f"task {step_id} is {step.status}, not unknown: nothing to resolve")
    doubtful = session.exec(
        select(Delivery).where(Delivery.plan_step_id == step_id, Delivery.state == DeliveryState.UNKNOWN)
    ).all()
    if went_out:
        for delivery in doubtful:
            delivery.state = DeliveryState.SENT
            delivery.sent_at = delivery.sent_at or now
            delivery.smtp_response = (delivery.smtp_response or "") + " (confirmed by staff)"
            session.add(delivery)
        return _finish(session, step, StepStatus.DONE, now, by=by, outcome="sent (confirmed by staff after a crash)")
    # The delivery in doubt stays `unknown` for the record; the next attempt is a new delivery (sequence + 1).
    step.status = StepStatus.SCHEDULED
    step.due_at = now
    step.lease_until = None
    step.claimed_by = None
    step.updated_at = now
    session.add(step)
    _follow_calls(session, now, [step.id])
    return []
