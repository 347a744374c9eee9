"""Calls in the ledger: a slot as soon as the call step has its date, following reassignments, reschedules, cancels."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from call_plans import CALL_DUE, call_steps, enroll, release_calls, staff_member
from sqlalchemy import event, update
from sqlmodel import Session, col, select

from engage import db, plans
from engage.plans import calls
from models import Call, Plan, PlanStatus, PlanStep, StepStatus

PARIS = ZoneInfo("Europe/Paris")


def sync(now: datetime, step_ids: list[int] | None = None) -> calls.CallSync:
    with db.session_scope() as session:
        return calls.sync_calls(session=session, now=now, step_ids=step_ids)


def change_behind_the_calls_back(
    *,
    reassign: dict[int, int | None] | None = None,
    due: dict[int, datetime] | None = None,
    cancel_plans: tuple[int, ...] | list[int] = (),
) -> None:
    """Change steps straight in the ledger, as a process that syncs no call would: what `sync_calls` catches up."""
    with db.session_scope() as work:
        for step_id, assignee_id in (reassign or {}).items():
            work.execute(update(PlanStep).where(col(PlanStep.id) == step_id).values(assignee_id=assignee_id))
        for step_id, due_at in (due or {}).items():
            work.execute(update(PlanStep).where(col(PlanStep.id) == step_id).values(due_at=due_at))
        for plan_id in cancel_plans:
            work.execute(update(Plan).where(col(Plan.id) == plan_id).values(status=PlanStatus.CANCELLED))
            work.execute(
                update(PlanStep)
                .where(col(PlanStep.plan_id) == plan_id, col(PlanStep.status) != StepStatus.DONE)
                .values(status=StepStatus.CANCELLED)
            )


def calls_by_step(session: Session) -> dict[int, Call]:
    session.commit()
    return {call.plan_step_id: call for call in session.exec(select(Call))}


def test_released_calls_get_fair_slots_and_are_pending_an_invite(session: Session) -> None:
    release_calls(session, enroll(session, 3))
    assert sync(datetime(2026, 12, 7, 8, tzinfo=UTC)).as_dict() == {
        "created": 3,
        "moved": 0,
        "cancelled": 0,
        "completed": 0,
    }
    found = sorted(calls_by_step(session).values(), key=lambda c: c.slot_start)
    assert [f"{c.slot_start.astimezone(PARIS):%a %d %H:%M}" for c in found] == [
        "Wed 23 09:00",
        "Wed 23 09:15",
        "Wed 23 09:30",
    ]
    assert all(c.invite_pending and c.sequence == 0 and c.due_at == CALL_DUE for c in found)
    assert len({c.uid for c in found}) == 3 and all(c.uid.startswith("engage-call-") for c in found)
    assert sync(datetime(2026, 12, 7, 9, tzinfo=UTC)).as_dict()["created"] == 0  # nothing twice


def test_one_workshop_after_another_never_share_a_slot(session: Session) -> None:
    release_calls(session, enroll(session, 2))
    sync(datetime(2026, 12, 7, 8, tzinfo=UTC))
    release_calls(session, enroll(session, 2, workshop="Atelier Villeurbanne"))
    sync(datetime(2026, 12, 7, 8, tzinfo=UTC))
    starts = sorted(c.slot_start for c in calls_by_step(session).values())
    assert starts == [CALL_DUE + timedelta(minutes=15 * n) for n in range(4)]


def test_placing_fifty_calls_reads_the_calendar_once(session: Session, db_url: str) -> None:
    release_calls(session, enroll(session, 50))
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    engine = db.get_engine(db_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert sync(datetime(2026, 12, 7, 8, tzinfo=UTC)).created == 50
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) <= 4, statements  # the steps, the templates, the assignees, their calls
    days = sorted({c.slot_start.astimezone(PARIS).date() for c in calls_by_step(session).values()})
    assert days == [date(2026, 12, 23), date(2026, 12, 24)]


def test_the_assignee_s_own_hours_and_time_zone_place_the_call(session: Session) -> None:
    montreal = staff_member(
        session,
        "lucie@nmh.example.org",
        name="Lucie",
        timezone="America/Toronto",
        work_start=time(10),
        work_end=time(12),
    )
    session.commit()
    release_calls(session, enroll(session, 9, applier=montreal))
    sync(datetime(2026, 12, 7, 8, tzinfo=UTC))
    local = sorted(c.slot_start.astimezone(ZoneInfo("America/Toronto")) for c in calls_by_step(session).values())
    assert [f"{t:%a %H:%M}" for t in local] == [
        "Wed 10:00",
        "Wed 10:15",
        "Wed 10:30",
        "Wed 10:45",
        "Wed 11:00",
        "Wed 11:15",
        "Wed 11:30",
        "Wed 11:45",
        "Thu 10:00",
    ]


def test_reassign_reschedule_cancel_and_complete_follow_the_step(session: Session) -> None:
    steps = release_calls(session, enroll(session, 3))
    sync(datetime(2026, 12, 7, 8, tzinfo=UTC))
    first, second, third = (s.id or 0 for s in steps)
    now = datetime(2026, 12, 10, 9, tzinfo=UTC)
    jeanne = staff_member(session, "jeanne@nmh.example.org", name="Jeanne")
    session.commit()
    with db.session_scope() as work:
        plans.reassign_task(session=work, step_id=first, email=jeanne.email, now=now)
        plans.reschedule_task(session=work, step_id=second, on=date(2026, 12, 28), now=now)
        plans.cancel_plan(session=work, plan_id=steps[2].plan_id, reason="moved away", now=now)
    for_steps = [first, second, third]
    # Each operation brought its call in line itself, in its transaction: nothing is left for a sync to do.
    assert sync(now, for_steps).as_dict() == {"created": 0, "moved": 0, "cancelled": 0, "completed": 0}
    found = calls_by_step(session)
    assert found[first].assignee_id == jeanne.id and found[first].slot_start == CALL_DUE  # Jeanne's day is free
    assert found[second].slot_start.astimezone(PARIS).date() == date(2026, 12, 28)
    assert found[third].cancelled_at == now
    assert all(found[s].sequence == 1 and found[s].invite_pending for s in for_steps)

    with db.session_scope() as work:
        plans.complete_task(session=work, step_id=first, now=CALL_DUE, outcome="wants to volunteer")
    done = calls_by_step(session)[first]
    assert (done.completed_at, done.outcome, done.sequence) == (CALL_DUE, "wants to volunteer", 1)
    assert sync(CALL_DUE).as_dict() == {"created": 0, "moved": 0, "cancelled": 0, "completed": 0}


def test_steps_changed_behind_the_calls_back_are_caught_up_by_a_sync(session: Session) -> None:
    steps = release_calls(session, enroll(session, 3))
    sync(datetime(2026, 12, 7, 8, tzinfo=UTC))
    first, second, third = (s.id or 0 for s in steps)
    now = datetime(2026, 12, 10, 9, tzinfo=UTC)
    jeanne = staff_member(session, "jeanne@nmh.example.org", name="Jeanne")
    session.commit()
    change_behind_the_calls_back(reassign={first: jeanne.id}, due={second: datetime(2026, 12, 28, 8, tzinfo=UTC)})
    change_behind_the_calls_back(cancel_plans=[steps[2].plan_id])
    assert sync(now, [first, second, third]).as_dict() == {"created": 0, "moved": 2, "cancelled": 1, "completed": 0}
    found = calls_by_step(session)
    assert found[first].assignee_id == jeanne.id and found[first].slot_start == CALL_DUE
    assert found[second].slot_start.astimezone(PARIS).date() == date(2026, 12, 28)
    assert found[third].cancelled_at == now


def test_a_contact_who_asked_not_to_be_called_gets_no_call(session: Session) -> None:
    release_calls(session, enroll(session, 1, do_not_call=True))
    assert sync(datetime(2026, 12, 7, 8, tzinfo=UTC)).created == 0


def test_a_call_still_waiting_for_its_parent_is_not_placed(session: Session) -> None:
    enroll(session, 2)
    assert sync(datetime(2026, 12, 7, 8, tzinfo=UTC)).created == 0
    assert {s.status for s in call_steps(session)} == {StepStatus.WAITING}


def test_a_due_call_without_a_slot_gets_one_from_now_when_it_opens(session: Session) -> None:
    from engage import runner

    (step,) = release_calls(session, enroll(session, 1))
    late = CALL_DUE + timedelta(hours=2, minutes=5)
    claimed = runner.claim_due_steps(now=late, claimant="t", limit=10, lease_seconds=60)
    assert runner.open_work_items(step_ids=claimed, claimant="t", now=late).opened == 1
    call = calls_by_step(session)[step.id or 0]
    assert call.slot_start == CALL_DUE + timedelta(hours=2, minutes=15)  # the next quarter hour, not in the past
    opened = session.get(PlanStep, step.id)
    assert opened is not None and opened.status == StepStatus.OPEN


def test_a_sync_in_small_chunks_gives_the_slots_of_one_big_chunk(session: Session) -> None:
    camille, jeanne, lucie = (staff_member(session, f"{n}@nmh.example.org", name=n) for n in ("c", "j", "l"))
    steps = release_calls(session, enroll(session, 5, applier=camille))
    steps += release_calls(session, enroll(session, 4, applier=jeanne, workshop="Atelier Villeurbanne"))

    def sync_and_rollback(now: datetime, chunk: int) -> tuple[dict[str, int], list[tuple[object, ...]]]:
        with Session(db.get_engine()) as work:
            held = work.get(PlanStep, steps[0].id)  # an object of the caller's stays in the caller's session
            synced = calls.sync_calls(session=work, now=now, chunk=chunk)
            assert held in work
            if chunk < 9:  # what the chunks loaded was let go of: at most the plans' templates are left
                assert {type(obj).__name__ for obj in work if obj is not held} <= {"PlanTemplate"}
            found = sorted(
                (c.plan_step_id, c.assignee_id, c.slot_start, c.slot_end, c.cancelled_at, c.sequence)
                for c in work.exec(select(Call))
            )
            work.rollback()
        return synced.as_dict(), found

    first = datetime(2026, 12, 7, 8, tzinfo=UTC)
    assert sync_and_rollback(first, chunk=3) == sync_and_rollback(first, chunk=500)
    sync(first)
    # Calls move between assignees and days, one plan closes and new calls arrive: slots freed and taken in chunks.
    now = datetime(2026, 12, 10, 9, tzinfo=UTC)
    # The steps change behind the calls' back (the operations sync their own calls, in one chunk): the sync in chunks
    # below is what catches up.
    change_behind_the_calls_back(
        reassign={**{step.id or 0: lucie.id for step in steps[:3]}, steps[7].id or 0: camille.id},
        due={steps[5].id or 0: datetime(2026, 12, 28, 8, tzinfo=UTC)},
        cancel_plans=[steps[4].plan_id],
    )
    release_calls(session, enroll(session, 4, applier=lucie, workshop="Atelier Bron"))
    small, big = sync_and_rollback(now, chunk=3), sync_and_rollback(now, chunk=500)
    assert small == big
    assert small[0] == {"created": 4, "moved": 5, "cancelled": 1, "completed": 0}
    # The slots the moved and cancelled calls leave are free again: Camille's new call takes her first one.
    moved_to_camille = next(found for found in small[1] if found[0] == steps[7].id)
    assert moved_to_camille[1:3] == (camille.id, CALL_DUE)


def test_the_task_list_gives_each_call_its_slot(cli, session: Session) -> None:  # type: ignore[no-untyped-def]
    steps = release_calls(session, enroll(session, 2))
    sync(datetime(2026, 12, 7, 8, tzinfo=UTC))
    now = datetime(2026, 12, 10, 9, tzinfo=UTC)
    with db.session_scope() as work:
        plans.cancel_plan(session=work, plan_id=steps[1].plan_id, reason="moved away", now=now)
    sync(now)
    with db.session_scope(readonly=True) as work:
        rows = plans.list_tasks(session=work, now=now, kinds=["call"])
        slots = {row.step.id: (row.call.slot_start, row.call.slot_end) if row.call else None for row in rows}
    # The open call: its slot, 15 minutes on the due day; the cancelled plan's call step is no task any more.
    assert slots == {steps[0].id: (CALL_DUE, CALL_DUE + timedelta(minutes=15))}
    (listed,) = cli("tasks", "list", "--kind", "call", "--now", "2026-12-10T10:00", "--json").json()
    assert (listed["id"], listed["call_start"]) == (steps[0].id, CALL_DUE.isoformat())
    table = cli("tasks", "list", "--kind", "call", "--now", "2026-12-10T10:00").stdout
    assert f"call at {CALL_DUE.astimezone(PARIS):%a %d %b %Y %H:%M}" in table
