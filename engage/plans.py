"""Plans and their steps: apply a template to a contact, complete, skip, reassign, reschedule, cancel.

Every function takes the session and ``now`` from its caller: the CLI and the flows call the same operations, and the
simulator moves ``now``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, case, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, SQLModel, col, func, select

from engage.errors import EngageError, InvalidStateError, NotFoundError
from engage.plan_templates import PlanTemplateSpec, spec_of
from engage.staff import get_staff
from engage.timerules import CalendarRules, dependent_due_at, independent_due_at
from models import (
    FINAL_STATUSES,
    RELEASING_STATUSES,
    Call,
    Contact,
    Plan,
    PlanStatus,
    PlanStep,
    PlanTemplate,
    Staff,
    StepComment,
    StepKind,
    StepStatus,
    Workshop,
    id_of,
)

#: Statuses of steps a person may still act on (their date is real, they are not finished).
ACTIONABLE_STATUSES = (
    StepStatus.SCHEDULED,
    StepStatus.RUNNING,
    StepStatus.OPEN,
    StepStatus.FAILED,
    StepStatus.UNKNOWN,
)

_SPECS: dict[tuple[str, str], PlanTemplateSpec] = {}


def template_spec(template: PlanTemplate) -> PlanTemplateSpec:
    """The spec of a stored template version, cached by its content hash (a version never changes)."""
    cache_key = (template.key, template.content_hash)
    if cache_key not in _SPECS:
        _SPECS[cache_key] = spec_of(template)
    return _SPECS[cache_key]


def plan_spec(*, session: Session, plan: Plan) -> PlanTemplateSpec:
    template = session.get(PlanTemplate, plan.template_id)
    if template is None:  # a foreign key makes this impossible short of a broken database
        raise NotFoundError(f"plan {plan.id}: template version {plan.template_id} is missing")
    return template_spec(template)


# --- contacts and workshops -------------------------------------------------------------------------------------


def get_contact(*, session: Session, email: str) -> Contact:
    contact = session.exec(select(Contact).where(Contact.email_key == email.strip().lower())).first()
    if contact is None:
        raise NotFoundError(f"no contact {email!r} (import them first: engage contacts import FILE)")
    return contact


def get_contact_by_id(*, session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFoundError(f"no contact {contact_id}")
    return contact


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


# --- applying a template ----------------------------------------------------------------------------------------


@dataclass
class AssigneeResolver:
    """Turns a template's assignee rule into a staff member, remembering look-ups across one enrollment."""

    session: Session
    applied_by: Staff
    _by_email: dict[str, Staff | None]
    _by_id: dict[int, Staff | None]

    @classmethod
    def for_applier(cls, session: Session, applied_by: Staff) -> AssigneeResolver:
        return cls(session, applied_by, {}, {})

    def resolve(self, rule: str, contact: Contact) -> tuple[Staff, bool]:
        """(assignee, fell back): owner -> record owner, applier -> who applied, else a staff email."""
        if rule == "applier":
            return self.applied_by, False
        if rule == "owner":
            owner = self._staff_by_id(contact.owner_id) if contact.owner_id else None
        else:
            owner = self._staff_by_email(rule)
        if owner is None or not owner.active:
            return self.applied_by, True
        return owner, False

    def _staff_by_id(self, staff_id: int) -> Staff | None:
        if staff_id not in self._by_id:
            self._by_id[staff_id] = self.session.get(Staff, staff_id)
        return self._by_id[staff_id]

    def _staff_by_email(self, email: str) -> Staff | None:
        key = email.strip().lower()
        if key not in self._by_email:
            self._by_email[key] = self.session.exec(select(Staff).where(Staff.email == key)).first()
        return self._by_email[key]


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
) -> tuple[Plan, bool]:
    """Create the contact's plan from a template version, or return the one that exists; (plan, created).

    The plan is unique on contact x template key x enrollment key, so enrolling the same workshop again, even after
    the template changed, creates nothing.
    """
    if not enrollment_key:
        raise EngageError("a plan needs an enrollment key (a workshop or a segment entry)")
    assert contact.id is not None and applied_by.id is not None
    existing = session.exec(
        select(Plan).where(
            Plan.contact_id == contact.id,
            Plan.template_key == template.key,
            Plan.enrollment_key == enrollment_key,
        )
    ).first()
    if existing is not None:
        return existing, False

    spec = template_spec(template)
    rules = spec.calendar_rules()
    assignees = assignees or AssigneeResolver.for_applier(session, applied_by)
    plan = Plan(
        contact_id=contact.id,
        template_key=template.key,
        template_id=id_of(template),
        enrollment_key=enrollment_key,
        workshop_id=workshop_id,
        applied_by_id=applied_by.id,
        started_on=started_on,
        created_at=now,
    )
    session.add(plan)
    session.flush()
    steps_by_key: dict[str, PlanStep] = {}
    values = _step_values(spec=spec, rules=rules, contact=contact, started_on=started_on, now=now, assignees=assignees)
    for step_values in values:
        step = PlanStep(plan_id=id_of(plan), **step_values)
        steps_by_key[step.step_key] = step
        session.add(step)
    session.flush()
    template_steps = _template_step_ids(session, template)
    for step_spec in spec.steps:
        step = steps_by_key[step_spec.key]
        step.template_step_id = template_steps.get(step_spec.key)
        if step_spec.depends_on:
            step.depends_on_step_id = steps_by_key[step_spec.depends_on].id
        session.add(step)
    session.flush()
    return plan, True


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
    """`apply_template` for many contacts at once, in a few statements whatever their number; in request order.

    One SELECT finds the plans that exist, one INSERT creates the others, one INSERT their steps and one UPDATE
    links each step to the step it depends on. The plans and steps are the ones `apply_template` would create.
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
        created = _insert_plans(session, new, enrollment_key, started_on, applied_by, now, workshop_id, assignees)
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


def insert_returning_ids(session: Session, table_name: str, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows (all with the same keys) in one executemany; return their new ids, in the order of ``rows``.

    Core, not the ORM's bulk INSERT: that one splits the rows wherever the set of NULL values changes (a step with a
    due time, then three without) and splices the results of hundreds of small INSERTs, in quadratic time.
    """
    table = SQLModel.metadata.tables[table_name]
    result = session.connection().execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return [int(row_id) for row_id in result.scalars()]


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
) -> dict[tuple[int, str], tuple[int, tuple[ScheduledStep, ...]]]:
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
    return result


