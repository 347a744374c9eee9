"""Plans whose follow-up call has its date: what the call, invite and digest tests start from."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from factories import apply_seed_plans, create_staff
from icalendar import Calendar
from sqlmodel import Session, col, select

from engage import plans
from engage.mail.capture import SmtpCapture
from models import Plan, PlanStep, Staff, StepKind, StepStatus

ENROLLED = datetime(2026, 11, 20, 17, tzinfo=UTC)
CALL_DUE = datetime(2026, 12, 23, 8, tzinfo=UTC)  # Wednesday 09:00 in Paris: day 33 when every email went on time
MOTIVATION_SENT = datetime(2026, 12, 7, 8, tzinfo=UTC)


def staff_member(session: Session, email: str = "camille@nmh.example.org", **fields: Any) -> Staff:
    session.commit()  # on SQLite a write needs a fresh snapshot: the code under test may have written meanwhile
    found = session.exec(select(Staff).where(Staff.email == email)).first()
    return found or create_staff(session, email=email, name=fields.pop("name", "Camille Martin"), **fields)


def enroll(
    session: Session,
    count: int,
    *,
    template: str = "volunteer-followup",
    applier: Staff | None = None,
    workshop: str = "Atelier Lyon",
    **contact_fields: Any,
) -> list[Plan]:
    """Apply a seed template to ``count`` new contacts of a workshop; committed."""
    session.commit()
    contacts = [dict(contact_fields) for _ in range(count)]
    return apply_seed_plans(
        session, contacts, applier=applier or staff_member(session), template=template, workshop=workshop
    )


def release_calls(session: Session, enrolled: list[Plan]) -> list[PlanStep]:
    """Complete every step before the call, each on its due time, as the runner does; return the call steps."""
    session.commit()
    calls = []
    for plan in enrolled:
        finisher = plans.StepFinisher(session=session, plans=[plan])
        for step in plans.plan_steps(session=session, plan_id=plan.id or 0):
            if step.kind == StepKind.CALL:
                calls.append(step)
                continue
            # The finisher gave the step the date its parent's completion released: no refresh needed.
            assert step.due_at is not None, f"{step.step_key} has no date"
            finisher.finish(step, StepStatus.DONE, step.due_at)
    session.commit()
    for step in calls:
        session.refresh(step)
    return calls


def call_steps(session: Session) -> list[PlanStep]:
    session.commit()  # end the test session's snapshot: see what the code under test wrote
    return list(session.exec(select(PlanStep).where(PlanStep.kind == StepKind.CALL).order_by(col(PlanStep.id))))


def received(capture: SmtpCapture) -> list[tuple[str, EmailMessage]]:
    """Every message the SMTP server accepted: (recipient, message read back as a mail client would)."""
    result = []
    for captured in capture.messages:
        message = email.message_from_bytes(captured.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        result.append((captured.recipients[0], message))
    return result


def calendar_of(message: EmailMessage) -> tuple[str, Calendar]:
    """The `text/calendar` part of an invite: its method parameter and the calendar it holds."""
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    return str(part.get_param("method")), Calendar.from_ical(part.get_content())
