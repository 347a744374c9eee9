"""The operations staff call (the CLI and the desk alike): one transaction each, then the invites, then a result."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from call_plans import CALL_DUE, calendar_of, enroll, received, staff_member
from factories import WORKSHOP_DAY, create_contact
from sqlmodel import Session, select

from engage.errors import InvalidStateError
from engage.mail.capture import SmtpCapture
from engage.plans import operations
from engage.plans.lifecycle import StepFinisher
from engage.plans.operations import Invites, ReleasedStep
from engage.plans.queries import plan_steps
from engage.settings import get_settings
from models import Call, Plan, PlanStep, StepStatus

CAMILLE = "camille@nmh.example.org"
MOTIVATION_DUE = datetime(2026, 12, 7, 8, tzinfo=UTC)


def waiting_on_the_motivation_email(session: Session) -> tuple[PlanStep, PlanStep]:
    """A plan whose first two emails went out: (the motivation email, scheduled; the call, waiting for it)."""
    (plan,) = enroll(session, 1)
    steps = plan_steps(session=session, plan_id=plan.id or 0)
    finisher = StepFinisher(session=session, plans=[plan])
    for step in steps[:2]:
        assert step.due_at is not None
        finisher.finish(step, StepStatus.DONE, step.due_at)
    session.commit()
    motivation, call = steps[2:]
    assert (motivation.status, call.status) == (StepStatus.SCHEDULED, StepStatus.WAITING)
    return motivation, call


def test_skipping_the_step_before_a_call_releases_it_places_it_and_tells_the_calendar(
    session: Session, smtp_sink: SmtpCapture
) -> None:
    motivation, call = waiting_on_the_motivation_email(session)
    change = operations.skip_task(task_id=motivation.id or 0, reason="asked by phone", by=CAMILLE, now=MOTIVATION_DUE)

    assert (change.task.id, change.task.status, change.task.skip_reason) == (
        motivation.id,
        StepStatus.SKIPPED,
        "asked by phone",
    )
    assert change.released == (ReleasedStep(call.id or 0, "follow-up-call", call.name, CALL_DUE),)
    assert change.invites == Invites(requests=1, cancels=0)
    ((recipient, message),) = received(smtp_sink)
    assert recipient == CAMILLE and calendar_of(message)[0] == "REQUEST"
    session.commit()
    placed = session.exec(select(Call)).one()
    assert (placed.plan_step_id, placed.slot_start, placed.invite_pending) == (call.id, CALL_DUE, False)


def test_when_smtp_is_down_the_change_stands_and_the_result_says_why_the_invite_waits(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    motivation, call = waiting_on_the_motivation_email(session)
    with SmtpCapture() as closed:
        port = closed.port
    monkeypatch.setenv("ENGAGE_SMTP_PORT", str(port))
    get_settings.cache_clear()
    change = operations.skip_task(task_id=motivation.id or 0, reason="asked by phone", by=CAMILLE, now=MOTIVATION_DUE)
    assert change.invites.sent == 0
    assert change.invites.warning is not None and change.invites.warning.endswith("run-due-steps sends them later")
    session.commit()
    assert session.get(PlanStep, motivation.id).status == StepStatus.SKIPPED  # type: ignore[union-attr]
    assert session.exec(select(Call)).one().invite_pending


def test_a_task_completed_once_is_not_completed_again(session: Session, smtp_sink: SmtpCapture) -> None:
    motivation, call = waiting_on_the_motivation_email(session)
    operations.skip_task(task_id=motivation.id or 0, reason="asked by phone", by=CAMILLE, now=MOTIVATION_DUE)
    done = operations.complete_task(task_id=call.id or 0, outcome="reached", by=CAMILLE, now=CALL_DUE)
    assert (done.task.status, done.task.outcome, done.released) == (StepStatus.DONE, "reached", ())
    assert done.invites == Invites()  # a call done stays in the calendar as it was: nothing to tell
    with pytest.raises(InvalidStateError, match="already done"):
        operations.complete_task(task_id=call.id or 0, outcome="reached too", by=CAMILLE, now=CALL_DUE)
    session.commit()
    assert session.get(Plan, call.plan_id).status == "completed"  # type: ignore[union-attr]


QUICK_CALL = """\
key: quick-call
name: Quick call
skip_weekends: true
reschedule_to: monday
timezone: Europe/Paris
send_window: "09:00-17:00"
assignee: applier
call_slot_minutes: 30
steps:
  - key: welcome-call
    name: Welcome call
    kind: call
    days_after: 3
  - key: notes
    name: Write up the call
    kind: task
    depends_on: welcome-call
    days_after: 1
"""


def test_applying_a_plan_places_a_call_dated_at_once_and_a_plan_found_changes_nothing(
    workspace: Path, session: Session, smtp_sink: SmtpCapture
) -> None:
    (workspace / "plan_templates" / "quick-call.yaml").write_text(QUICK_CALL, "utf-8")
    staff_member(session)
    create_contact(session, email="lea@example.org")
    session.commit()
    now = datetime(2026, 11, 20, 18, tzinfo=UTC)
    common = {"template_key": "quick-call", "contact_email": "Lea@example.org", "by": CAMILLE, "now": now}

    applied = operations.apply_plan(started_on=WORKSHOP_DAY, workshop="Atelier Lyon", **common)  # type: ignore[arg-type]
    assert applied.created and applied.contact_email == "lea@example.org"
    assert applied.plan.enrollment_key == f"workshop:{applied.plan.workshop_id}"
    assert applied.invites == Invites(requests=1, cancels=0)
    ((recipient, message),) = received(smtp_sink)
    _, calendar = calendar_of(message)
    (event,) = calendar.walk("VEVENT")
    assert recipient == CAMILLE and event.decoded("DTSTART") == datetime(2026, 11, 23, 8, tzinfo=UTC)

    again = operations.apply_plan(started_on=WORKSHOP_DAY, workshop="Atelier Lyon", **common)  # type: ignore[arg-type]
    assert (again.created, again.plan.id, again.invites) == (False, applied.plan.id, Invites())
    manual = operations.apply_plan(started_on=date(2026, 11, 27), **common)  # type: ignore[arg-type]
    assert manual.created and manual.plan.enrollment_key == "manual:2026-11-27"
    assert len(received(smtp_sink)) == 2


def test_deactivating_a_staff_member_moves_their_calls_and_tells_both_calendars(
    session: Session, smtp_sink: SmtpCapture
) -> None:
    motivation, call = waiting_on_the_motivation_email(session)
    operations.skip_task(task_id=motivation.id or 0, reason="asked by phone", by=CAMILLE, now=MOTIVATION_DUE)
    staff_member(session, "jeanne@nmh.example.org", name="Jeanne")
    session.commit()
    done = operations.deactivate_staff(email=CAMILLE, reassign_to="jeanne@nmh.example.org", now=MOTIVATION_DUE)
    assert (done.tasks, done.contacts, done.invites) == (1, 0, Invites(requests=1, cancels=1))
    methods = [(recipient, calendar_of(message)[0]) for recipient, message in received(smtp_sink)]
    assert methods == [(CAMILLE, "REQUEST"), (CAMILLE, "CANCEL"), ("jeanne@nmh.example.org", "REQUEST")]
    session.commit()
    assert session.get(PlanStep, call.id).assignee_id != motivation.assignee_id  # type: ignore[union-attr]