def _template_step_ids(session: Session, template: PlanTemplate) -> dict[str, int]:
    from models import TemplateStep

    rows = session.exec(select(TemplateStep.key, TemplateStep.id).where(TemplateStep.template_id == template.id))
    return {key: step_id for key, step_id in rows if step_id is not None}


# --- plans ------------------------------------------------------------------------------------------------------


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


def cancel_plan(*, session: Session, plan_id: int, reason: str, now: datetime) -> list[PlanStep]:
    """Cancel a plan and every step not yet finished; returns the steps cancelled."""
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
    return cancelled


def _finish_plan_if_complete(session: Session, plan_id: int, now: datetime) -> None:
    plan = get_plan(session=session, plan_id=plan_id)
    if plan.status != PlanStatus.ACTIVE:
        return
    if all(step.status in FINAL_STATUSES for step in plan_steps(session=session, plan_id=plan_id)):
        plan.status = PlanStatus.COMPLETED
        plan.completed_at = now
        session.add(plan)


# --- steps ------------------------------------------------------------------------------------------------------


def get_step(*, session: Session, step_id: int) -> PlanStep:
    step = session.get(PlanStep, step_id)
    if step is None:
        raise NotFoundError(f"no task {step_id}")
    return step


def release_dependents(*, session: Session, step: PlanStep, now: datetime, force: bool = False) -> list[PlanStep]:
    """Schedule the steps waiting on ``step``: due = its completion + their days (NPSP semantics).

    ``force`` releases them from a step that did not finish well (a permanent send failure, a step staff skip).
    """
    if step.status not in RELEASING_STATUSES and not force:
        return []
    plan = get_plan(session=session, plan_id=step.plan_id)
    if plan.status != PlanStatus.ACTIVE:
        return []
    rules = plan_spec(session=session, plan=plan).calendar_rules()
    completed_at = step.completed_at or now
    released = []
    # A step's dependents are in its plan: filtering on the plan lets the plan_id index find them.
    waiting = session.exec(
        select(PlanStep).where(
            PlanStep.plan_id == step.plan_id,
            PlanStep.depends_on_step_id == step.id,
            PlanStep.status == StepStatus.WAITING,
        )
    )
    for dependent in waiting:
        dependent.status = StepStatus.SCHEDULED
        dependent.due_at = dependent_due_at(completed_at, dependent.days_after, rules)
        dependent.released_at = now
        dependent.updated_at = now
        session.add(dependent)
        released.append(dependent)
    return released


