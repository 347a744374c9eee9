"""The staff digest: each staff member's morning email of their calls and tasks of the day, what is overdue, and what
came up since the last one (sends whose fate is unknown, failed steps on their plans).

It goes out once per staff member and local day (a `staff_digest` row, unique per person and day, written before the
SMTP server is asked), on their working days, from ``ENGAGE_DIGEST_TIME`` in their own time zone. Whoever has nothing
to do gets no email: the day is recorded as empty instead. Texts are Jinja2 templates in ``email_templates/digest/``,
one folder per language; counts, never names, go to logs and artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import delete, func, or_
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from engage import db
from engage.calls import working_hours
from engage.errors import InvalidStateError
from engage.mailer import PermanentSendError, SendOutcomeUnknownError, SmtpSender, TransientSendError, new_message_id
from engage.rendering import long_date
from engage.reports import redact
from engage.settings import Settings, get_settings
from engage.staff import get_staff
from models import (
    Call,
    Contact,
    DeliveryState,
    Plan,
    PlanStep,
    Staff,
    StaffDigest,
    StepKind,
    StepStatus,
    id_of,
)

__all__ = [
    "Digest",
    "DigestLine",
    "DigestOutcome",
    "RenderedDigest",
    "collect_digests",
    "digest_due",
    "digest_email",
    "render_digest",
    "send_digests",
]

log = logging.getLogger(__name__)

#: Statuses of calls and tasks someone still has to do.
TO_DO = (StepStatus.SCHEDULED, StepStatus.RUNNING, StepStatus.OPEN)
#: Statuses that "came up": a send whose fate is unknown, a step that failed.
NEWS = (StepStatus.FAILED, StepStatus.UNKNOWN)
#: A day whose digest had nothing to say (no email went out).
EMPTY = "empty"
#: How far back "since the last digest" looks at most, for someone who had none for a while.
_LOOK_BACK = timedelta(days=7)


@dataclass(frozen=True)
class DigestLine:
    """One item of a digest: a call or task to do, or something that came up."""

    step_id: int
    kind: str
    status: str
    step_name: str
    contact_name: str
    contact_phone: str | None
    template_key: str
    when: datetime | None
    fallback: bool = False
    detail: str | None = None


@dataclass
class Digest:
    """One staff member's digest of one day."""

    staff: Staff
    day: date
    today: list[DigestLine] = field(default_factory=list)
    overdue: list[DigestLine] = field(default_factory=list)
    news: list[DigestLine] = field(default_factory=list)

    @property
    def items(self) -> int:
        return len(self.today) + len(self.overdue) + len(self.news)

    @property
    def calls_today(self) -> list[DigestLine]:
        return [line for line in self.today if line.kind == StepKind.CALL]

    @property
    def tasks_today(self) -> list[DigestLine]:
        return [line for line in self.today if line.kind != StepKind.CALL]


def _day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


def digest_due(staff: Staff, now: datetime, at: time) -> bool:
    """Whether it is this staff member's digest time: a working day of theirs, from ``at`` until their day ends."""
    hours = working_hours(staff)
    local = now.astimezone(hours.zone)
    return hours.works_on(local.date()) and at <= local.time().replace(tzinfo=None) < hours.end


def collect_digests(
    *, session: Session, now: datetime, staff: Iterable[Staff], since: dict[int, datetime] | None = None
) -> list[Digest]:
    """Each staff member's digest of their local day at ``now``; two queries whatever their number.

    ``since`` gives, per staff id, when "came up" starts (their last digest); a day before ``now`` by default.
    """
    members = list(staff)
    if not members:
        return []
    since = since or {}
    ids = [id_of(member) for member in members]
    digests = {id_of(m): Digest(staff=m, day=now.astimezone(ZoneInfo(m.timezone)).date()) for m in members}
    bounds = {id_of(m): _day_bounds(digests[id_of(m)].day, ZoneInfo(m.timezone)) for m in members}
    latest_end = max(end for _, end in bounds.values())
    work = session.execute(
        sa_select(PlanStep, Plan, Contact, Call)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .outerjoin(Call, (col(Call.plan_step_id) == PlanStep.id) & col(Call.cancelled_at).is_(None))
        .where(
            col(PlanStep.kind).in_((StepKind.CALL, StepKind.TASK)),
            col(PlanStep.status).in_(TO_DO),
            col(PlanStep.assignee_id).in_(ids),
            # A call's slot is never before its step's due time, so nothing due later can be on anyone's day.
            col(PlanStep.due_at) < latest_end,
        )
        .order_by(col(PlanStep.due_at), col(PlanStep.id))
    ).all()
    for step, plan, contact, call in work:
        digest = digests[step.assignee_id]
        start, end = bounds[step.assignee_id]
        when = call.slot_start if call is not None else step.due_at
        if when is None or when >= end:
            continue
        line = _line(step, plan, contact, when)
        (digest.today if when >= start else digest.overdue).append(line)
    earliest = max(min(since.get(i, now - timedelta(days=1)) for i in ids), now - _LOOK_BACK)
    news = session.execute(
        sa_select(PlanStep, Plan, Contact)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .where(
            col(PlanStep.status).in_(NEWS),
            col(PlanStep.updated_at) >= earliest,
            col(PlanStep.updated_at) < now,
            or_(col(PlanStep.assignee_id).in_(ids), col(Plan.applied_by_id).in_(ids)),
        )
        .order_by(col(PlanStep.updated_at), col(PlanStep.id))
    ).all()
    for step, plan, contact in news:
        concerned = {step.assignee_id, plan.applied_by_id} & set(ids)
        for staff_id in sorted(i for i in concerned if i is not None):
            if step.updated_at >= max(since.get(staff_id, now - timedelta(days=1)), now - _LOOK_BACK):
                detail = step.last_error or step.skip_reason
                digests[staff_id].news.append(_line(step, plan, contact, step.updated_at, detail=detail))
    for digest in digests.values():
        digest.today.sort(key=lambda line: (line.when or now, line.step_id))
    return [digests[i] for i in ids]


