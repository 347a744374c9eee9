"""What a batch of claimed steps reads once and how its steps finish."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from engage.errors import NotFoundError
from engage.plans.lifecycle import StepFinisher, StepRow
from engage.runner.due import BatchOutcome, DueItem
from models import (
    Contact,
    Plan,
    PlanStatus,
    PlanStep,
    PlanTemplate,
    Staff,
    StepStatus,
    Workshop,
)


@dataclass
class _Loaded:
    step: PlanStep
    plan: Plan
    contact: Contact
    workshop: Workshop | None
    applier: Staff | None
    assignee: Staff | None
    template: PlanTemplate


def _load(session: Session, step_ids: Iterable[int], claimant: str) -> list[_Loaded]:
    """The steps of a batch that this claimant still holds, with everything their messages need."""
    from sqlalchemy.orm import aliased

    applier, assignee = aliased(Staff), aliased(Staff)
    # Templates are read apart, once each: joined, their JSON definition would be parsed again for every row.
    rows = session.execute(
        sa_select(PlanStep, Plan, Contact, Workshop, applier, assignee)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
        .outerjoin(applier, col(applier.id) == Plan.applied_by_id)
        .outerjoin(assignee, col(assignee.id) == PlanStep.assignee_id)
        .where(
            col(PlanStep.id).in_(list(step_ids)),
            col(PlanStep.status) == StepStatus.RUNNING,
            col(PlanStep.claimed_by) == claimant,
        )
        .order_by(col(PlanStep.id))
    ).all()
    templates: dict[int, PlanTemplate] = {}
    for template_id in sorted({plan.template_id for _, plan, *_ in rows}):
        template = session.get(PlanTemplate, template_id)
        if template is None:  # a foreign key makes this impossible short of a broken database
            raise NotFoundError(f"plan template version {template_id} is missing")
        templates[template_id] = template
    return [
        _Loaded(step, plan, contact, workshop, applied_by, assigned_to, templates[plan.template_id])
        for step, plan, contact, workshop, applied_by, assigned_to in rows
    ]


def _due_item(item: _Loaded, step: PlanStep | StepRow) -> DueItem:
    """The due time a step of ``item``'s plan now has (the step itself, or one it released)."""
    assert step.due_at is not None
    return DueItem(
        workshop_id=item.plan.workshop_id,
        workshop_name=item.workshop.name if item.workshop else None,
        workshop_date=item.workshop.date if item.workshop else None,
        template_key=item.plan.template_key,
        step_key=step.step_key,
        step_name=step.name,
        due_at=step.due_at,
    )


def _finish(
    finisher: StepFinisher, outcome: BatchOutcome, item: _Loaded, status: StepStatus, now: datetime, **kwargs: str
) -> None:
    released = finisher.finish(item.step, status, now, **kwargs)  # type: ignore[arg-type]
    outcome.released.extend(_due_item(item, s) for s in released)


def _cancel_if_plan_closed(session: Session, item: _Loaded, now: datetime) -> bool:
    if item.plan.status == PlanStatus.ACTIVE:
        return False
    item.step.status = StepStatus.CANCELLED
    item.step.skip_reason = f"plan {item.plan.status}"
    item.step.lease_until = None
    item.step.updated_at = now
    session.add(item.step)
    return True
