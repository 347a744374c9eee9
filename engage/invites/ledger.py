"""Reading what invites tell from the ledger, in a few queries whatever the number of calls."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from engage.invites.brief import CallBrief, Note, Person, StepLine
from engage.plan_templates.store import template_spec
from models import (
    Call,
    Contact,
    Plan,
    PlanStep,
    PlanTemplate,
    Staff,
    StepComment,
    Workshop,
    id_of,
)


def _person(staff: Staff) -> Person:
    return Person(email=staff.email, name=staff.name, language=staff.language, timezone=staff.timezone)


def load_briefs(*, session: Session, call_ids: Iterable[int]) -> dict[int, CallBrief]:
    """What the invites of these calls tell, read in four queries whatever their number."""
    ids = list(call_ids)
    if not ids:
        return {}
    assignee = aliased(Staff)
    rows = session.execute(
        sa_select(Call, PlanStep, Plan, Contact, PlanTemplate, Workshop, assignee)
        .join(PlanStep, col(PlanStep.id) == Call.plan_step_id)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .join(PlanTemplate, col(PlanTemplate.id) == Plan.template_id)
        .join(assignee, col(assignee.id) == Call.assignee_id)
        .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
        .where(col(Call.id).in_(ids))
    ).all()
    plan_ids = sorted({plan.id for _, _, plan, *_ in rows if plan.id is not None})
    steps_by_plan: dict[int, list[PlanStep]] = defaultdict(list)
    for step in session.exec(
        select(PlanStep).where(col(PlanStep.plan_id).in_(plan_ids)).order_by(col(PlanStep.position))
    ):
        steps_by_plan[step.plan_id].append(step)
    step_names = {id_of(s): (s.plan_id, s.name) for steps in steps_by_plan.values() for s in steps}
    author = aliased(Staff)
    notes_by_plan: dict[int, list[Note]] = defaultdict(list)
    for comment, writer in session.exec(
        select(StepComment, author)
        .outerjoin(author, col(author.id) == StepComment.author_id)
        .where(col(StepComment.plan_step_id).in_(list(step_names)))
        .order_by(col(StepComment.created_at), col(StepComment.id))
    ):
        plan_id, step_name = step_names[comment.plan_step_id]
        name = writer.name if writer else None
        notes_by_plan[plan_id].append(Note(comment.created_at, name, step_name, comment.text))
    briefs = {}
    for call, step, plan, contact, template, workshop, staff in rows:
        spec = template_spec(template)
        try:
            description = spec.step(step.step_key).description
        except KeyError:  # a follow-up task added by staff is in no template
            description = None
        history = tuple(
            StepLine(
                name=other.name,
                kind=other.kind,
                status=other.status,
                when=other.completed_at or other.due_at,
                detail=other.outcome or other.skip_reason or (other.last_error if other.status != "done" else None),
            )
            for other in steps_by_plan[plan.id or 0]
            if other.id != step.id and (other.position < step.position or other.completed_at is not None)
        )
        briefs[id_of(call)] = CallBrief(
            call_id=id_of(call),
            step_id=id_of(step),
            uid=call.uid,
            slot_start=call.slot_start,
            slot_end=call.slot_end,
            sequence=call.sequence,
            cancelled=call.cancelled_at is not None,
            assignee=_person(staff),
            fallback=step.assignee_fallback,
            contact_name=contact.full_name or contact.email,
            contact_email=contact.email,
            contact_phone=contact.phone,
            contact_language=contact.language,
            plan_id=id_of(plan),
            template_name=spec.name,
            step_name=step.name,
            step_description=description,
            priority=step.priority,
            workshop_name=workshop.name if workshop else None,
            workshop_date=workshop.date if workshop else None,
            workshop_place=workshop.place if workshop else None,
            history=history,
            notes=tuple(notes_by_plan[plan.id or 0]),
        )
    return briefs
