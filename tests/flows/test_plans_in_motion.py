"""The plan in motion: the enroll and run-due-steps flows on a real Prefect server and a real SMTP server."""

from __future__ import annotations

import csv
import email
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from email.policy import default as default_policy
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from engage.errors import TemplateError
from engage.local.simulate import simulate
from engage.mail.capture import SmtpCapture
from flows.enroll import Attendees, enroll
from flows.run_due_steps import run_due_steps
from models import Call, Contact, Delivery, DeliveryKind, Plan, PlanStep, Staff, StepStatus

WORKSHOP = date(2026, 11, 20)  # a Friday
EVENING = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
STAFF = "camille@nmh.example.org"


def write_attendees(folder: Path, count: int, *, opted_out: int = 0, roles: tuple[str, ...] = ("Bénévole",)) -> Path:
    path = folder / "attendees.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["Prénom", "Nom", "Courriel", "Langue", "Rôle", "Désinscrit"])
        for n in range(count):
            writer.writerow(
                [
                    f"Prénom{n}",
                    f"Nom{n}",
                    f"attendee{n}@example.org",
                    "fr" if n % 2 else "en",
                    roles[n % len(roles)],
                    "oui" if n < opted_out else "",
                ]
            )
    return path


@pytest.fixture
def staff(session: Session) -> Staff:
    member = Staff(email=STAFF, name="Camille Martin")
    session.add(member)
    session.commit()
    return member


def use_smtp(monkeypatch: pytest.MonkeyPatch, capture: SmtpCapture, **settings: str) -> None:
    """Point the runner at this SMTP server (with these other ENGAGE_ settings) from the next run on."""
    from engage.settings import get_settings

    monkeypatch.setenv("ENGAGE_SMTP_PORT", str(capture.port))
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def received_by_recipient(capture: SmtpCapture) -> dict[str, list[email.message.EmailMessage]]:
    result: dict[str, list[email.message.EmailMessage]] = defaultdict(list)
    for captured in capture.messages:
        message = email.message_from_bytes(captured.data, policy=default_policy)
        result[captured.recipients[0].lower()].append(message)  # type: ignore[arg-type]
    return result


def test_a_35_day_volunteer_plan_for_50_attendees(
    prefect: str, db_url: str, staff: Staff, session: Session, tmp_path: Path
) -> None:
    attendees = write_attendees(tmp_path, 50, opted_out=1)
    outbox = tmp_path / "outbox"
    result = simulate(
        attendees=attendees,
        template="volunteer-followup",
        workshop="Atelier Lyon",
        on=WORKSHOP,
        days=35,
        outbox=outbox,
        staff_email=STAFF,
        complete_calls=False,
    )
    assert (result.plans, result.emails_sent, result.calls_created, result.steps_skipped) == (50, 147, 50, 3)
    assert len(list(outbox.glob("*.eml"))) == 147 + 50  # the emails, and each call's invite to its assignee

    sent = session.exec(
        select(Delivery, PlanStep)
        .join(PlanStep, PlanStep.id == Delivery.plan_step_id)
        .where(Delivery.kind == DeliveryKind.EMAIL)
    ).all()
    by_plan: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    for delivery, step in sent:
        assert delivery.sent_at is not None
        by_plan[step.plan_id].append((step.step_key, delivery.sent_at))
    paris_nine = [
        datetime(2026, 11, 23, 8, tzinfo=UTC),
        datetime(2026, 11, 30, 8, tzinfo=UTC),
        datetime(2026, 12, 7, 8, tzinfo=UTC),
    ]
    assert len(by_plan) == 49
    for deliveries in by_plan.values():
        assert sorted(deliveries, key=lambda d: d[1]) == list(
            zip(["survey", "resource-pack", "motivation"], paris_nine, strict=True)
        )

    calls = session.exec(select(Call, PlanStep).join(PlanStep, PlanStep.id == Call.plan_step_id)).all()
    assert len(calls) == 50
    assert {(step.status, call.assignee_id) for call, step in calls} == {(StepStatus.OPEN, staff.id)}
    # Spread over the assignee's working hours, 15 minutes each: 32 calls on the due day, the rest the next day.
    starts = sorted(call.slot_start for call, _ in calls)
    wednesday, thursday = datetime(2026, 12, 23, 8, tzinfo=UTC), datetime(2026, 12, 24, 8, tzinfo=UTC)
    assert (starts[0], starts[31], starts[32]) == (wednesday, wednesday + timedelta(hours=7, minutes=45), thursday)
    assert len(set(starts)) == 50
    # The opted-out attendee got no email and still gets the call.
    opted_out = session.exec(select(PlanStep).where(PlanStep.status == StepStatus.SKIPPED)).all()
    assert len({s.plan_id for s in opted_out}) == 1 and len(opted_out) == 3

    again = simulate(
        attendees=attendees,
        template="volunteer-followup",
        workshop="Atelier Lyon",
        on=WORKSHOP,
        days=35,
        outbox=outbox,
        staff_email=STAFF,
        complete_calls=True,
    )
    assert (again.emails_sent, again.calls_created, again.calls_completed) == (0, 0, 50)
    assert len(list(outbox.glob("*.eml"))) == 147 + 50


