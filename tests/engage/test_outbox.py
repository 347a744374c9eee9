"""The outbox's protocol for every kind of message, against real SMTP servers and both ledgers.

One transient rule for all: a delivery the server deferred (4xx) or could not take (unreachable) stays in the
ledger as `deferred`, the run raises TransientSendError, and the next attempt is a new delivery with the next
sequence. A delivery left `sending` by a crash becomes `unknown` and is never sent again, whatever its kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from call_plans import enroll, received, release_calls, staff_member
from sqlmodel import Session, col, select

from engage import db, digest, runner
from engage.errors import TransientSendError
from engage.invites.send import send_pending_invites
from engage.mail.capture import SmtpCapture
from engage.mail.outbox import recover_stale_deliveries
from engage.plans import calls
from engage.previews import send_test_email
from engage.settings import get_settings
from models import Call, Delivery, DeliveryKind, DeliveryState, PlanStep, StaffDigest, StepStatus

MONDAY_9 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the first survey goes out
RELEASED = datetime(2026, 12, 7, 8, tzinfo=UTC)
WEDNESDAY_7_PARIS = datetime(2026, 12, 23, 6, 5, tzinfo=UTC)
BUSY = "451 4.3.0 mailbox busy, try again later"


class DeferringServer(SmtpCapture):
    """An SMTP server that defers every message (451) while ``deferring`` is true."""

    def __init__(self, outbox: Path) -> None:
        self.deferring = True
        super().__init__(outbox, refuse=lambda _: BUSY if self.deferring else None)


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[DeferringServer]:
    with DeferringServer(tmp_path / "outbox") as capture:
        monkeypatch.setenv("ENGAGE_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("ENGAGE_SMTP_PORT", str(capture.port))
        get_settings.cache_clear()
        yield capture


def attempts(session: Session, kind: str) -> list[tuple[int, str, str | None]]:
    session.commit()  # end the test session's snapshot: see what the code under test wrote
    rows = session.exec(select(Delivery).where(Delivery.kind == kind).order_by(col(Delivery.id)))
    return [(d.sequence, d.state, (d.smtp_response or "")[:3] or None) for d in rows]


# --- the transient rule, kind by kind ------------------------------------------------------------------------------


def test_a_deferred_email_stays_deferred_and_the_retry_takes_the_next_sequence(
    session: Session, smtp: DeferringServer
) -> None:
    (plan,) = enroll(session, 1)
    claimed = runner.claim_due_steps(now=MONDAY_9, claimant="r1", limit=10, lease_seconds=600)
    with pytest.raises(TransientSendError, match="451"):
        runner.send_email_batch(step_ids=claimed, claimant="r1", now=MONDAY_9)
    assert attempts(session, DeliveryKind.EMAIL) == [(0, DeliveryState.DEFERRED, "451")]
    (step,) = session.exec(select(PlanStep).where(PlanStep.id.in_(claimed))).all()  # type: ignore[union-attr]
    assert step.status == StepStatus.RUNNING and "451" in (step.last_error or "")  # the claim holds for the retry

    smtp.deferring = False
    assert runner.send_email_batch(step_ids=claimed, claimant="r1", now=MONDAY_9).sent == 1
    assert attempts(session, DeliveryKind.EMAIL) == [(0, DeliveryState.DEFERRED, "451"), (1, DeliveryState.SENT, "250")]
    assert len(smtp.messages) == 1 and plan.id is not None  # one email went out, on the second attempt


def test_a_deferred_invite_stays_deferred_and_the_next_pass_takes_the_next_sequence(
    session: Session, smtp: DeferringServer
) -> None:
    release_calls(session, enroll(session, 1))
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=RELEASED)
    with pytest.raises(TransientSendError, match="451"):
        send_pending_invites(now=RELEASED)
    assert attempts(session, DeliveryKind.INVITE) == [(0, DeliveryState.DEFERRED, "451")]
    assert session.exec(select(Call)).one().invite_pending

    smtp.deferring = False
    assert send_pending_invites(now=RELEASED + timedelta(minutes=5)).requests == 1
    assert attempts(session, DeliveryKind.INVITE) == [
        (0, DeliveryState.DEFERRED, "451"),
        (1, DeliveryState.SENT, "250"),
    ]
    assert not session.exec(select(Call)).one().invite_pending


def test_a_deferred_digest_keeps_its_day_and_is_sent_once_later_that_day(
    session: Session, smtp: DeferringServer
) -> None:
    staff_member(session)
    release_calls(session, enroll(session, 2, first_name="Léa"))
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=RELEASED)
    with pytest.raises(TransientSendError, match="451"):
        digest.send_digests(now=WEDNESDAY_7_PARIS)
    assert attempts(session, DeliveryKind.DIGEST) == [(0, DeliveryState.DEFERRED, "451")]
    (day,) = session.exec(select(StaffDigest)).all()
    assert day.items == 2  # the day was decided before the server was asked, and stays decided

    smtp.deferring = False
    later = digest.send_digests(now=WEDNESDAY_7_PARIS + timedelta(minutes=10))
    assert (later.sent, later.already_done) == (1, 0)
    assert attempts(session, DeliveryKind.DIGEST) == [
        (0, DeliveryState.DEFERRED, "451"),
        (1, DeliveryState.SENT, "250"),
    ]
    assert digest.send_digests(now=WEDNESDAY_7_PARIS + timedelta(hours=1)).already_done == 1
    assert len(received(smtp)) == 1
    assert len(session.exec(select(StaffDigest)).all()) == 1


def test_a_deferred_test_send_is_recorded_and_raised(db_url: str, session: Session, smtp: DeferringServer) -> None:
    with pytest.raises(TransientSendError, match="451"):
        send_test_email(template_key="volunteer-followup", step_key="survey", to="me@nmh.example.org")
    smtp.deferring = False
    sent = send_test_email(template_key="volunteer-followup", step_key="survey", to="me@nmh.example.org")
    assert sent.answer.startswith("250")
    assert attempts(session, DeliveryKind.TEST) == [(0, DeliveryState.DEFERRED, "451"), (0, DeliveryState.SENT, "250")]
    test_sends = session.exec(
        select(Delivery).where(Delivery.kind == DeliveryKind.TEST).order_by(col(Delivery.id))
    ).all()
    assert {(d.plan_step_id, d.staff_digest_id, d.recipient) for d in test_sends} == {
        (None, None, "me@nmh.example.org")
    }
    assert test_sends[1].message_id == sent.preview.email.message_id


# --- crash recovery ------------------------------------------------------------------------------------------------


def test_a_digest_left_sending_by_a_crash_becomes_unknown_and_is_never_sent_again(
    session: Session, smtp_sink: SmtpCapture
) -> None:
    camille = staff_member(session)
    release_calls(session, enroll(session, 1))
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=RELEASED)
    # A run decided Camille's day and recorded its email `sending`, then died before the SMTP server answered.
    session.commit()  # on SQLite the test's own write needs a fresh snapshot
    day = StaffDigest(staff_id=camille.id or 0, day=WEDNESDAY_7_PARIS.date(), items=1, created_at=WEDNESDAY_7_PARIS)
    session.add(day)
    session.commit()
    session.add(
        Delivery(
            staff_digest_id=day.id,
            kind=DeliveryKind.DIGEST,
            recipient=camille.email,
            state=DeliveryState.SENDING,
            created_at=WEDNESDAY_7_PARIS,
        )
    )
    session.commit()

    soon = digest.send_digests(now=WEDNESDAY_7_PARIS + timedelta(minutes=1))  # within the lease: still in doubt
    assert (soon.sent, soon.already_done) == (0, 1)
    assert attempts(session, DeliveryKind.DIGEST) == [(0, DeliveryState.SENDING, None)]
    later = digest.send_digests(now=WEDNESDAY_7_PARIS + timedelta(minutes=11))
    assert (later.sent, later.already_done) == (0, 1)
    assert attempts(session, DeliveryKind.DIGEST) == [(0, DeliveryState.UNKNOWN, None)]
    assert smtp_sink.messages == []


def test_an_invite_left_sending_by_a_crash_becomes_unknown_and_is_never_sent_again(
    session: Session, smtp_sink: SmtpCapture
) -> None:
    (step,) = release_calls(session, enroll(session, 1))
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=RELEASED)
    session.commit()  # on SQLite the test's own write needs a fresh snapshot
    session.add(
        Delivery(
            plan_step_id=step.id,
            kind=DeliveryKind.INVITE,
            recipient="camille@nmh.example.org",
            state=DeliveryState.SENDING,
            created_at=RELEASED,
        )
    )
    session.commit()
    outcome = send_pending_invites(now=RELEASED + timedelta(minutes=11))
    assert outcome.sent == 0 and smtp_sink.messages == []
    assert attempts(session, DeliveryKind.INVITE) == [(0, DeliveryState.UNKNOWN, None)]
    # The calendar may hold the call: nothing more to tell it until the call changes.
    assert not session.exec(select(Call)).one().invite_pending
    assert send_pending_invites(now=RELEASED + timedelta(hours=1)).sent == 0


def test_an_email_left_sending_takes_its_step_to_unknown_once_its_claim_expired(session: Session) -> None:
    enroll(session, 2)
    first, second = runner.claim_due_steps(now=MONDAY_9, claimant="dead-run", limit=10, lease_seconds=60)
    for step_id in (first, second):
        session.add(
            Delivery(
                plan_step_id=step_id,
                kind=DeliveryKind.EMAIL,
                recipient="x@example.org",
                state=DeliveryState.SENDING,
                created_at=MONDAY_9,
            )
        )
    session.commit()
    # The second step's claim was taken again by a live run, whose lease still runs: that run finishes it.
    with db.session_scope() as work:
        moved = work.get(PlanStep, second)
        assert moved is not None
        moved.lease_until = MONDAY_9 + timedelta(hours=1)
        work.add(moved)
    with db.session_scope() as work:
        assert (
            recover_stale_deliveries(
                session=work, now=MONDAY_9 + timedelta(minutes=20), older_than=timedelta(minutes=10)
            )
            == 1
        )
    session.commit()
    states = {d.plan_step_id: d.state for d in session.exec(select(Delivery))}
    assert states == {first: DeliveryState.UNKNOWN, second: DeliveryState.SENDING}
    steps = {s.id: s.status for s in session.exec(select(PlanStep).where(col(PlanStep.id).in_([first, second])))}
    assert steps == {first: StepStatus.UNKNOWN, second: StepStatus.RUNNING}
