"""The step lifecycle, in one place: a step finishes, its dependents are released, its plan completes.

:class:`StepFinisher` is the only implementation of these rules. The runner finishes hundreds of steps a batch with
it; a staff action (:mod:`engage.plans.actions`) finishes one step with it. The writes are Core statements, guarded,
made at once; the objects of the rows written that the session holds get the values written, as committed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, col, select

from engage.plan_templates.store import plan_spec
from engage.rules.due import CalendarRules, dependent_due_at
from engage.sql import update_row, write_row
from models import (
    FINAL_STATUSES,
    RELEASING_STATUSES,
    Plan,
    PlanStatus,
    PlanStep,
    Staff,
    StepStatus,
    id_of,
)


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
    """Finish steps of the given plans, release what waits on them (NPSP semantics), complete the plans finished.

    The plans' steps are read once, up front: a batch of the runner finishes hundreds of steps, and asking the
    database for each one's dependents and siblings would cost more than sending its email. Each write goes to the
    database at once; the step object passed in, the plans passed in, and any object of a released step the session
    holds get the values written, as committed (nothing left to flush, nothing stale for the caller's next read).
    The writes are guarded, so what another transaction changed meanwhile wins: a dependent is released only while
    it is still `waiting`, and a plan is completed only while it is `active` with every step final.
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
        """Schedule the steps waiting on ``step``: due = its completion + their days (NPSP semantics).

        ``force`` releases them from a step that did not finish well (a recipient refused for good).
        """
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
                self._written(dependent.id, values)
                released.append(dependent)
        return released

    def _written(self, step_id: int, values: dict[str, Any]) -> None:
        """The session's object of a step just written, if it holds one, gets the values written, as committed."""
        loaded = self.session.identity_map.get(identity_key(PlanStep, step_id))
        if loaded is not None:
            for name, value in values.items():
                set_committed_value(loaded, name, value)

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