def finish_step(
    *,
    session: Session,
    step: PlanStep,
    status: StepStatus,
    now: datetime,
    outcome: str | None = None,
    reason: str | None = None,
    by: Staff | None = None,
) -> list[PlanStep]:
    """Mark a step done or skipped, release its dependents, close the plan when all is finished."""
    if status not in RELEASING_STATUSES:
        raise ValueError(f"finish_step takes done or skipped, not {status}")
    step.status = status
    step.completed_at = now
    step.lease_until = None
    step.claimed_by = None
    step.updated_at = now
    if outcome is not None:
        step.outcome = outcome
    if reason is not None:
        step.skip_reason = reason
    if by is not None:
        step.completed_by_id = by.id
    session.add(step)
    session.flush()
    released = release_dependents(session=session, step=step, now=now)
    _finish_plan_if_complete(session, step.plan_id, now)
    return released


_ROW_UPDATES: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}


def update_row(session: Session, table_name: str, row_id: int, values: dict[str, Any], **only_if: Any) -> bool:
    """UPDATE one row by id (and ``only_if`` column values) with a statement built once per shape; True if it matched.

    A statement built for each row costs several times what executing it does: the runner writes a few rows for every
    email, so the statements of each shape are built once and executed with parameters.
    """
    key = (table_name, tuple(values), tuple(only_if))
    statement = _ROW_UPDATES.get(key)
    if statement is None:
        table = SQLModel.metadata.tables[table_name]
        conditions = [table.c.id == bindparam("where_id")]
        conditions += [table.c[name] == bindparam(f"where_{name}") for name in only_if]
        statement = update(table).where(*conditions).values({name: bindparam(f"set_{name}") for name in values})
        _ROW_UPDATES[key] = statement
    params = {"where_id": row_id}
    params.update({f"where_{name}": value for name, value in only_if.items()})
    params.update({f"set_{name}": value for name, value in values.items()})
    result: Any = session.connection().execute(statement, params)
    return bool(result.rowcount)


def write_row(session: Session, row: SQLModel, values: dict[str, Any], **only_if: Any) -> bool:
    """`update_row` for a loaded object, which then holds the values written, as committed (nothing left to flush)."""
    table_name = str(getattr(type(row), "__tablename__"))  # noqa: B009 (SQLModel declares it, mypy cannot see it)
    written = update_row(session, table_name, row.id, values, **only_if)  # type: ignore[attr-defined]
    if written:
        for name, value in values.items():
            set_committed_value(row, name, value)
    return written


@dataclass
class StepRow:
    """What `StepFinisher` keeps of a step of a batch's plans: enough to release it and to close its plan."""

    id: int
    plan_id: int
    depends_on_step_id: int | None
    status: str
    days_after: int
    step_key: str
    name: str
    due_at: datetime | None