def _line(step: PlanStep, plan: Plan, contact: Contact, when: datetime, detail: str | None = None) -> DigestLine:
    return DigestLine(
        step_id=id_of(step),
        kind=step.kind,
        status=step.status,
        step_name=step.name,
        contact_name=contact.full_name or contact.email,
        contact_phone=contact.phone,
        template_key=plan.template_key,
        when=when,
        fallback=step.assignee_fallback,
        detail=" ".join(detail.split())[:300] if detail else None,
    )


# --- Rendering -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedDigest:
    language: str
    subject: str
    text: str
    html: str


@lru_cache(maxsize=8)
def _environment(directory: Path) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(directory),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["long_date"] = long_date
    return environment


def _language(staff: Staff, directory: Path, settings: Settings) -> str:
    for candidate in (staff.language, settings.default_language, "en"):
        if candidate and (directory / candidate.split("-")[0].lower() / "subject.txt").is_file():
            return candidate.split("-")[0].lower()
    return "en"


def _line_context(line: DigestLine, zone: ZoneInfo, language: str) -> dict[str, Any]:
    local = line.when.astimezone(zone) if line.when else None
    return {
        "task": line.step_id,
        "kind": line.kind,
        "status": line.status,
        "step": line.step_name,
        "contact": line.contact_name,
        "phone": line.contact_phone or "",
        "template": line.template_key,
        "time": f"{local:%H:%M}" if local else "",
        "date": long_date(local.date(), language) if local else "",
        "fallback": line.fallback,
        "detail": line.detail or "",
    }


def render_digest(digest: Digest, settings: Settings | None = None) -> RenderedDigest:
    """The digest's subject, text and HTML, in the staff member's language (else the organisation's default)."""
    settings = settings or get_settings()
    directory = settings.email_templates_dir / "digest"
    language = _language(digest.staff, directory, settings)
    zone = ZoneInfo(digest.staff.timezone)
    context = {
        "staff": {"name": digest.staff.name, "email": digest.staff.email},
        "organisation": {"name": settings.organisation_name},
        "day": long_date(digest.day, language),
        "calls": [_line_context(line, zone, language) for line in digest.calls_today],
        "tasks": [_line_context(line, zone, language) for line in digest.tasks_today],
        "overdue": [_line_context(line, zone, language) for line in digest.overdue],
        "news": [_line_context(line, zone, language) for line in digest.news],
    }
    environment = _environment(directory)
    subject = environment.get_template(f"{language}/subject.txt").render(context)
    return RenderedDigest(
        language=language,
        # One line; split on line ends only, so the non-breaking spaces of French typography stay.
        subject=" ".join(part.strip() for part in subject.splitlines() if part.strip()),
        text=environment.get_template(f"{language}/body.txt").render(context),
        html=environment.get_template(f"{language}/body.html").render(context),
    )


def digest_email(digest: Digest, *, now: datetime, settings: Settings, message_id: str) -> EmailMessage:
    """The digest as an email to its staff member: a text part and an HTML part."""
    rendered = render_digest(digest, settings)
    email = EmailMessage()
    email["From"] = formataddr((settings.organisation_name, settings.smtp_from or settings.organisation_email))
    email["To"] = formataddr((digest.staff.name, digest.staff.email))
    email["Subject"] = rendered.subject
    email["Date"] = format_datetime(now)
    email["Message-ID"] = message_id
    email["Content-Language"] = rendered.language
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(rendered.text, cte="quoted-printable")
    email.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return email


