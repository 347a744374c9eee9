from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from factories import WORKSHOP_DAY, create_contact, create_staff
from sqlmodel import Session, select

from engage import plans
from engage.contacts.lookup import get_contact_by_id
from engage.errors import EngageError, InvalidStateError
from engage.plan_templates.store import current_template
from engage.settings import PROJECT_ROOT
from models import Call, Plan, PlanStatus, PlanStep, StepComment, StepStatus

ENROLLED_AT = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)


def at_nine_paris(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 8, 0, tzinfo=UTC)  # 09:00 in Paris in winter


def apply_volunteer_plan(session: Session, **contact_fields: object) -> tuple[Plan, list[PlanStep]]:
    applier = create_staff(session)
    contact = create_contact(session, **contact_fields)
    workshop, _ = plans.get_or_create_workshop(session=session, name="Atelier Lyon", on=WORKSHOP_DAY)
    applied = plans.apply_template(
        session=session,
        template=current_template(session=session, key="volunteer-followup"),
        contact=contact,
        enrollment_key=workshop.enrollment_key,
        started_on=WORKSHOP_DAY,
        applied_by=applier,
        workshop_id=workshop.id,
        now=ENROLLED_AT,
    )
    assert applied.created
    return plans.get_plan(session=session, plan_id=applied.plan_id), plans.plan_steps(
        session=session, plan_id=applied.plan_id
    )


def test_applying_a_template_schedules_independent_steps_only(session: Session) -> None:
    plan, steps = apply_volunteer_plan(session)
    assert [(s.step_key, s.status) for s in steps] == [
        ("survey", StepStatus.SCHEDULED),
        ("resource-pack", StepStatus.WAITING),
        ("motivation", StepStatus.WAITING),
        ("follow-up-call", StepStatus.WAITING),
    ]
    assert steps[0].due_at == at_nine_paris(date(2026, 11, 23))  # Saturday moves to Monday
    assert all(s.due_at is None for s in steps[1:])
    assert steps[1].depends_on_step_id == steps[0].id
    assert plan.template_key == "volunteer-followup" and plan.status == PlanStatus.ACTIVE


def test_the_worked_example_of_the_readme(session: Session) -> None:
    """Every step completed on its due day: emails Mon 23 Nov, Mon 30 Nov, Mon 7 Dec, the call Wed 23 Dec."""
    plan, steps = apply_volunteer_plan(session)
    finisher = plans.StepFinisher(session=session, plans=[plan])
    due_days = []
    for step in steps:
        # The session's objects of the steps released hold what the finisher wrote: nothing to refresh.
        assert step.status == StepStatus.SCHEDULED and step.due_at is not None
        due_days.append(step.due_at)
        finisher.finish(step, StepStatus.DONE, step.due_at)
    assert due_days == [at_nine_paris(d) for d in (date(2026, 11, 23), date(2026, 11, 30), date(2026, 12, 7))] + [
        at_nine_paris(date(2026, 12, 23))
    ]
    plan = session.get(Plan, steps[0].plan_id)
    assert plan is not None and plan.status == PlanStatus.COMPLETED


def test_a_dependent_step_counts_from_its_parents_completion(session: Session) -> None:
    plan, steps = apply_volunteer_plan(session)
    late = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)  # the survey went out nine days late, on a Wednesday
    released = plans.StepFinisher(session=session, plans=[plan]).finish(steps[0], StepStatus.DONE, late)
    assert [s.step_key for s in released] == ["resource-pack"]
    assert released[0].due_at == at_nine_paris(date(2026, 12, 8))  # Wed 2 Dec + 6 days = Tue 8 Dec


