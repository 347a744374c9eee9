"""The simulated clock: a whole plan played out in one process, days in seconds, on embedded defaults.

It drives the same flows a Prefect server would run, at the moments they would run: the enrollment on the evening
of the workshop, then run-due-steps at each due time, with a local SMTP capture writing every message as `.eml`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, func, select

from engage import db
from engage.errors import NotFoundError
from engage.local import flows
from engage.mail.capture import SmtpCapture
from engage.plans.actions import complete_task
from engage.settings import get_settings, settings_override
from engage.staff import add_staff, get_staff
from models import Call, Delivery, DeliveryKind, DeliveryState, Plan, PlanStep, StepKind, StepStatus, Workshop

ENROLLED_AT = time(18, 0)  # the evening of the workshop


@dataclass
class SimulationResult:
    workshop_id: int
    plans: int
    emails_sent: int
    calls_created: int
    calls_completed: int
    steps_failed: int
    steps_skipped: int
    outbox: Path
    timeline: list[tuple[date, list[str]]] = field(default_factory=list)
    enrollment: dict[str, object] = field(default_factory=dict)

    def minus(self, before: SimulationResult) -> SimulationResult:
        """This run's work: counts beyond what the ledger held before it (the timeline stays whole)."""
        return SimulationResult(
            workshop_id=self.workshop_id,
            plans=self.plans,
            emails_sent=self.emails_sent - before.emails_sent,
            calls_created=self.calls_created - before.calls_created,
            calls_completed=self.calls_completed - before.calls_completed,
            steps_failed=self.steps_failed - before.steps_failed,
            steps_skipped=self.steps_skipped - before.steps_skipped,
            outbox=self.outbox,
            timeline=self.timeline,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "workshop_id": self.workshop_id,
            "plans": self.plans,
            "emails_sent": self.emails_sent,
            "calls_created": self.calls_created,
            "calls_completed": self.calls_completed,
            "steps_failed": self.steps_failed,
            "steps_skipped": self.steps_skipped,
            "outbox": str(self.outbox),
            "enrollment": self.enrollment,
            "timeline": [{"date": day.isoformat(), "events": events} for day, events in self.timeline],
        }


def _ensure_staff(email: str) -> None:
    with db.session_scope() as session:
        try:
            get_staff(session=session, email=email)
        except NotFoundError:
            add_staff(session=session, email=email, name=email.split("@")[0].replace(".", " ").title())


def _next_due(workshop_id: int, until: datetime, condition: Any) -> datetime | None:
    """The earliest due time up to ``until`` of the workshop's steps that match ``condition``."""
    with db.session_scope(readonly=True) as session:
        return session.exec(
            select(func.min(PlanStep.due_at))
            .join(Plan, col(Plan.id) == PlanStep.plan_id)
            .where(Plan.workshop_id == workshop_id, condition, col(PlanStep.due_at) <= until)
        ).one()


def _complete_open_calls(workshop_id: int, now: datetime, staff_email: str) -> int:
    with db.session_scope() as session:
        staff = get_staff(session=session, email=staff_email)
        steps = session.exec(
            select(PlanStep)
            .join(Plan, col(Plan.id) == PlanStep.plan_id)
            .where(
                Plan.workshop_id == workshop_id,
                PlanStep.status == StepStatus.OPEN,
                col(PlanStep.kind).in_([StepKind.CALL, StepKind.TASK]),
                col(PlanStep.due_at) <= now,
            )
        ).all()
        for step in steps:
            complete_task(
                session=session, step_id=step.id or 0, now=now, by=staff, outcome="simulated: the contact was reached"
            )
        return len(steps)


