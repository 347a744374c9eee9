"""The claim on its own: its UPDATE takes a step only while it is claimable, whatever the engine's transactions do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from call_plans import enroll
from sqlalchemy import create_engine, event, update
from sqlmodel import Session, col, select

from engage import db, runner
from models import PlanStep, StepStatus

MONDAY_9 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # the surveys are due


def surveys(session: Session) -> list[int]:
    session.commit()
    return sorted(
        step_id for step_id in session.exec(select(PlanStep.id).where(PlanStep.step_key == "survey")) if step_id
    )


def claim_with_a_change_in_between(url: str, change: Any, **claim: Any) -> list[int]:
    """Claim on an engine without Engage's BEGIN IMMEDIATE (pysqlite then begins only before the first write),
    running ``change`` in another transaction, committed, between the claim's SELECT and its UPDATE."""
    engine = create_engine(url)
    changed = []

    def in_between(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE PLAN_STEP") and not changed:
            with db.session_scope(url) as other:
                change(other)
            changed.append(True)

    event.listen(engine, "before_cursor_execute", in_between)
    try:
        with Session(engine) as session:
            claimed = runner.claim_steps(session=session, **claim)
            session.commit()
    finally:
        engine.dispose()
    assert changed, "the claim never reached its UPDATE"
    return claimed


@pytest.fixture
def sqlite_only(db_url: str) -> str:
    if not db_url.startswith("sqlite"):
        # On PostgreSQL the SELECT locks its rows (FOR UPDATE SKIP LOCKED): no other transaction can change them
        # before the UPDATE, so there is nothing in between to exercise.
        pytest.skip("a change between the two statements can only happen where the SELECT locks nothing")
    return db_url


def test_a_step_cancelled_between_the_select_and_the_update_is_not_claimed(sqlite_only: str, session: Session) -> None:
    enroll(session, 3)
    first, *others = surveys(session)

    def cancel_the_first(other: Session) -> None:
        other.execute(update(PlanStep).where(col(PlanStep.id) == first).values(status=StepStatus.CANCELLED))

    claimed = claim_with_a_change_in_between(
        sqlite_only, cancel_the_first, now=MONDAY_9, claimant="a", limit=10, lease_seconds=60
    )
    assert claimed == others
    session.commit()
    rows = {s.id: (s.status, s.claimed_by) for s in session.exec(select(PlanStep).where(PlanStep.step_key == "survey"))}
    assert rows == {first: (StepStatus.CANCELLED, None)} | dict.fromkeys(others, (StepStatus.RUNNING, "a"))


def test_a_step_another_run_claimed_in_between_stays_with_that_run(sqlite_only: str, session: Session) -> None:
    enroll(session, 2)
    first, second = surveys(session)
    lease = MONDAY_9 + timedelta(minutes=10)

    def other_run_claims_the_first(other: Session) -> None:
        other.execute(
            update(PlanStep)
            .where(col(PlanStep.id) == first)
            .values(status=StepStatus.RUNNING, claimed_by="b", lease_until=lease)
        )

    claimed = claim_with_a_change_in_between(
        sqlite_only, other_run_claims_the_first, now=MONDAY_9, claimant="a", limit=10, lease_seconds=60
    )
    assert claimed == [second]
    session.commit()
    taken = session.get(PlanStep, first)
    assert taken is not None and (taken.claimed_by, taken.attempts) == ("b", 0)


def test_an_expired_claim_renewed_in_between_is_not_taken(sqlite_only: str, session: Session) -> None:
    enroll(session, 1)
    (step_id,) = surveys(session)
    assert runner.claim_due_steps(now=MONDAY_9, claimant="dead", limit=10, lease_seconds=60) == [step_id]
    later = MONDAY_9 + timedelta(minutes=5)  # the lease ran out: a claim takes the step again...

    def the_run_renews_its_lease(other: Session) -> None:  # ...unless its run renews the lease first
        other.execute(update(PlanStep).where(col(PlanStep.id) == step_id).values(lease_until=later + timedelta(1)))

    claimed = claim_with_a_change_in_between(
        sqlite_only, the_run_renews_its_lease, now=later, claimant="a", limit=10, lease_seconds=60
    )
    assert claimed == []
    session.commit()
    kept = session.get(PlanStep, step_id)
    assert kept is not None and (kept.claimed_by, kept.attempts) == ("dead", 1)