def test_a_dependent_step_is_never_sent_before_its_parent_is_done(
    prefect: str,
    db_url: str,
    staff: Staff,
    session: Session,
    tmp_path: Path,
    smtp_sink: SmtpCapture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A survey whose retries ran out blocks the rest of its plan; one refused for good lets its plan go on."""
    attendees = write_attendees(tmp_path, 5)
    request = Attendees(
        attendees=attendees.read_text("utf-8"), workshop="Atelier Lyon", date=WORKSHOP, applied_by=STAFF
    )
    enroll(request, template="volunteer-followup", now=EVENING)
    gone = "attendee0@example.org"
    told_gone: list[str] = []

    def refuse(address: str) -> str | None:
        if address == gone:  # refused for good once (the survey); a later email is taken
            if told_gone:
                return None
            told_gone.append(address)
            return "550 5.1.1 mailbox unavailable"
        return "451 4.3.0 mailbox busy, try again later"  # the others: deferred until the retries run out

    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with SmtpCapture(tmp_path / "refusing", refuse=refuse) as refusing:
        use_smtp(monkeypatch, refusing, ENGAGE_SEND_RETRIES="1")
        state = run_due_steps(now=monday, return_state=True)
        assert refusing.messages == []
    assert state.is_failed() and "451 4.3.0" in str(state.message)
    session.commit()
    surveys = {
        contact_email: step
        for step, contact_email in session.exec(
            select(PlanStep, Contact.email)
            .join(Plan, Plan.id == PlanStep.plan_id)
            .join(Contact, Contact.id == Plan.contact_id)
            .where(PlanStep.step_key == "survey")
        )
    }
    assert {(email, s.status, s.retryable) for email, s in surveys.items()} == {(gone, StepStatus.FAILED, False)} | {
        (f"attendee{n}@example.org", StepStatus.FAILED, True) for n in range(1, 5)
    }

    # Long after every due date, with a relay that takes everything: only the plan whose survey was refused for
    # good goes on (its resource pack); the surveys whose retries ran out still hold back the rest of their plans.
    use_smtp(monkeypatch, smtp_sink)
    summary = run_due_steps(now=datetime(2027, 2, 1, 10, tzinfo=UTC))
    assert summary["sent"] == 1
    assert [m.recipients[0] for m in smtp_sink.messages] == [gone]
    session.commit()
    following = session.exec(
        select(PlanStep).where(col(PlanStep.depends_on_step_id).in_([s.id for s in surveys.values()]))
    ).all()
    assert sorted((s.plan_id == surveys[gone].plan_id, s.status) for s in following) == [
        (False, StepStatus.WAITING)
    ] * 4 + [(True, StepStatus.DONE)]


def test_enrolling_again_changes_nothing_and_roles_pick_the_plan(
    prefect: str, db_url: str, staff: Staff, session: Session, tmp_path: Path, smtp_sink: SmtpCapture
) -> None:
    write_attendees(tmp_path, 6, roles=("Bénévole", "Donateur"))
    request = Attendees(
        attendees="attendees.csv",
        workshop="Atelier Lyon",
        date=WORKSHOP,
        applied_by=STAFF,
        role_templates={"donor": "donor-followup"},
    )
    import os

    os.environ["ENGAGE_INBOX_DIR"] = str(tmp_path)
    try:
        from engage.settings import get_settings

        get_settings.cache_clear()
        first = enroll(request, template="volunteer-followup", now=EVENING)
        second = enroll(request, template="volunteer-followup", now=EVENING + timedelta(hours=1))
    finally:
        del os.environ["ENGAGE_INBOX_DIR"]
    assert (first["plans_created"], first["by_template"]) == (6, {"volunteer-followup": 3, "donor-followup": 3})
    assert (second["plans_created"], second["plans_existing"], second["created"]) == (0, 6, 0)
    assert len(session.exec(select(Plan)).all()) == 6


def test_an_invalid_template_stops_the_enrollment_before_anything_is_written(
    prefect: str, db_url: str, staff: Staff, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "plan_templates"
    broken.mkdir()
    (broken / "volunteer-followup.yaml").write_text("key: volunteer-followup\nname: x\nsteps: []\n", "utf-8")
    monkeypatch.setenv("ENGAGE_PLAN_TEMPLATES_DIR", str(broken))
    from engage.settings import get_settings

    get_settings.cache_clear()
    request = Attendees(attendees="Email\na@example.org\n", workshop="Atelier Lyon", date=WORKSHOP, applied_by=STAFF)
    with pytest.raises(TemplateError, match="volunteer-followup.yaml"):
        enroll(request, template="volunteer-followup", now=EVENING)
    assert session.exec(select(Plan)).all() == []


def test_two_runs_at_once_send_each_email_once(
    prefect: str, db_url: str, staff: Staff, session: Session, tmp_path: Path, smtp_sink: SmtpCapture
) -> None:
    attendees = write_attendees(tmp_path, 40)
    request = Attendees(
        attendees=attendees.read_text("utf-8"), workshop="Atelier Lyon", date=WORKSHOP, applied_by=STAFF
    )
    enroll(request, template="volunteer-followup", now=EVENING)
    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    results: list[dict[str, int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(run_due_steps(now=monday, batch_size=5))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r["sent"] for r in results) == 40
    recipients = [m.recipients[0] for m in smtp_sink.messages]
    assert len(recipients) == 40 and len(set(recipients)) == 40


def test_a_run_is_tagged_and_shows_the_people_behind_it(
    prefect: str,
    db_url: str,
    staff: Staff,
    session: Session,
    smtp_sink: SmtpCapture,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    from prefect import get_client

    request = Attendees(
        attendees="Email;Prénom\nlea@example.org;Léa\ntom@example.org;Tom\n",
        workshop="Atelier Lyon",
        date=WORKSHOP,
        applied_by=STAFF,
    )
    state = enroll(
        request, template="volunteer-followup", now=datetime(2026, 11, 23, 8, 30, tzinfo=UTC), return_state=True
    )
    assert state.is_completed()
    run_id = str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert {"template:volunteer-followup", "workshop:Atelier Lyon"} <= set(run.tags)
    assert run.name == "volunteer-followup · Atelier Lyon · 2026-11-20"
    people = cli("tasks", "list", "--run", run_id, "--status", "done", "--json").json()
    assert sorted(t["contact"] for t in people) == ["lea@example.org", "tom@example.org"]