def simulate(
    *,
    attendees: Path,
    template: str,
    workshop: str,
    on: date,
    days: int,
    outbox: Path,
    staff_email: str,
    complete_calls: bool = False,
    place: str | None = None,
    role_templates: dict[str, str] | None = None,
    on_day: Callable[[date, list[str]], None] | None = None,
) -> SimulationResult:
    """Play a workshop's plans through ``days`` simulated days; running it again sends nothing twice."""
    tz = ZoneInfo(get_settings().timezone)
    start = datetime.combine(on, ENROLLED_AT, tzinfo=tz).astimezone(UTC)
    end = datetime.combine(on + timedelta(days=days), time(23, 59), tzinfo=tz).astimezone(UTC)
    db.ensure_schema()
    with (
        SmtpCapture(outbox) as capture,
        settings_override(
            smtp_host="127.0.0.1",
            smtp_port=capture.port,
            smtp_security="none",
            smtp_user=None,
            smtp_password=None,
            smtp_password_block=None,
            prefect_deployments="never",
        ),
    ):
        _ensure_staff(staff_email)
        before = _snapshot(workshop, on, outbox)
        enrollment = flows.enroll(
            attendees=attendees,
            template=template,
            workshop=workshop,
            on=on,
            place=place,
            applied_by=staff_email,
            role_templates=role_templates,
            now=start,
        )
        with db.session_scope(readonly=True) as session:
            found = session.exec(select(Workshop).where(Workshop.name == workshop, Workshop.date == on)).one()
            workshop_id = found.id or 0
        now = start
        while True:
            due = _next_due(workshop_id, end, PlanStep.status == StepStatus.SCHEDULED)
            call_due = _next_due(workshop_id, end, PlanStep.status == StepStatus.OPEN) if complete_calls else None
            moments = [m for m in (due, call_due) if m is not None]
            if not moments:
                break
            now = max(now, min(moments))
            if complete_calls:
                _complete_open_calls(workshop_id, now, staff_email)
            if due is not None and due <= now:
                flows.run_due(now=now)
        with db.session_scope(readonly=True) as session:
            result = _result(session, workshop_id, outbox)
    if before is not None:
        result = result.minus(before)
    result.enrollment = {k: v for k, v in enrollment.items() if k not in ("due_now", "scheduled_runs")}
    if on_day is not None:
        for day, events in result.timeline:
            on_day(day, events)
    return result


def _snapshot(workshop: str, on: date, outbox: Path) -> SimulationResult | None:
    """What the ledger already holds for this workshop, so a second run reports only its own work."""
    with db.session_scope(readonly=True) as session:
        found = session.exec(select(Workshop).where(Workshop.name == workshop, Workshop.date == on)).first()
        return _result(session, found.id, outbox) if found is not None and found.id is not None else None


def _result(session: Session, workshop_id: int, outbox: Path) -> SimulationResult:
    tz = ZoneInfo(get_settings().timezone)
    steps = session.exec(
        select(PlanStep).join(Plan, col(Plan.id) == PlanStep.plan_id).where(Plan.workshop_id == workshop_id)
    ).all()
    step_names = {s.id: s.name for s in steps}
    deliveries = session.exec(
        select(Delivery).where(col(Delivery.plan_step_id).in_(list(step_names)), Delivery.state == DeliveryState.SENT)
    ).all()
    calls = session.exec(select(Call).where(col(Call.plan_step_id).in_(list(step_names)))).all()
    events: dict[date, Counter[str]] = defaultdict(Counter)
    for delivery in deliveries:
        assert delivery.sent_at is not None
        # A call step's deliveries are the calendar invites its assignee gets, not emails to the contact.
        what = "sent" if delivery.kind == DeliveryKind.EMAIL else f"calendar {delivery.kind} to staff"
        events[delivery.sent_at.astimezone(tz).date()][f"{step_names[delivery.plan_step_id]}: {what}"] += 1
    for call in calls:
        events[call.created_at.astimezone(tz).date()][f"{step_names[call.plan_step_id]}: call slot booked"] += 1
    for step in steps:
        if step.status == StepStatus.SKIPPED and step.completed_at:
            events[step.completed_at.astimezone(tz).date()][f"{step.name}: skipped ({step.skip_reason})"] += 1
        if step.status == StepStatus.FAILED and step.completed_at:
            events[step.completed_at.astimezone(tz).date()][f"{step.name}: failed"] += 1
        if step.kind == StepKind.CALL and step.status == StepStatus.DONE and step.completed_at:
            events[step.completed_at.astimezone(tz).date()][f"{step.name}: call completed"] += 1
    timeline = [
        (day, [f"{count} × {what}" for what, count in sorted(counter.items())])
        for day, counter in sorted(events.items())
    ]
    plans = session.exec(select(func.count()).select_from(Plan).where(Plan.workshop_id == workshop_id)).one()
    return SimulationResult(
        workshop_id=workshop_id,
        plans=plans,
        emails_sent=sum(1 for delivery in deliveries if delivery.kind == DeliveryKind.EMAIL),
        calls_created=len(calls),
        calls_completed=sum(1 for s in steps if s.kind == StepKind.CALL and s.status == StepStatus.DONE),
        steps_failed=sum(1 for s in steps if s.status == StepStatus.FAILED),
        steps_skipped=sum(1 for s in steps if s.status == StepStatus.SKIPPED),
        outbox=outbox,
        timeline=timeline,
    )