class StepFinisher:
    """`finish_step` and `release_dependents` for the steps of many plans: their steps are read once, up front.

    Same effects, fewer queries: a batch of the runner finishes hundreds of steps, and asking the database for each
    one's dependents and siblings would cost more than sending its email. Each write goes to the database at once
    (the objects hold what was written). The writes are guarded, so what another transaction changed meanwhile wins:
    a dependent is released only while it is still `waiting`, and a plan is completed only while it is `active` with
    every step final.
    """

    def __init__(self, *, session: Session, plans: Iterable[Plan]) -> None:
        self.session = session
        self._plans = {id_of(plan): plan for plan in plans}
        self._steps: dict[int, list[StepRow]] = defaultdict(list)
        self._by_id: dict[int, StepRow] = {}
        if self._plans:
            rows = session.execute(
                sa_select(
                    col(PlanStep.id),
                    col(PlanStep.plan_id),
                    col(PlanStep.depends_on_step_id),
                    col(PlanStep.status),
                    col(PlanStep.days_after),
                    col(PlanStep.step_key),
                    col(PlanStep.name),
                    col(PlanStep.due_at),
                ).where(col(PlanStep.plan_id).in_(list(self._plans)))
            )
            for row in rows:
                step_row = StepRow(*row)
                self._steps[step_row.plan_id].append(step_row)
                self._by_id[step_row.id] = step_row
        self._rules: dict[int, CalendarRules] = {}
        self._due: dict[tuple[int, datetime, int], datetime] = {}

    def finish(
        self,
        step: PlanStep,
        status: StepStatus,
        now: datetime,
        *,
        outcome: str | None = None,
        reason: str | None = None,
        by: Staff | None = None,
    ) -> list[StepRow]:
        """Mark a step done or skipped, release its dependents, close the plan when all is finished."""
        if status not in RELEASING_STATUSES:
            raise ValueError(f"finish takes done or skipped, not {status}")
        values: dict[str, Any] = {
            "status": status,
            "completed_at": now,
            "lease_until": None,
            "claimed_by": None,
            "updated_at": now,
        }
        if outcome is not None:
            values["outcome"] = outcome
        if reason is not None:
            values["skip_reason"] = reason
        if by is not None:
            values["completed_by_id"] = by.id
        write_row(self.session, step, values)
        if step.id in self._by_id:
            self._by_id[step.id].status = status
        released = self.release(step, now)
        if not released:
            self._complete_plan_if_done(step, now)
        return released

    def release(self, step: PlanStep, now: datetime, *, force: bool = False) -> list[StepRow]:
        """Schedule the steps waiting on ``step``, as `release_dependents` does."""
        if step.status not in RELEASING_STATUSES and not force:
            return []
        plan = self._plans[step.plan_id]
        if plan.status != PlanStatus.ACTIVE:
            return []
        completed_at = step.completed_at or now
        released = []
        for dependent in self._steps[step.plan_id]:
            if dependent.depends_on_step_id != step.id or dependent.status != StepStatus.WAITING:
                continue
            due_at = self._due_at(plan, completed_at, dependent.days_after)
            values = {"status": StepStatus.SCHEDULED, "due_at": due_at, "released_at": now, "updated_at": now}
            if update_row(self.session, "plan_step", dependent.id, values, status=StepStatus.WAITING):
                dependent.status, dependent.due_at = StepStatus.SCHEDULED, due_at
                released.append(dependent)
        return released

    def _due_at(self, plan: Plan, completed_at: datetime, days_after: int) -> datetime:
        key = (plan.template_id, completed_at, days_after)
        if key not in self._due:
            if plan.template_id not in self._rules:
                self._rules[plan.template_id] = plan_spec(session=self.session, plan=plan).calendar_rules()
            self._due[key] = dependent_due_at(completed_at, days_after, self._rules[plan.template_id])
        return self._due[key]

    def _complete_plan_if_done(self, step: PlanStep, now: datetime) -> None:
        plan = self._plans[step.plan_id]
        if plan.status != PlanStatus.ACTIVE:
            return
        if not all(s.status in FINAL_STATUSES for s in self._steps[step.plan_id] if s.id != step.id):
            return
        self.session.flush()  # the database, not this session's memory, says whether every other step is final
        unfinished = (
            select(PlanStep.id)
            .where(
                PlanStep.plan_id == plan.id,
                col(PlanStep.id) != step.id,
                col(PlanStep.status).not_in([s.value for s in FINAL_STATUSES]),
            )
            .exists()
        )
        result: Any = self.session.connection().execute(
            update(Plan)
            .where(col(Plan.id) == plan.id, col(Plan.status) == PlanStatus.ACTIVE, ~unfinished)
            .values(status=PlanStatus.COMPLETED, completed_at=now)
        )
        if result.rowcount:
            set_committed_value(plan, "status", PlanStatus.COMPLETED)
            set_committed_value(plan, "completed_at", now)


