from __future__ import annotations

import email
import threading
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
from factories import apply_seed_plans, create_staff
from sqlmodel import Session, select

from engage import plans, runner
from engage.contacts.lookup import get_contact_by_id
from engage.errors import RenderError, TransientSendError
from engage.mail.capture import SmtpCapture
from models import Call, Delivery, DeliveryState, PlanStep, StepStatus, id_of

MONDAY_9 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Paris


def enroll(session: Session, count: int, template: str = "volunteer-followup", **contact_fields: object) -> list[int]:
    applier = create_staff(session, name="Camille Martin", email="camille@nmh.example.org")
    contacts = [dict(contact_fields) for _ in range(count)]
    ids = [id_of(plan) for plan in apply_seed_plans(session, contacts, applier=applier, template=template)]
    session.commit()  # end the snapshot reading the ids took: the tests then see what the runner writes
    return ids


def run_all_due(now: datetime, claimant: str = "test") -> runner.BatchOutcome:
    total = runner.BatchOutcome()
    while claimed := runner.claim_due_steps(now=now, claimant=claimant, limit=50, lease_seconds=600):
        for group in runner.group_claims(step_ids=claimed):
            if group.kind == "email":
                total.add(runner.send_email_batch(step_ids=group.step_ids, claimant=claimant, now=now))
            else:
                total.add(runner.open_work_items(step_ids=group.step_ids, claimant=claimant, now=now))
    return total


def parsed(capture: SmtpCapture) -> list[Message]:
    return [email.message_from_bytes(m.data) for m in capture.messages]


def test_nothing_is_claimed_before_it_is_due(session: Session, smtp_sink: SmtpCapture) -> None:
    enroll(session, 3)
    assert runner.claim_due_steps(now=MONDAY_9 - timedelta(minutes=1), claimant="a", limit=10, lease_seconds=60) == []


def test_due_emails_are_sent_recorded_and_release_the_next_step(session: Session, smtp_sink: SmtpCapture) -> None:
    enroll(session, 3)
    outcome = run_all_due(MONDAY_9)
    assert (outcome.sent, outcome.failed, outcome.skipped) == (3, 0, 0)
    messages = parsed(smtp_sink)
    assert len(messages) == 3
    assert all(m["Reply-To"].endswith("<camille@nmh.example.org>") for m in messages)
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in messages)
    deliveries = session.exec(select(Delivery)).all()
    assert {d.state for d in deliveries} == {DeliveryState.SENT}
    assert {d.message_id for d in deliveries} == {m["Message-ID"] for m in messages}
    released = session.exec(select(PlanStep).where(PlanStep.step_key == "resource-pack")).all()
    assert {(s.status, s.due_at) for s in released} == {
        (StepStatus.SCHEDULED, datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    }
    assert [item.run_name for item in runner.unique_due_items(outcome.released)] == [
        "Atelier Lyon · day 10 · Resource pack"
    ]
    assert run_all_due(MONDAY_9).sent == 0  # nothing twice


def test_an_opted_out_contact_is_skipped_with_the_reason_and_the_plan_goes_on(
    session: Session, smtp_sink: SmtpCapture
) -> None:
    enroll(session, 1, email_opt_out=True, email_opt_out_source="import:attendees.csv")
    outcome = run_all_due(MONDAY_9)
    assert (outcome.sent, outcome.skipped) == (0, 1)
    survey, resource_pack = session.exec(select(PlanStep).order_by(PlanStep.position)).all()[:2]
    assert survey.status == StepStatus.SKIPPED and "opted out" in (survey.skip_reason or "")
    assert resource_pack.status == StepStatus.SCHEDULED
    assert smtp_sink.messages == []


def test_emails_wait_for_the_send_window(session: Session, smtp_sink: SmtpCapture) -> None:
    enroll(session, 2)
    evening = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)  # 20:00 in Paris
    outcome = run_all_due(evening)
    assert (outcome.sent, outcome.deferred) == (0, 2)
    steps = session.exec(select(PlanStep).where(PlanStep.step_key == "survey")).all()
    assert {(s.status, s.due_at) for s in steps} == {(StepStatus.SCHEDULED, datetime(2026, 11, 24, 8, 0, tzinfo=UTC))}