# --- Sending -------------------------------------------------------------------------------------------------------


@dataclass
class DigestOutcome:
    """What one digest run did, in counts only."""

    sent: int = 0
    empty: int = 0
    not_due: int = 0
    already_done: int = 0
    failed: int = 0
    unknown: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "nothing_to_do": self.empty,
            "not_their_morning": self.not_due,
            "already_done": self.already_done,
            "failed": self.failed,
            "unknown": self.unknown,
        }


def send_digests(
    *,
    now: datetime,
    only: str | None = None,
    settings: Settings | None = None,
    flow_run_id: str | None = None,
) -> DigestOutcome:
    """Email each active staff member whose digest time it is their digest of the day; once per person and day.

    ``only`` (a staff email) sends that person's digest now, whatever the hour, still at most once that day. A digest
    is recorded `sending` before the SMTP server is asked and `sent` after; a transient failure forgets the record
    (nothing went out) and raises TransientSendError once the run is over, so a retry sends the rest.
    """
    settings = settings or get_settings()
    outcome = DigestOutcome()
    engine = db.get_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session:
        if only:
            member = get_staff(session=session, email=only)
            if not member.active:
                raise InvalidStateError(f"staff member {member.email} is not active: no digest")
            members = [member]
        else:
            members = list(session.exec(select(Staff).where(col(Staff.active).is_(True)).order_by(col(Staff.id))))
        days = {id_of(m): now.astimezone(ZoneInfo(m.timezone)).date() for m in members}
        done = {
            (row.staff_id, row.day)
            for row in session.exec(
                select(StaffDigest).where(
                    col(StaffDigest.staff_id).in_(list(days)), col(StaffDigest.day).in_(set(days.values()))
                )
            )
        }
        wanted = []
        for member in members:
            if (id_of(member), days[id_of(member)]) in done:
                outcome.already_done += 1
            elif only is None and not digest_due(member, now, settings.digest_time):
                outcome.not_due += 1
            else:
                wanted.append(member)
        last_sent: dict[int, datetime] = {}
        for staff_id, sent_at in session.execute(
            sa_select(col(StaffDigest.staff_id), func.max(col(StaffDigest.sent_at)))
            .where(col(StaffDigest.staff_id).in_([id_of(m) for m in wanted]), col(StaffDigest.sent_at).is_not(None))
            .group_by(col(StaffDigest.staff_id))
        ):
            last_sent[staff_id] = sent_at
        digests = collect_digests(session=session, now=now, staff=wanted, since=last_sent)
        session.commit()
        with SmtpSender(settings) as sender:
            for digest in digests:
                _send_one(session, sender, digest, now, settings, flow_run_id, outcome)
                if outcome.errors:
                    break  # the server is unreachable or deferring: a retry sends the rest
    log.info("staff digests: %s", outcome.as_dict())
    if outcome.errors:
        # Prefect shows this message: addresses an SMTP answer may quote are hidden.
        raise TransientSendError(f"staff digests could not all be sent now: {redact(outcome.errors[0])}")
    return outcome


def _send_one(
    session: Session,
    sender: SmtpSender,
    digest: Digest,
    now: datetime,
    settings: Settings,
    flow_run_id: str | None,
    outcome: DigestOutcome,
) -> None:
    staff_id = id_of(digest.staff)
    if not digest.items:
        row = StaffDigest(staff_id=staff_id, day=digest.day, items=0, state=EMPTY, created_at=now)
    else:
        message_id = new_message_id(settings)
        email = digest_email(digest, now=now, settings=settings, message_id=message_id)
        row = StaffDigest(
            staff_id=staff_id,
            day=digest.day,
            items=digest.items,
            language=str(email["Content-Language"]),
            message_id=message_id,
            state=DeliveryState.SENDING,
            flow_run_id=flow_run_id,
            created_at=now,
        )
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        # Another run decided this person's day at the same moment: it sends (or not) for both.
        session.rollback()
        outcome.already_done += 1
        return
    if not digest.items:
        outcome.empty += 1
        return
    try:
        answer = sender.send(email)
    except PermanentSendError as error:
        row.state, row.smtp_response = DeliveryState.FAILED, (error.response or str(error))[:1000]
        outcome.failed += 1
    except SendOutcomeUnknownError as error:
        row.state, row.smtp_response = DeliveryState.UNKNOWN, str(error)[:1000]
        outcome.unknown += 1
    except TransientSendError as error:
        session.execute(delete(StaffDigest).where(col(StaffDigest.id) == row.id))
        session.commit()
        outcome.errors.append(str(error))
        return
    else:
        row.state, row.smtp_response, row.sent_at = DeliveryState.SENT, answer[:1000], now
        outcome.sent += 1
    session.add(row)
    session.commit()
