"""Call and task steps that fall due become open work items for their assignee."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from engage import db
from engage.db import writing
from engage.plans import calls
from engage.plans.lifecycle import StepFinisher
from engage.runner.batch import _cancel_if_plan_closed, _finish, _load, _Loaded
from engage.runner.due import BatchOutcome
from models import (
    Call,
    PlanStep,
    StepKind,
    StepStatus,
    id_of,
)


def open_work_items(
    *, step_ids: Iterable[int], claimant: str, now: datetime, flow_run_id: str | None = None, url: str | None = None
) -> BatchOutcome:
    """Due call and task steps become open work items for their assignee (a call gets its slot)."""
    outcome = BatchOutcome()
    with writing(db.get_engine(url)), db.session_scope(url) as session:
        items = _load(session, step_ids, claimant)
        call_steps = [id_of(i.step) for i in items if i.step.kind == StepKind.CALL]
        # Calls usually got their slot when their step got its date; one placement covers those that did not.
        calls.sync_calls(session=session, now=now, step_ids=call_steps)
        placed = set(
            session.exec(select(Call.plan_step_id).where(col(Call.plan_step_id).in_(call_steps))).all()
            if call_steps
            else ()
        )
        finisher = StepFinisher(session=session, plans=[item.plan for item in items])
        opened: list[int] = []
        for item in items:
            step = item.step
            if _cancel_if_plan_closed(session, item, now):
                continue
            if step.kind == StepKind.CALL and item.contact.do_not_call:
                _finish(finisher, outcome, item, StepStatus.SKIPPED, now, reason="contact asked not to be called")
                outcome.skipped += 1
                continue
            if step.kind == StepKind.CALL and id_of(step) not in placed:
                _create_call(session, item, now)
            opened.append(id_of(step))
        if opened:
            # One statement for the batch: the same values for every step that opens.
            values = {
                "status": StepStatus.OPEN,
                "lease_until": None,
                "claimed_by": None,
                "flow_run_id": flow_run_id,
                "updated_at": now,
            }
            session.connection().execute(update(PlanStep).where(col(PlanStep.id).in_(opened)).values(**values))
            outcome.opened += len(opened)
    return outcome


def _create_call(session: Session, item: _Loaded, now: datetime) -> Call | None:
    """The call of a due call step: placed when the step got its date, else now, in the assignee's next free slot."""
    existing = session.exec(select(Call).where(Call.plan_step_id == item.step.id)).first()
    if existing is None:
        calls.sync_calls(session=session, now=now, step_ids=[id_of(item.step)])
        existing = session.exec(select(Call).where(Call.plan_step_id == item.step.id)).first()
    return existing
