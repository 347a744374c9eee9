"""Applying a plan template to contacts: their plans and steps, in a few statements whatever their number.

:func:`apply_templates` is the one implementation, for one contact (:func:`apply_template`) as for a workshop's
thousands; the calls of the call steps it gives a date to are placed in the same transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from engage.errors import EngageError, NotFoundError
from engage.plan_templates.schema import PlanTemplateSpec
from engage.plan_templates.store import template_spec
from engage.plans.assignees import AssigneeResolver
from engage.plans.calls import sync_calls
from engage.rules.due import CalendarRules, independent_due_at
from engage.sql import insert_returning_ids
from models import (
    Contact,
    Plan,
    PlanStep,
    PlanTemplate,
    Staff,
    StepKind,
    StepStatus,
    id_of,
)


def _step_values(
    *,
    spec: PlanTemplateSpec,
    rules: CalendarRules,
    contact: Contact,
    started_on: date,
    now: datetime,
    assignees: AssigneeResolver,
    due_cache: dict[int, datetime] | None = None,
) -> list[dict[str, Any]]:
    """The column values of a new plan's steps, in template order (no plan id, no dependency ids yet)."""
    rows = []
    for position, step_spec in enumerate(spec.steps):
        assignee, fell_back = assignees.resolve(step_spec.assignee or spec.assignee, contact)
        independent = step_spec.depends_on is None
        due_at = None
        if independent:
            if due_cache is None or step_spec.days_after not in due_cache:
                due_at = independent_due_at(started_on, step_spec.days_after, rules)
                if due_cache is not None:
                    due_cache[step_spec.days_after] = due_at
            else:
                due_at = due_cache[step_spec.days_after]
        rows.append(
            {
                "step_key": step_spec.key,
                "name": step_spec.name,
                "kind": step_spec.kind,
                "position": position,
                "days_after": step_spec.days_after,
                "priority": step_spec.priority,
                "status": StepStatus.SCHEDULED if independent else StepStatus.WAITING,
                "due_at": due_at,
                "released_at": now if independent else None,
                "assignee_id": assignee.id,
                "assignee_fallback": fell_back,
                "created_at": now,
                "updated_at": now,
            }
        )
    return rows


@dataclass(frozen=True)
class ScheduledStep:
    """A step of a new plan that got its due time at once (it depends on no other step)."""

    key: str
    name: str
    due_at: datetime


@dataclass(frozen=True)
class AppliedPlan:
    """The plan of one contact after `apply_templates`: created now, or found from an earlier enrollment."""

    contact_id: int
    template_key: str
    plan_id: int
    created: bool
    scheduled: tuple[ScheduledStep, ...] = ()


def apply_templates(
    *,
    session: Session,
    requests: Sequence[tuple[Contact, PlanTemplate]],
    enrollment_key: str,
    started_on: date,
    applied_by: Staff,
    now: datetime,
    workshop_id: int | None = None,
    assignees: AssigneeResolver | None = None,
) -> list[AppliedPlan]:
    """Create each contact's plan from a template version, or find the one that exists; in request order.

    A plan is unique on contact x template key x enrollment key, so enrolling the same workshop again, even after the
    template changed, creates nothing. One SELECT finds the plans that exist, one INSERT creates the others, one
    INSERT their steps and one UPDATE links each step to the step it depends on: a few statements whatever the
    number of contacts. A call step that depends on no other step has its date at once: its call takes its slot in
    the assignee's calendar now (pending its invite, which goes out once the caller commits).
    """
    if not enrollment_key:
        raise EngageError("a plan needs an enrollment key (a workshop or a segment entry)")
    assert applied_by.id is not None
    if not requests:
        return []
    assignees = assignees or AssigneeResolver.for_applier(session, applied_by)
    existing: dict[tuple[int, str], int] = {}
    keys = sorted({template.key for _, template in requests})
    contact_ids = sorted({id_of(contact) for contact, _ in requests})
    for plan_id, contact_id, template_key in session.exec(
        select(Plan.id, Plan.contact_id, Plan.template_key).where(
            col(Plan.contact_id).in_(contact_ids),
            col(Plan.template_key).in_(keys),
            Plan.enrollment_key == enrollment_key,
        )
    ):
        existing[(contact_id, template_key)] = _plan_id(plan_id)
    new = []
    seen: set[tuple[int, str]] = set()
    for contact, template in requests:
        request_key = (id_of(contact), template.key)
        if request_key not in existing and request_key not in seen:
            seen.add(request_key)
            new.append((contact, template))
    created: dict[tuple[int, str], tuple[int, tuple[ScheduledStep, ...]]] = {}
    if new:
        created, dated_calls = _insert_plans(
            session, new, enrollment_key, started_on, applied_by, now, workshop_id, assignees
        )
        if dated_calls:
            sync_calls(session=session, now=now, step_ids=dated_calls)
    results = []
    for contact, template in requests:
        request_key = (id_of(contact), template.key)
        if request_key in created:
            plan_id, scheduled = created.pop(request_key)
            results.append(AppliedPlan(request_key[0], template.key, plan_id, True, scheduled))
        else:
            plan_id = existing.get(request_key) or _created_earlier(results, request_key)
            results.append(AppliedPlan(request_key[0], template.key, plan_id, False))
    return results


