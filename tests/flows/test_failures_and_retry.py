"""Failures, retries and sends in doubt: nothing is lost, nothing goes out twice without a person asking."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engage import runner
from engage.errors import StepsFailedError
from engage.mail.capture import SmtpCapture
from engage.settings import get_settings
from flows.enroll import Attendees, enroll
from flows.run_due_steps import run_due_steps
from models import Delivery, DeliveryState, PlanStep, Staff, StepStatus

STAFF = "camille@nmh.example.org"
MONDAY_NINE = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CSV = "Courriel;Prénom\n" + "".join(f"person{n}@example.org;P{n}\n" for n in range(8))


@pytest.fixture
def enrolled(prefect: str, db_url: str, session: Session) -> None:
    session.add(Staff(email=STAFF, name="Camille Martin"))
    session.commit()
    with SmtpCapture() as idle:  # nothing is due at enrollment; the flow still needs a reachable relay setting
        del idle
    enroll(
        Attendees(attendees=CSV, workshop="Atelier Lyon", date=date(2026, 11, 20), applied_by=STAFF),
        template="volunteer-followup",
        now=datetime(2026, 11, 20, 17, 0, tzinfo=UTC),
    )


def point_smtp_at(monkeypatch: pytest.MonkeyPatch, capture: SmtpCapture) -> None:
    monkeypatch.setenv("ENGAGE_SMTP_PORT", str(capture.port))
    get_settings.cache_clear()


def test_a_deferring_server_fails_the_run_then_retry_sends_only_what_is_missing(
    enrolled: None,
    cli,
    session: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("ENGAGE_SEND_RETRIES", "1")
    accepted: set[str] = set()

    def defer_after_three(address: str) -> str | None:
        if address in accepted or len(accepted) < 3:
            accepted.add(address)
            return None
        return "451 4.3.0 mailbox busy, try again later"

    with SmtpCapture(tmp_path / "a", refuse=defer_after_three) as flaky:
        point_smtp_at(monkeypatch, flaky)
        state = run_due_steps(now=MONDAY_NINE, return_state=True)
        first_batch = [m.recipients[0] for m in flaky.messages]
    assert state.is_failed() and "451 4.3.0" in str(state.message)
    with pytest.raises(StepsFailedError):
        state.result()
    assert len(first_batch) == 3
    run_id = str(state.state_details.flow_run_id)
    session.commit()
    steps = session.exec(select(PlanStep).where(PlanStep.step_key == "survey")).all()
    assert sorted(s.status for s in steps) == [StepStatus.DONE] * 3 + [StepStatus.FAILED] * 5
    failed = [s for s in steps if s.status == StepStatus.FAILED]
    assert all(s.retryable and s.flow_run_id == run_id and "451" in (s.last_error or "") for s in failed)
    # A failed step blocks its dependents until someone acts.
    blocked = session.exec(select(PlanStep).where(PlanStep.depends_on_step_id.in_([s.id for s in failed]))).all()  # type: ignore[union-attr]
    assert {s.status for s in blocked} == {StepStatus.WAITING}

    with SmtpCapture(tmp_path / "b") as healthy:
        point_smtp_at(monkeypatch, healthy)
        result = cli("retry", "--run", run_id, "--now", "2026-11-23T10:00", "--json")
        assert result.exit_code == 0, result
        assert result.json()["retried"] == 5 and result.json()["sent"] == 5
        second_batch = [m.recipients[0] for m in healthy.messages]
    assert sorted(first_batch + second_batch) == sorted(f"person{n}@example.org" for n in range(8))
    session.commit()
    assert {s.status for s in session.exec(select(PlanStep).where(PlanStep.step_key == "survey"))} == {StepStatus.DONE}
    nothing = cli("retry", "--failed", "--json").json()
    assert nothing == {"retried": 0}


def test_a_recipient_refused_for_good_is_not_retried_and_the_plan_goes_on(
    enrolled: None, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse_one(address: str) -> str | None:
        return "550 5.1.1 user unknown" if address == "person0@example.org" else None

    with SmtpCapture(tmp_path, refuse=refuse_one) as sink:
        point_smtp_at(monkeypatch, sink)
        summary = run_due_steps(now=MONDAY_NINE)
    assert (summary["sent"], summary["failed"]) == (7, 1)
    session.commit()
    refused = session.exec(select(PlanStep).where(PlanStep.status == StepStatus.FAILED)).one()
    assert not refused.retryable
    delivery = session.exec(select(Delivery).where(Delivery.plan_step_id == refused.id)).one()
    assert delivery.smtp_response is not None and delivery.smtp_response.startswith("550")
    nxt = session.exec(select(PlanStep).where(PlanStep.depends_on_step_id == refused.id)).one()
    assert nxt.status == StepStatus.SCHEDULED


def test_a_send_in_doubt_is_listed_and_resolved_by_staff(
    enrolled: None,
    cli,
    session: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    claimed = runner.claim_due_steps(now=MONDAY_NINE, claimant="killed-run", limit=2, lease_seconds=60)
    for step_id in claimed:  # the killed run had recorded its deliveries as `sending`
        session.add(Delivery(plan_step_id=step_id, kind="email", recipient="x@example.org", state="sending"))
    session.commit()
    later = MONDAY_NINE + timedelta(minutes=5)
    with SmtpCapture(tmp_path) as sink:
        point_smtp_at(monkeypatch, sink)
        summary = run_due_steps(now=later)
        assert summary["sent"] == 6 and len(sink.messages) == 6  # the two in doubt are not sent again
        unknown = cli("tasks", "list", "--unknown", "--json").json()
        assert sorted(t["id"] for t in unknown) == sorted(claimed)
        went_out, resend = claimed
        assert cli("tasks", "resolve", str(went_out), "--sent", "--as", STAFF).exit_code == 0
        resent = cli("tasks", "resolve", str(resend), "--resend", "--as", STAFF, "--now", "2026-11-23T09:05")
        assert resent.exit_code == 0
        assert cli("tasks", "resolve", str(resend), "--sent", "--as", STAFF).exit_code == 1  # no longer in doubt
        assert run_due_steps(now=later + timedelta(minutes=1))["sent"] == 1
        assert len(sink.messages) == 7
    session.commit()
    deliveries = session.exec(select(Delivery).where(Delivery.plan_step_id == resend).order_by(Delivery.sequence)).all()
    assert [(d.sequence, d.state) for d in deliveries] == [(0, DeliveryState.UNKNOWN), (1, DeliveryState.SENT)]
    confirmed = session.get(PlanStep, went_out)
    assert confirmed is not None and confirmed.status == StepStatus.DONE
    assert cli("tasks", "list", "--unknown", "--json").json() == []


def test_enrolling_with_nothing_due_runs_no_run_due_steps_subflow(enrolled: None, prefect: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    state = enroll(
        Attendees(attendees=CSV, workshop="Atelier Villeurbanne", date=date(2026, 11, 20), applied_by=STAFF),
        template="volunteer-followup",
        now=datetime(2026, 11, 20, 18, 0, tzinfo=UTC),
        return_state=True,
    )
    assert state.is_completed()
    result = state.result()
    assert result["due_now"] == runner.BatchOutcome().as_dict() | {"batches": 0, "scheduled_runs": 0}
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
        )
    assert children == []


def test_a_retried_enrollment_sends_the_steps_its_subflow_failed(
    prefect: str, db_url: str, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session.add(Staff(email=STAFF, name="Camille Martin"))
    session.commit()
    monkeypatch.setenv("ENGAGE_SEND_RETRIES", "0")
    deferred: set[str] = set()

    def defer_one_once(address: str) -> str | None:
        if address != "person3@example.org" or address in deferred:
            return None
        deferred.add(address)
        return "451 4.3.0 mailbox busy, try again later"

    with SmtpCapture(tmp_path, refuse=defer_one_once) as flaky:
        point_smtp_at(monkeypatch, flaky)
        # Enrolled on the Monday morning: the surveys are due, and the first attempt's subflow fails them.
        state = enroll.with_options(retries=1, retry_delay_seconds=0)(
            Attendees(attendees=CSV, workshop="Atelier Lyon", date=date(2026, 11, 20), applied_by=STAFF),
            template="volunteer-followup",
            now=MONDAY_NINE,
            return_state=True,
        )
        sent = sorted(m.recipients[0] for m in flaky.messages)
    assert state.is_completed(), state.message
    assert state.result()["due_now"]["sent"] == 5  # the retry sends what the first attempt failed, once
    assert sent == sorted(f"person{n}@example.org" for n in range(8))
    session.commit()
    assert {s.status for s in session.exec(select(PlanStep).where(PlanStep.step_key == "survey"))} == {StepStatus.DONE}