def complete_task(
    *, session: Session, step_id: int, now: datetime, outcome: str | None = None, by: Staff | None = None
) -> list[PlanStep]:
    """Record that staff did a call or task step; release the next steps. Returns the released steps."""
    step = get_step(session=session, step_id=step_id)
    if step.kind == StepKind.EMAIL:
        raise InvalidStateError(
            f"task {step_id} is an email step: it completes when the email is sent (skip it with engage tasks skip)"
        )
    if step.status in FINAL_STATUSES:
        raise InvalidStateError(f"task {step_id} is already {step.status}")
    if step.status == StepStatus.WAITING:
        raise InvalidStateError(f"task {step_id} is still waiting for the step before it")
    return finish_step(session=session, step=step, status=StepStatus.DONE, now=now, outcome=outcome, by=by)


def skip_task(*, session: Session, step_id: int, reason: str, now: datetime, by: Staff | None = None) -> list[PlanStep]:
    """Give up on a step (with a reason) and release its dependents."""
    step = get_step(session=session, step_id=step_id)
    if not reason.strip():
        raise EngageError("say why the task is skipped (--reason TEXT)")
    if step.status in FINAL_STATUSES:
        raise InvalidStateError(f"task {step_id} is already {step.status}")
    return finish_step(session=session, step=step, status=StepStatus.SKIPPED, now=now, reason=reason.strip(), by=by)


def reassign_task(*, session: Session, step_id: int, email: str, now: datetime) -> tuple[PlanStep, Staff | None]:
    """Give a step to another active staff member; returns (step, previous assignee)."""
    step = get_step(session=session, step_id=step_id)
    if step.status in FINAL_STATUSES:
        raise InvalidStateError(f"task {step_id} is already {step.status}")
    new = get_staff(session=session, email=email, active_only=True)
    previous = session.get(Staff, step.assignee_id) if step.assignee_id else None
    step.assignee_id = new.id
    step.assignee_fallback = False
    step.updated_at = now
    session.add(step)
    return step, previous


def reschedule_task(*, session: Session, step_id: int, on: date, now: datetime) -> PlanStep:
    """Move a step with a real date to another day (the start of that day's send window or working hours)."""
    step = get_step(session=session, step_id=step_id)
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
    return step


def _start_of_day(on: date, rules: CalendarRules) -> datetime:
    """The start of the send window on ``on`` in the template's time zone, in UTC."""
    return datetime.combine(on, rules.send_window_start, tzinfo=ZoneInfo(rules.timezone)).astimezone(UTC)


def comment_task(*, session: Session, step_id: int, text: str, by: Staff | None, now: datetime) -> StepComment:
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
    return steps


def resolve_unknown(
    *, session: Session, step_id: int, went_out: bool, now: datetime, by: Staff | None = None
) -> list[PlanStep]:
    """Staff say whether a send in doubt went out: `sent` records it and releases the next step, or send again.

    Returns the steps released (for `went_out`) or the step scheduled again.
    """
    from models import Delivery, DeliveryState

    step = get_step(session=session, step_id=step_id)
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
        return finish_step(
            session=session,
            step=step,
            status=StepStatus.DONE,
            now=now,
            by=by,
            outcome="sent (confirmed by staff after a crash)",
        )
    # The delivery in doubt stays `unknown` for the record; the next attempt is a new delivery (sequence + 1).
    step.status = StepStatus.SCHEDULED
    step.due_at = now
    step.lease_until = None
    step.claimed_by = None
    step.updated_at = now
    session.add(step)
    return [step]


# --- task lists -------------------------------------------------------------------------------------------------


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