def test_a_recipient_refused_for_good_fails_that_delivery_only(session: Session, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from engage.settings import get_settings

    enroll(session, 3)
    bad = session.exec(select(PlanStep).where(PlanStep.step_key == "survey")).first()
    assert bad is not None
    bad_email = get_contact_by_id(
        session=session, contact_id=plans.get_plan(session=session, plan_id=bad.plan_id).contact_id
    ).email

    def refuse(address: str) -> str | None:
        return "550 5.1.1 mailbox unavailable" if address.lower() == bad_email.lower() else None

    with SmtpCapture(tmp_path / "outbox", refuse=refuse) as capture:
        monkeypatch.setenv("ENGAGE_SMTP_PORT", str(capture.port))
        get_settings.cache_clear()
        outcome = run_all_due(MONDAY_9)
    assert (outcome.sent, outcome.failed) == (2, 1)
    session.commit()
    refused = session.get(PlanStep, bad.id)
    assert refused is not None and refused.status == StepStatus.FAILED
    delivery = session.exec(select(Delivery).where(Delivery.plan_step_id == bad.id)).one()
    assert delivery.state == DeliveryState.FAILED and (delivery.smtp_response or "").startswith("550")
    dependent = session.exec(select(PlanStep).where(PlanStep.depends_on_step_id == bad.id)).one()
    assert dependent.status == StepStatus.SCHEDULED  # the plan goes on: the call matters more now


def test_a_server_that_does_not_answer_raises_transient_and_keeps_the_claim(session: Session, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from engage.settings import get_settings

    enroll(session, 2)
    with SmtpCapture() as closed:
        port = closed.port
    monkeypatch.setenv("ENGAGE_SMTP_PORT", str(port))
    get_settings.cache_clear()
    claimed = runner.claim_due_steps(now=MONDAY_9, claimant="r1", limit=10, lease_seconds=600)
    with pytest.raises(TransientSendError, match="cannot connect"):
        runner.send_email_batch(step_ids=claimed, claimant="r1", now=MONDAY_9)
    session.commit()
    assert {s.status for s in session.exec(select(PlanStep).where(PlanStep.step_key == "survey"))} == {
        StepStatus.RUNNING
    }
    assert runner.mark_failed(step_ids=claimed, claimant="r1", error="retries ran out", now=MONDAY_9) == 2
    session.commit()
    survey_steps = session.exec(select(PlanStep).where(PlanStep.step_key == "survey")).all()
    assert {s.status for s in survey_steps} == {StepStatus.FAILED}
    # A failed step blocks its dependents until someone acts.
    assert {s.status for s in session.exec(select(PlanStep).where(PlanStep.step_key == "resource-pack"))} == {
        StepStatus.WAITING
    }


def test_an_expired_claim_is_taken_again_and_a_send_in_doubt_becomes_unknown(session: Session) -> None:
    enroll(session, 2)
    first, second = runner.claim_due_steps(now=MONDAY_9, claimant="dead-run", limit=10, lease_seconds=60)
    # The dead run had recorded one delivery as `sending` when it was killed.
    session.add(Delivery(plan_step_id=first, kind="email", recipient="x@example.org", state=DeliveryState.SENDING))
    session.commit()
    assert runner.claim_due_steps(now=MONDAY_9 + timedelta(seconds=30), claimant="b", limit=10, lease_seconds=60) == []
    retaken = runner.claim_due_steps(now=MONDAY_9 + timedelta(minutes=2), claimant="b", limit=10, lease_seconds=60)
    assert retaken == [second]
    session.commit()
    in_doubt = session.get(PlanStep, first)
    assert in_doubt is not None and in_doubt.status == StepStatus.UNKNOWN
    assert session.exec(select(Delivery)).one().state == DeliveryState.UNKNOWN


def test_has_due_steps_says_whether_a_claim_would_find_a_step(session: Session) -> None:
    assert not runner.has_due_steps(now=MONDAY_9)  # an empty ledger
    enroll(session, 2)
    assert not runner.has_due_steps(now=MONDAY_9 - timedelta(seconds=1))
    assert runner.has_due_steps(now=MONDAY_9)  # due at 09:00 sharp
    claimed = runner.claim_due_steps(now=MONDAY_9, claimant="a", limit=10, lease_seconds=60)
    assert len(claimed) == 2
    assert not runner.has_due_steps(now=MONDAY_9 + timedelta(seconds=30))  # claimed, their lease still runs
    assert runner.has_due_steps(now=MONDAY_9 + timedelta(minutes=2))  # the lease expired: a claim takes them again
    assert runner.claim_due_steps(now=MONDAY_9 + timedelta(minutes=2), claimant="b", limit=10, lease_seconds=60)


def test_concurrent_claims_never_take_the_same_step(session: Session) -> None:
    enroll(session, 60)
    results: dict[str, list[int]] = {}

    def claim(name: str) -> None:
        taken: list[int] = []
        while batch := runner.claim_due_steps(now=MONDAY_9, claimant=name, limit=7, lease_seconds=600):
            taken.extend(batch)
        results[name] = taken

    threads = [threading.Thread(target=claim, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [step_id for taken in results.values() for step_id in taken]
    assert len(claimed) == 60 and len(set(claimed)) == 60


def test_due_calls_become_open_work_items_for_the_assignee(session: Session) -> None:
    enroll(session, 1)
    steps = session.exec(select(PlanStep).order_by(PlanStep.position)).all()
    finisher = plans.StepFinisher(session=session, plans=[plans.get_plan(session=session, plan_id=steps[0].plan_id)])
    for step in steps[:3]:
        assert step.due_at is not None
        finisher.finish(step, StepStatus.DONE, step.due_at)
    session.commit()
    call_step = steps[3]
    session.refresh(call_step)
    assert call_step.due_at is not None
    outcome = run_all_due(call_step.due_at)
    assert outcome.opened == 1
    session.commit()
    opened = session.get(PlanStep, call_step.id)
    assert opened is not None and opened.status == StepStatus.OPEN
    call = session.exec(select(Call)).one()
    assert call.assignee_id == opened.assignee_id and call.slot_start == opened.due_at


def test_an_answer_lost_after_the_message_was_handed_over_is_unknown_not_resent(
    session: Session,
    tmp_path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    from engage.settings import get_settings

    enroll(session, 4)
    lost = "contact-lost@example.org"
    survey = session.exec(select(PlanStep).where(PlanStep.step_key == "survey")).first()
    assert survey is not None
    contact = get_contact_by_id(
        session=session, contact_id=plans.get_plan(session=session, plan_id=survey.plan_id).contact_id
    )
    contact.email, contact.email_key = lost, lost
    session.add(contact)
    session.commit()
    with SmtpCapture(tmp_path / "outbox", lose_answer=lambda address: address == lost) as capture:
        monkeypatch.setenv("ENGAGE_SMTP_PORT", str(capture.port))
        get_settings.cache_clear()
        outcome = run_all_due(MONDAY_9)
        assert (outcome.sent, outcome.unknown) == (3, 1)
        assert len(capture.messages) == 4  # the relay has it; we cannot know
        assert run_all_due(MONDAY_9 + timedelta(minutes=5)).sent == 0
        assert len(capture.messages) == 4
    session.commit()
    in_doubt = session.get(PlanStep, survey.id)
    assert in_doubt is not None and in_doubt.status == StepStatus.UNKNOWN
    assert session.exec(select(Delivery).where(Delivery.plan_step_id == survey.id)).one().state == DeliveryState.UNKNOWN


def test_a_claim_takes_no_more_than_its_limit(session: Session) -> None:
    enroll(session, 30)
    assert len(runner.claim_due_steps(now=MONDAY_9, claimant="a", limit=2, lease_seconds=60)) == 2
    assert len(runner.claim_due_steps(now=MONDAY_9, claimant="b", limit=5, lease_seconds=60)) == 5


def test_batches_sent_at_once_send_each_email_once(session: Session, smtp_sink: SmtpCapture) -> None:
    """Four batches on four threads, each with its own connection, as run-due-steps runs them."""
    enroll(session, 40)
    claims = [runner.claim_due_steps(now=MONDAY_9, claimant="run", limit=10, lease_seconds=600) for _ in range(4)]
    outcomes: list[runner.BatchOutcome] = []
    threads = [
        threading.Thread(
            target=lambda ids=ids: outcomes.append(runner.send_email_batch(step_ids=ids, claimant="run", now=MONDAY_9))
        )
        for ids in claims
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.sent for o in outcomes) == [10, 10, 10, 10]
    recipients = [m["To"] for m in parsed(smtp_sink)]
    assert len(recipients) == len(set(recipients)) == 40
    states = session.exec(select(Delivery.state, PlanStep.status).join(PlanStep)).all()
    assert set(states) == {(DeliveryState.SENT, StepStatus.DONE)} and len(states) == 40
    released = session.exec(select(PlanStep).where(PlanStep.step_key == "resource-pack")).all()
    assert {s.status for s in released} == {StepStatus.SCHEDULED}


def test_an_accepted_email_is_recorded_sent_when_the_next_one_cannot_be_rendered(
    session: Session, smtp_sink: SmtpCapture, workspace: Path
) -> None:
    """The `sent` of a message rides with the next message's commit; a failure before that commit keeps it."""
    applier = create_staff(session, name="Camille Martin", email="camille@nmh.example.org")
    apply_seed_plans(session, [{"language": "en"}, {"language": "fr"}, {"language": "en"}], applier=applier)
    session.commit()
    # The French text breaks after the plans were made: the second contact's email cannot be rendered.
    body = workspace / "email_templates/volunteer/survey/fr/body.txt"
    body.write_text(body.read_text(encoding="utf-8") + "{{ contact.nme }}\n", encoding="utf-8")
    claimed = runner.claim_due_steps(now=MONDAY_9, claimant="run", limit=10, lease_seconds=600)
    with pytest.raises(RenderError, match="contact.nme"):
        runner.send_email_batch(step_ids=claimed, claimant="run", now=MONDAY_9)
    assert len(smtp_sink.messages) == 1
    deliveries = session.exec(select(Delivery.state, PlanStep.status).join(PlanStep)).all()
    assert deliveries == [(DeliveryState.SENT, StepStatus.DONE)]
    dependent = session.exec(select(PlanStep).where(PlanStep.step_key == "resource-pack").order_by(PlanStep.id)).first()
    assert dependent is not None and dependent.status == StepStatus.SCHEDULED


def test_a_long_refusal_is_stored_cut_to_the_column(session: Session, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from engage.settings import get_settings

    enroll(session, 1)
    with SmtpCapture(tmp_path / "outbox", refuse=lambda _: "550 5.1.1 " + "no such mailbox " * 100) as capture:
        monkeypatch.setenv("ENGAGE_SMTP_PORT", str(capture.port))
        get_settings.cache_clear()
        outcome = run_all_due(MONDAY_9)
    assert outcome.failed == 1
    delivery = session.exec(select(Delivery)).one()
    assert delivery.state == DeliveryState.FAILED and len(delivery.smtp_response or "") == 1000
