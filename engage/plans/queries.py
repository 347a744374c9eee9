"""Reading plans and steps: one plan, a plan's steps, plans with their progress, staff's task lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from engage.errors import EngageError, NotFoundError
from engage.staff import get_staff
from models import (
    FINAL_STATUSES,
    Call,
    Contact,
    Plan,
    PlanStatus,
    PlanStep,
    Staff,
    StepKind,
    StepStatus,
    Workshop,
)

#: Statuses of steps a person may still act on (their date is real, they are not finished).
ACTIONABLE_STATUSES = (
    StepStatus.SCHEDULED,
    StepStatus.RUNNING,
    StepStatus.OPEN,
    StepStatus.FAILED,
    StepStatus.UNKNOWN,
)


def get_plan(*, session: Session, plan_id: int) -> Plan:
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise NotFoundError(f"no plan {plan_id}")
    return plan


def plan_steps(*, session: Session, plan_id: int) -> list[PlanStep]:
    return list(session.exec(select(PlanStep).where(PlanStep.plan_id == plan_id).order_by(col(PlanStep.position))))


@dataclass(frozen=True)
class PlanRow:
    plan: Plan
    contact: Contact
    workshop: Workshop | None
    done: int
    total: int


def list_plans(
    *, session: Session, workshop: str | None = None, status: str | None = None, template: str | None = None
) -> list[PlanRow]:
    """Plans with their contact, workshop and progress, newest first."""
    progress = (
        select(
            PlanStep.plan_id,
            func.count().label("total"),
            func.sum(case((col(PlanStep.status).in_([s.value for s in FINAL_STATUSES]), 1), else_=0)).label("done"),
        )
        .group_by(col(PlanStep.plan_id))
        .subquery()
    )
    query = (
        sa_select(Plan, Contact, Workshop, progress.c.done, progress.c.total)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
        .outerjoin(progress, progress.c.plan_id == Plan.id)
        .order_by(col(Plan.id).desc())
    )
    if workshop:
        query = query.where(col(Workshop.name) == workshop)
    if status:
        _check_choice("status", status, [s.value for s in PlanStatus])
        query = query.where(col(Plan.status) == status)
    if template:
        query = query.where(col(Plan.template_key) == template)
    return [
        PlanRow(plan=plan, contact=contact, workshop=ws, done=int(done or 0), total=int(total or 0))
        for plan, contact, ws, done, total in session.execute(query)
    ]


def get_step(*, session: Session, step_id: int) -> PlanStep:
    step = session.get(PlanStep, step_id)
    if step is None:
        raise NotFoundError(f"no task {step_id}")
    return step


@dataclass(frozen=True)
class TaskRow:
    step: PlanStep
    plan: Plan
    contact: Contact
    assignee: Staff | None
    overdue: bool
    call: Call | None = None
    """A call step's call, with its slot in the assignee's calendar (none once cancelled, or not placed yet)."""


def list_tasks(
    *,
    session: Session,
    now: datetime,
    assignee: str | None = None,
    overdue: bool = False,
    upcoming_days: int | None = None,
    kinds: Sequence[str] = (),
    statuses: Sequence[str] = (),
    plan_id: int | None = None,
    flow_run_id: str | None = None,
) -> list[TaskRow]:
    """Steps whose date is real and that are not finished, soonest first (NPSP's upcoming and overdue tasks).

    Steps still waiting for their parent are left out: their date is not known yet.
    """
    assignee_alias = aliased(Staff)
    query = (
        sa_select(PlanStep, Plan, Contact, assignee_alias, Call)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .outerjoin(assignee_alias, col(assignee_alias.id) == PlanStep.assignee_id)
        .outerjoin(Call, and_(col(Call.plan_step_id) == PlanStep.id, col(Call.cancelled_at).is_(None)))
        .order_by(col(PlanStep.due_at), col(PlanStep.id))
    )
    wanted = list(statuses) or [status.value for status in ACTIONABLE_STATUSES]
    for status in wanted:
        _check_choice("status", status, [s.value for s in StepStatus])
    query = query.where(col(PlanStep.status).in_(wanted))
    if assignee:
        staff = get_staff(session=session, email=assignee)
        query = query.where(col(PlanStep.assignee_id) == staff.id)
    if kinds:
        for kind in kinds:
            _check_choice("kind", kind, [k.value for k in StepKind])
        query = query.where(col(PlanStep.kind).in_(list(kinds)))
    if plan_id is not None:
        query = query.where(col(PlanStep.plan_id) == plan_id)
    if flow_run_id is not None:
        query = query.where(col(PlanStep.flow_run_id) == flow_run_id)
    if overdue:
        query = query.where(col(PlanStep.due_at) < now)
    if upcoming_days is not None:
        if upcoming_days < 0:
            raise EngageError("--upcoming takes a number of days >= 0")
        query = query.where(col(PlanStep.due_at) >= now, col(PlanStep.due_at) < now + timedelta(days=upcoming_days))
    return [
        TaskRow(
            step=step,
            plan=plan,
            contact=contact,
            assignee=staff,
            overdue=step.due_at is not None and step.due_at < now and step.status != StepStatus.RUNNING,
            call=call,
        )
        for step, plan, contact, staff, call in session.execute(query)
    ]


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise EngageError(f"{name} {value!r} is not one of: {', '.join(choices)}")