def apply_template(
    *,
    session: Session,
    template: PlanTemplate,
    contact: Contact,
    enrollment_key: str,
    started_on: date,
    applied_by: Staff,
    now: datetime,
    workshop_id: int | None = None,
    assignees: AssigneeResolver | None = None,
) -> AppliedPlan:
    """`apply_templates` for one contact: its plan, created now or found."""
    (applied,) = apply_templates(
        session=session,
        requests=[(contact, template)],
        enrollment_key=enrollment_key,
        started_on=started_on,
        applied_by=applied_by,
        now=now,
        workshop_id=workshop_id,
        assignees=assignees,
    )
    return applied


def _plan_id(plan_id: int | None) -> int:
    if plan_id is None:  # a primary key read from the database is never NULL
        raise NotFoundError("a plan without an id")
    return plan_id


def _created_earlier(results: list[AppliedPlan], request_key: tuple[int, str]) -> int:
    """The plan made for an earlier request of the same contact and template in the same call."""
    return next(r.plan_id for r in results if (r.contact_id, r.template_key) == request_key)


def _insert_plans(
    session: Session,
    new: list[tuple[Contact, PlanTemplate]],
    enrollment_key: str,
    started_on: date,
    applied_by: Staff,
    now: datetime,
    workshop_id: int | None,
    assignees: AssigneeResolver,
) -> tuple[dict[tuple[int, str], tuple[int, tuple[ScheduledStep, ...]]], list[int]]:
    """Insert the new plans and their steps: (plan id and scheduled steps per request, ids of call steps dated)."""
    plan_rows = [
        {
            "contact_id": id_of(contact),
            "template_key": template.key,
            "template_id": id_of(template),
            "enrollment_key": enrollment_key,
            "workshop_id": workshop_id,
            "applied_by_id": applied_by.id,
            "started_on": started_on,
            "created_at": now,
        }
        for contact, template in new
    ]
    plan_ids = insert_returning_ids(session, "plan", plan_rows)
    step_rows: list[dict[str, Any]] = []
    due_caches: dict[int, dict[int, datetime]] = defaultdict(dict)
    template_steps: dict[int, dict[str, int]] = {}
    for (contact, template), plan_id in zip(new, plan_ids, strict=True):
        spec = template_spec(template)
        template_id = id_of(template)
        if template_id not in template_steps:
            template_steps[template_id] = _template_step_ids(session, template)
        for values in _step_values(
            spec=spec,
            rules=spec.calendar_rules(),
            contact=contact,
            started_on=started_on,
            now=now,
            assignees=assignees,
            due_cache=due_caches[template_id],
        ):
            values["plan_id"] = plan_id
            values["template_step_id"] = template_steps[template_id].get(values["step_key"])
            step_rows.append(values)
    step_ids = insert_returning_ids(session, "plan_step", step_rows)
    by_key = {(row["plan_id"], row["step_key"]): step_id for row, step_id in zip(step_rows, step_ids, strict=True)}
    dated_calls = [
        step_id
        for row, step_id in zip(step_rows, step_ids, strict=True)
        if row["due_at"] is not None and row["kind"] == StepKind.CALL
    ]
    links = []
    result: dict[tuple[int, str], tuple[int, tuple[ScheduledStep, ...]]] = {}
    position = 0
    for (contact, template), plan_id in zip(new, plan_ids, strict=True):
        spec = template_spec(template)
        for step_spec in spec.steps:
            if step_spec.depends_on:
                links.append(
                    {"step_id": by_key[(plan_id, step_spec.key)], "parent_id": by_key[(plan_id, step_spec.depends_on)]}
                )
        rows = step_rows[position : position + len(spec.steps)]
        position += len(spec.steps)
        scheduled = tuple(
            ScheduledStep(row["step_key"], row["name"], row["due_at"]) for row in rows if row["due_at"] is not None
        )
        result[(id_of(contact), template.key)] = (plan_id, scheduled)
    if links:
        session.connection().execute(
            update(PlanStep)
            .where(col(PlanStep.id) == bindparam("step_id"))
            .values(depends_on_step_id=bindparam("parent_id")),
            links,
        )
    return result, dated_calls


def _template_step_ids(session: Session, template: PlanTemplate) -> dict[str, int]:
    from models import TemplateStep

    rows = session.exec(select(TemplateStep.key, TemplateStep.id).where(TemplateStep.template_id == template.id))
    return {key: step_id for key, step_id in rows if step_id is not None}
