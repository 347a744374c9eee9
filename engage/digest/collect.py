"""Each staff member's digest of their day: calls and tasks, the overdue, what came up."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from engage.plans.calls import working_hours
from models import (
    Call,
    Contact,
    Plan,
    PlanStep,
    Staff,
    StepKind,
    StepStatus,
    id_of,
)

#: Statuses of calls and tasks someone still has to do.
TO_DO = (StepStatus.SCHEDULED, StepStatus.RUNNING, StepStatus.OPEN)


#: Statuses that "came up": a send whose fate is unknown, a step that failed.
NEWS = (StepStatus.FAILED, StepStatus.UNKNOWN)


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