def test_applying_twice_or_after_a_template_change_creates_nothing(
    session: Session, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    plan, _ = apply_volunteer_plan(session)
    contact = get_contact_by_id(session=session, contact_id=plan.contact_id)
    templates = tmp_path / "plan_templates"
    templates.mkdir()
    source = (PROJECT_ROOT / "plan_templates" / "volunteer-followup.yaml").read_text(encoding="utf-8")
    (templates / "volunteer-followup.yaml").write_text(source.replace("Resource pack", "Resource kit"), "utf-8")
    new_version = current_template(session=session, key="volunteer-followup", directory=templates)
    assert new_version.id != plan.template_id
    again = plans.apply_template(
        session=session,
        template=new_version,
        contact=contact,
        enrollment_key=plan.enrollment_key,
        started_on=WORKSHOP_DAY,
        applied_by=create_staff(session),
        now=ENROLLED_AT,
    )
    assert not again.created and again.plan_id == plan.id and again.scheduled == ()
    assert plans.get_plan(session=session, plan_id=again.plan_id).template_id == plan.template_id
    assert len(session.exec(select(Plan)).all()) == 1


def test_an_enrollment_key_is_never_empty(session: Session) -> None:
    with pytest.raises(EngageError, match="enrollment key"):
        plans.apply_template(
            session=session,
            template=current_template(session=session, key="volunteer-followup"),
            contact=create_contact(session),
            enrollment_key="",
            started_on=WORKSHOP_DAY,
            applied_by=create_staff(session),
            now=ENROLLED_AT,
        )


def test_owner_rule_falls_back_to_the_applier_and_says_so(session: Session) -> None:
    owner = create_staff(session)
    applier = create_staff(session)
    with_owner = create_contact(session, owner_id=owner.id)
    without_owner = create_contact(session)
    template = current_template(session=session, key="donor-followup")
    results = {}
    for contact in (with_owner, without_owner):
        applied = plans.apply_template(
            session=session,
            template=template,
            contact=contact,
            enrollment_key="manual:2026-11-20",
            started_on=WORKSHOP_DAY,
            applied_by=applier,
            now=ENROLLED_AT,
        )
        call = plans.plan_steps(session=session, plan_id=applied.plan_id)[-1]
        results[contact.id] = (call.assignee_id, call.assignee_fallback)
    assert results[with_owner.id] == (owner.id, False)
    assert results[without_owner.id] == (applier.id, True)


def test_cancel_plan_cancels_open_steps(session: Session) -> None:
    plan, steps = apply_volunteer_plan(session)
    cancelled = plans.cancel_plan(session=session, plan_id=plan.id or 0, reason="moved abroad", now=ENROLLED_AT)
    assert len(cancelled) == 4
    assert {s.status for s in plans.plan_steps(session=session, plan_id=plan.id or 0)} == {StepStatus.CANCELLED}
    with pytest.raises(InvalidStateError):
        plans.cancel_plan(session=session, plan_id=plan.id or 0, reason="again", now=ENROLLED_AT)


def test_staff_work_their_tasks(session: Session) -> None:
    plan, steps = apply_volunteer_plan(session)
    colleague = create_staff(session)
    finisher = plans.StepFinisher(session=session, plans=[plan])
    for step in steps[:3]:
        assert step.due_at is not None
        finisher.finish(step, StepStatus.DONE, step.due_at)
    call = steps[3]
    with pytest.raises(InvalidStateError, match="email step"):
        plans.complete_task(session=session, step_id=steps[0].id or 0, now=ENROLLED_AT)

    plans.reassign_task(session=session, step_id=call.id or 0, email=colleague.email, now=ENROLLED_AT)
    moved = plans.reschedule_task(session=session, step_id=call.id or 0, on=date(2026, 12, 28), now=ENROLLED_AT)
    assert moved.due_at == at_nine_paris(date(2026, 12, 28)) and moved.assignee_id == colleague.id
    plans.comment_task(session=session, step_id=call.id or 0, text="prefers evenings", by=colleague, now=ENROLLED_AT)
    assert session.exec(select(StepComment)).one().text == "prefers evenings"

    follow_up = plans.add_follow_up(
        session=session,
        step_id=call.id or 0,
        on=date(2027, 1, 15),
        subject="Send the volunteer charter",
        by=colleague,
        now=ENROLLED_AT,
    )
    plans.complete_task(
        session=session, step_id=call.id or 0, outcome="will host a event", by=colleague, now=ENROLLED_AT
    )
    assert session.get(Plan, plan.id).status == PlanStatus.ACTIVE  # type: ignore[union-attr]
    plans.complete_task(session=session, step_id=follow_up.id or 0, by=colleague, now=ENROLLED_AT)
    assert session.get(Plan, plan.id).status == PlanStatus.COMPLETED  # type: ignore[union-attr]


def test_task_lists_leave_out_waiting_steps_and_flag_overdue(session: Session) -> None:
    _, steps = apply_volunteer_plan(session)
    first_due = steps[0].due_at
    assert first_due is not None
    rows = plans.list_tasks(session=session, now=ENROLLED_AT)
    assert [r.step.step_key for r in rows] == ["survey"]
    assert plans.list_tasks(session=session, now=ENROLLED_AT, overdue=True) == []
    assert len(plans.list_tasks(session=session, now=ENROLLED_AT, upcoming_days=3)) == 1
    assert plans.list_tasks(session=session, now=ENROLLED_AT, upcoming_days=2) == []
    later = first_due + timedelta(hours=1)
    overdue = plans.list_tasks(session=session, now=later, overdue=True)
    assert len(overdue) == 1 and overdue[0].overdue
    with pytest.raises(EngageError, match="status"):
        plans.list_tasks(session=session, now=later, statuses=["sleeping"])


# --- many plans at once -----------------------------------------------------------------------------------------

_COMPARED = (
    "step_key",
    "name",
    "kind",
    "position",
    "days_after",
    "priority",
    "status",
    "due_at",
    "released_at",
    "assignee_id",
    "assignee_fallback",
    "template_step_id",
    "created_at",
    "updated_at",
)


def _shape(session: Session, plan_id: int) -> list[tuple[object, ...]]:
    """A plan's steps without ids, with each dependency named by its parent's key."""
    steps = plans.plan_steps(session=session, plan_id=plan_id)
    keys = {s.id: s.step_key for s in steps}
    return [tuple(getattr(s, name) for name in _COMPARED) + (keys.get(s.depends_on_step_id),) for s in steps]


@pytest.mark.parametrize("template_key", ["volunteer-followup", "donor-followup"])
def test_applying_templates_in_bulk_makes_the_plans_one_at_a_time_does(session: Session, template_key: str) -> None:
    applier, owner = create_staff(session), create_staff(session)
    template = current_template(session=session, key=template_key)
    workshop, _ = plans.get_or_create_workshop(session=session, name="Atelier Lyon", on=WORKSHOP_DAY)
    one, many = create_contact(session, owner_id=owner.id), [create_contact(session, owner_id=owner.id)]
    many += [create_contact(session), create_contact(session)]
    common = {
        "enrollment_key": workshop.enrollment_key,
        "started_on": WORKSHOP_DAY,
        "applied_by": applier,
        "workshop_id": workshop.id,
        "now": ENROLLED_AT,
    }
    single = plans.get_plan(
        session=session, plan_id=plans.apply_template(session=session, template=template, contact=one, **common).plan_id
    )
    applied = plans.apply_templates(session=session, requests=[(c, template) for c in many], **common)

    assert [(p.contact_id, p.created) for p in applied] == [(c.id, True) for c in many]
    assert _shape(session, applied[0].plan_id) == _shape(session, single.id or 0)
    for result in applied:
        plan = session.get(Plan, result.plan_id)
        assert plan is not None
        assert (plan.template_id, plan.workshop_id, plan.applied_by_id, plan.status) == (
            single.template_id,
            single.workshop_id,
            single.applied_by_id,
            PlanStatus.ACTIVE,
        )
        scheduled = [s for s in plans.plan_steps(session=session, plan_id=result.plan_id) if s.due_at is not None]
        assert [(s.key, s.name, s.due_at) for s in result.scheduled] == [
            (s.step_key, s.name, s.due_at) for s in scheduled
        ]
    # the contacts without an owner fall back to the applier wherever the rule names the owner, as one by one
    assert _shape(session, applied[1].plan_id) == _shape(session, applied[2].plan_id)

    again = plans.apply_templates(session=session, requests=[(c, template) for c in [one, *many]], **common)
    assert [(p.plan_id, p.created, p.scheduled) for p in again] == [(single.id, False, ())] + [
        (p.plan_id, False, ()) for p in applied
    ]
    assert len(session.exec(select(Plan)).all()) == 4


def test_the_step_finisher_leaves_what_another_transaction_changed(session: Session) -> None:
    plan, steps = apply_volunteer_plan(session)
    finisher = plans.StepFinisher(session=session, plans=[plan])
    late = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)
    released = finisher.finish(steps[0], StepStatus.DONE, late)
    assert [(s.step_key, s.status, s.due_at) for s in released] == [
        ("resource-pack", StepStatus.SCHEDULED, at_nine_paris(date(2026, 12, 8)))
    ]
    session.refresh(steps[1])
    assert steps[1].status == StepStatus.SCHEDULED and steps[1].due_at == at_nine_paris(date(2026, 12, 8))
    # a step someone else skipped meanwhile is left as they left it
    session.execute(
        PlanStep.__table__.update().where(PlanStep.__table__.c.id == steps[2].id).values(status=StepStatus.SKIPPED)
    )
    assert finisher.finish(steps[1], StepStatus.DONE, late) == []
    for step in steps[2:]:
        session.refresh(step)
    steps[3].status = StepStatus.SCHEDULED
    finisher = plans.StepFinisher(session=session, plans=[plan])
    finisher.finish(steps[3], StepStatus.DONE, late, outcome="reached")
    session.commit()
    session.refresh(plan)
    assert plan.status == PlanStatus.COMPLETED and plan.completed_at == late


def test_skipping_a_step_releases_the_next_in_the_session_s_own_objects_and_places_its_call(
    session: Session,
) -> None:
    plan, steps = apply_volunteer_plan(session)
    finisher = plans.StepFinisher(session=session, plans=[plan])
    for step in steps[:2]:
        assert step.due_at is not None
        finisher.finish(step, StepStatus.DONE, step.due_at)
    motivation, call = steps[2:]
    skipped_on = at_nine_paris(date(2026, 12, 7))
    released = plans.skip_task(session=session, step_id=motivation.id or 0, reason="on paper", now=skipped_on)
    assert [(s.id, s.status) for s in released] == [(call.id, StepStatus.SCHEDULED)]
    # The objects this session already held show the release (no refresh), and the call took its slot at once.
    assert (motivation.status, motivation.skip_reason) == (StepStatus.SKIPPED, "on paper")
    assert (call.status, call.due_at) == (StepStatus.SCHEDULED, at_nine_paris(date(2026, 12, 23)))
    placed = session.exec(select(Call).where(Call.plan_step_id == call.id)).one()
    assert (placed.slot_start, placed.invite_pending) == (call.due_at, True)
