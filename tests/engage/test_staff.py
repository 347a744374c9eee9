from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from call_plans import enroll, release_calls, staff_member
from factories import create_contact, create_staff
from sqlalchemy import update
from sqlmodel import Session, col, select

from engage import db
from engage import staff as staff_ops
from engage.errors import EngageError, InvalidStateError, NotFoundError
from engage.plans.actions import cancel_plan
from engage.plans.calls import sync_calls
from engage.plans.handover import deactivate_staff
from engage.plans.queries import plan_steps
from engage.rules.clock import parse_days
from models import Call, PlanStep, StepStatus

NOW = datetime(2026, 12, 10, 9, tzinfo=UTC)


def test_add_staff_has_default_working_hours(session: Session) -> None:
    member, created = staff_ops.add_staff(session=session, email=" Camille@NMH.example.org ", name="Camille")
    assert created
    assert member.email == "camille@nmh.example.org"
    assert (member.work_start, member.work_end, member.work_days) == (time(9), time(17), "mon,tue,wed,thu,fri")
    assert member.active


def test_adding_again_updates_and_reactivates(session: Session) -> None:
    member, _ = staff_ops.add_staff(session=session, email="a@nmh.example.org", name="A")
    member.active = False
    again, created = staff_ops.add_staff(session=session, email="A@nmh.example.org", name="Anne", hours="10:00-16:00")
    assert not created and again.id == member.id
    assert again.name == "Anne" and again.active and again.work_start == time(10)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hours", "17:00-09:00", "must end after it starts"),
        ("hours", "nine to five", "HH:MM-HH:MM"),
        ("timezone", "Mars/Olympus", "unknown time zone"),
        ("days", "fri-mon", "run forward"),
        ("days", "lundi", "three-letter"),
    ],
)
def test_bad_staff_input_is_one_clear_error(session: Session, field: str, value: str, message: str) -> None:
    with pytest.raises(EngageError, match=message):
        staff_ops.add_staff(session=session, email="x@nmh.example.org", name="X", **{field: value})


@pytest.mark.parametrize(("text", "stored"), [("mon-fri", "mon,tue,wed,thu,fri"), ("thu,mon", "mon,thu")])
def test_parse_days(text: str, stored: str) -> None:
    assert parse_days(text) == stored


def test_deactivate_moves_contacts_to_successor(session: Session) -> None:
    leaving = create_staff(session)
    successor = create_staff(session)
    contacts = [create_contact(session, owner_id=leaving.id) for _ in range(3)]
    handover = deactivate_staff(session=session, email=leaving.email, reassign_to=successor.email, now=NOW)
    session.flush()
    assert handover.contacts == 3
    for contact in contacts:
        session.refresh(contact)
        assert contact.owner_id == successor.id
    assert not leaving.active


def test_deactivate_needs_an_active_successor(session: Session) -> None:
    leaving = create_staff(session)
    gone = create_staff(session, active=False)
    with pytest.raises(InvalidStateError):
        deactivate_staff(session=session, email=leaving.email, reassign_to=gone.email, now=NOW)
    with pytest.raises(NotFoundError, match="engage staff add"):
        deactivate_staff(session=session, email=leaving.email, reassign_to="nobody@nmh.example.org", now=NOW)
    with pytest.raises(EngageError, match="someone else"):
        deactivate_staff(session=session, email=leaving.email, reassign_to=leaving.email, now=NOW)


def test_deactivate_hands_over_every_step_not_finished_and_moves_its_call(session: Session) -> None:
    leaving = staff_member(session, "leaving@nmh.example.org", name="Leaving")
    successor = staff_member(session, "successor@nmh.example.org", name="Successor")
    (call_step,) = release_calls(session, enroll(session, 1, applier=leaving))  # emails done, the call scheduled
    enroll(session, 1, applier=leaving)  # the survey scheduled, the rest waiting
    (dropped,) = enroll(session, 1, applier=leaving)
    failed, unknown = (
        plan_steps(session=session, plan_id=plan.id or 0)[0] for plan in enroll(session, 2, applier=leaving)
    )
    session.commit()
    with db.session_scope() as work:
        sync_calls(session=work, now=NOW)  # the call takes its slot in the calendar of the one leaving
        cancel_plan(session=work, plan_id=dropped.id or 0, reason="moved away", now=NOW)
        for step, status in ((failed, StepStatus.FAILED), (unknown, StepStatus.UNKNOWN)):
            work.execute(update(PlanStep).where(col(PlanStep.id) == step.id).values(status=status))
    session.commit()
    with db.session_scope() as work:
        handover = deactivate_staff(session=work, email=leaving.email, reassign_to=successor.email, now=NOW)
    session.commit()
    by_status: dict[str, set[int | None]] = {}
    for step in session.exec(select(PlanStep)):
        by_status.setdefault(step.status, set()).add(step.assignee_id)
    # Done and cancelled steps stay with who had them; every other status moves.
    assert by_status == {
        StepStatus.DONE: {leaving.id},
        StepStatus.CANCELLED: {leaving.id},
        StepStatus.SCHEDULED: {successor.id},
        StepStatus.WAITING: {successor.id},
        StepStatus.FAILED: {successor.id},
        StepStatus.UNKNOWN: {successor.id},
    }
    assert handover.tasks == 1 + 4 + 4 + 4  # the call, the fresh plan, the failed and the unknown ones' plans
    call = session.exec(select(Call)).one()
    assert (call.plan_step_id, call.assignee_id, call.sequence, call.invite_pending) == (
        call_step.id,
        successor.id,
        1,
        True,
    )


def test_staff_cli_add_and_list(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("staff", "add", "camille@nmh.example.org", "--name", "Camille Martin", "--json")
    assert result.exit_code == 0, result
    assert result.json()["created"] is True
    listed = cli("staff", "list", "--json").json()
    assert [row["email"] for row in listed] == ["camille@nmh.example.org"]
    bad = cli("staff", "add", "x@nmh.example.org", "--name", "X", "--hours", "5pm")
    assert bad.exit_code == 1
    assert bad.stderr.count("\n") == 1 and "HH:MM-HH:MM" in bad.stderr
