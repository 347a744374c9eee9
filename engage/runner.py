"""Moving plans forward: claim due steps, send their emails, open their calls and tasks, record every outcome.

No Prefect in here: the flows wrap these functions in tasks, the tests call them directly. Claims are atomic and
carry a lease, so several runs at once never take the same step, and a crashed run's claims are taken again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from engage import calls, db, rendering
from engage.faults import pause_here
from engage.mailer import (
    OutgoingEmail,
    PermanentSendError,
    SendOutcomeUnknownError,
    SmtpSender,
    TransientSendError,
    build_message,
    new_message_id,
)
from engage.plans import finish_step, plan_spec, release_dependents, template_spec
from engage.rendering import get_renderer
from engage.settings import Settings, get_settings
from engage.timerules import next_send_time
from engage.unsubscribe import unsubscribe_url
from models import (
    Call,
    Contact,
    Delivery,
    DeliveryKind,
    DeliveryState,
    Plan,
    PlanStatus,
    PlanStep,
    PlanTemplate,
    Staff,
    StepKind,
    StepStatus,
    Workshop,
    id_of,
)


@dataclass(frozen=True)
class DueItem:
    """A due time some plan steps now have: one scheduled run per (workshop, template step, day) covers them."""

    workshop_id: int | None
    workshop_name: str | None
    workshop_date: date | None
    template_key: str
    step_key: str
    step_name: str
    due_at: datetime

    @property
    def day_number(self) -> int | None:
        """The day as staff say it: days since the workshop."""
        if self.workshop_date is None:
            return None
        return (self.due_at.date() - self.workshop_date).days

    @property
    def run_name(self) -> str:
        day = self.day_number
        parts = [self.workshop_name or self.template_key, f"day {day}" if day is not None else None, self.step_name]
        return " · ".join(part for part in parts if part)

    @property
    def idempotency_key(self) -> str:
        return f"engage:{self.workshop_id}:{self.template_key}:{self.step_key}:{self.due_at.date().isoformat()}"


@dataclass(frozen=True)
class StepGroup:
    """Claimed steps of one template step of one workshop: they run together as one task."""

    workshop_id: int | None
    workshop_name: str | None
    workshop_date: date | None
    template_key: str
    step_key: str
    step_name: str
    kind: str
    step_ids: tuple[int, ...]
    first_due_at: datetime

    @property
    def label(self) -> str:
        """e.g. `day 7 · Resource pack · 42 contacts`."""
        day = (self.first_due_at.date() - self.workshop_date).days if self.workshop_date else None
        count = len(self.step_ids)
        parts = [f"day {day}" if day is not None else None, self.step_name, f"{count} contact{'s' * (count != 1)}"]
        return " · ".join(part for part in parts if part)


COUNTS = ("sent", "opened", "skipped", "failed", "deferred", "unknown", "already_done")


@dataclass
class BatchOutcome:
    """What one batch did, in counts and ledger ids only (Prefect keeps this after a person is erased)."""

    sent: int = 0
    opened: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    already_done: int = 0
    failed_step_ids: list[int] = field(default_factory=list)
    released: list[DueItem] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed_step_ids.extend(other.failed_step_ids)
        self.released.extend(other.released)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}


# --- claims -----------------------------------------------------------------------------------------------------


def recover_expired_claims(*, session: Session, now: datetime) -> int:
    """A run died holding claims: a step with a delivery still `sending` may have gone out, so it becomes `unknown`.

    The other expired claims are left `running`: the next claim takes them again.
    """
    rows = session.exec(
        select(PlanStep, Delivery)
        .join(Delivery, col(Delivery.plan_step_id) == PlanStep.id)
        .where(
            PlanStep.status == StepStatus.RUNNING,
            col(PlanStep.lease_until) < now,
            Delivery.state == DeliveryState.SENDING,
        )
    ).all()
    for step, delivery in rows:
        delivery.state = DeliveryState.UNKNOWN
        step.status = StepStatus.UNKNOWN
        step.last_error = "the run sending this email stopped before the SMTP server's answer was recorded"
        step.lease_until = None
        step.claimed_by = None
        step.updated_at = now
        session.add(delivery)
        session.add(step)
    return len(rows)


def claim_due_steps(
    *, now: datetime, claimant: str, limit: int, lease_seconds: int, url: str | None = None
) -> list[int]:
    """Atomically take up to ``limit`` due steps (and steps whose claim expired) for ``claimant``.

    In one transaction: lock the candidates (PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent runs take different
    rows; SQLite: the transaction began IMMEDIATE, so claims run one at a time), then mark exactly those rows.
    Two statements on purpose: PostgreSQL may evaluate a LIMIT subquery inside `UPDATE ... WHERE id IN (...)` more
    than once, and then claims more rows than asked.
    """
    with db.session_scope(url) as session:
        recover_expired_claims(session=session, now=now)
        due = or_(
            and_(col(PlanStep.status) == StepStatus.SCHEDULED, col(PlanStep.due_at) <= now),
            and_(col(PlanStep.status) == StepStatus.RUNNING, col(PlanStep.lease_until) < now),
        )
        ids = list(
            session.exec(
                select(PlanStep.id)
                .where(due)
                .order_by(col(PlanStep.due_at), col(PlanStep.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not ids:
            return []
        session.execute(
            update(PlanStep)
            .where(col(PlanStep.id).in_(ids))
            .values(
                status=StepStatus.RUNNING,
                claimed_by=claimant,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=PlanStep.attempts + 1,
                updated_at=now,
            )
        )
        return sorted(int(step_id) for step_id in ids if step_id is not None)


def group_claims(*, step_ids: Iterable[int], url: str | None = None) -> list[StepGroup]:
    """Group claimed steps by workshop and template step, in due order."""
    ids = list(step_ids)
    if not ids:
        return []
    with db.session_scope(url, readonly=True) as session:
        rows = session.exec(
            select(PlanStep, Plan, Workshop)
            .join(Plan, col(Plan.id) == PlanStep.plan_id)
            .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
            .where(col(PlanStep.id).in_(ids))
            .order_by(col(PlanStep.due_at), col(PlanStep.id))
        ).all()
    groups: dict[tuple[int | None, str, str], list[tuple[PlanStep, Plan, Workshop | None]]] = defaultdict(list)
    for step, plan, workshop in rows:
        groups[(plan.workshop_id, plan.template_key, step.step_key)].append((step, plan, workshop))
    result = []
    for (workshop_id, template_key, step_key), members in groups.items():
        first, _, first_workshop = members[0]
        result.append(
            StepGroup(
                workshop_id=workshop_id,
                workshop_name=first_workshop.name if first_workshop else None,
                workshop_date=first_workshop.date if first_workshop else None,
                template_key=template_key,
                step_key=step_key,
                step_name=first.name,
                kind=first.kind,
                step_ids=tuple(s.id for s, _, _ in members if s.id is not None),
                first_due_at=first.due_at or datetime.min.replace(tzinfo=ZoneInfo("UTC")),
            )
        )
    return result


# --- running one batch ------------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    step: PlanStep
    plan: Plan
    contact: Contact
    workshop: Workshop | None
    applier: Staff | None
    assignee: Staff | None
    template: PlanTemplate


def _load(session: Session, step_ids: Iterable[int], claimant: str) -> list[_Loaded]:
    """The steps of a batch that this claimant still holds, with everything their messages need."""
    from sqlalchemy.orm import aliased

    applier, assignee = aliased(Staff), aliased(Staff)
    rows = session.execute(
        sa_select(PlanStep, Plan, Contact, Workshop, applier, assignee, PlanTemplate)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
        .join(PlanTemplate, col(PlanTemplate.id) == Plan.template_id)
        .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
        .outerjoin(applier, col(applier.id) == Plan.applied_by_id)
        .outerjoin(assignee, col(assignee.id) == PlanStep.assignee_id)
        .where(
            col(PlanStep.id).in_(list(step_ids)),
            col(PlanStep.status) == StepStatus.RUNNING,
            col(PlanStep.claimed_by) == claimant,
        )
        .order_by(col(PlanStep.id))
    ).all()
    return [_Loaded(*row) for row in rows]


def _due_item(session: Session, step: PlanStep) -> DueItem:
    plan = session.get(Plan, step.plan_id)
    assert plan is not None and step.due_at is not None
    workshop = session.get(Workshop, plan.workshop_id) if plan.workshop_id else None
    return DueItem(
        workshop_id=plan.workshop_id,
        workshop_name=workshop.name if workshop else None,
        workshop_date=workshop.date if workshop else None,
        template_key=plan.template_key,
        step_key=step.step_key,
        step_name=step.name,
        due_at=step.due_at,
    )


def _finish(
    session: Session, outcome: BatchOutcome, step: PlanStep, status: StepStatus, now: datetime, **kwargs: str
) -> None:
    released = finish_step(session=session, step=step, status=status, now=now, **kwargs)  # type: ignore[arg-type]
    outcome.released.extend(_due_item(session, s) for s in released)


def _cancel_if_plan_closed(session: Session, item: _Loaded, now: datetime) -> bool:
    if item.plan.status == PlanStatus.ACTIVE:
        return False
    item.step.status = StepStatus.CANCELLED
    item.step.skip_reason = f"plan {item.plan.status}"
    item.step.lease_until = None
    item.step.updated_at = now
    session.add(item.step)
    return True


def _defer_outside_window(session: Session, item: _Loaded, now: datetime, outcome: BatchOutcome) -> bool:
    """Emails go out inside the template's send window; a late run puts the step back to the next window."""
    rules = template_spec(item.template).calendar_rules()
    next_slot = next_send_time(now, rules)
    if next_slot <= now:
        return False
    item.step.status = StepStatus.SCHEDULED
    item.step.due_at = next_slot
    item.step.claimed_by = None
    item.step.lease_until = None
    item.step.attempts = max(0, item.step.attempts - 1)
    item.step.updated_at = now
    session.add(item.step)
    outcome.deferred += 1
    outcome.released.append(_due_item(session, item.step))
    return True


def email_context(item: _Loaded, settings: Settings, unsubscribe: str, language: str) -> dict[str, object]:
    """What an email template may use; see `email_templates/README.md`."""
    return rendering.email_context(
        contact=item.contact,
        workshop=item.workshop,
        staff=item.applier or item.assignee,
        links=template_spec(item.template).links,
        settings=settings,
        unsubscribe_url=unsubscribe,
        language=language,
    )


def _next_sequence(session: Session, step_id: int) -> int:
    sequences = session.exec(
        select(Delivery.sequence).where(Delivery.plan_step_id == step_id, Delivery.kind == DeliveryKind.EMAIL)
    ).all()
    return max(sequences, default=-1) + 1


def send_email_batch(
    *,
    step_ids: Iterable[int],
    claimant: str,
    now: datetime,
    flow_run_id: str | None = None,
    settings: Settings | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BatchOutcome:
    """Send the emails of claimed steps over one SMTP connection, recording each delivery before and after.

    A delivery is written `sending` (with its Message-ID) in the same commit that records the previous message as
    `sent`: one commit per message, and at most one message per connection whose fate a crash can hide.
    A transient failure (4xx, connection) raises TransientSendError after recording what went out: the caller
    retries, and the ledger makes the retry skip every step already sent.
    """
    settings = settings or get_settings()
    clock = clock or (lambda: now)
    renderer = get_renderer(settings.email_templates_dir, tuple(settings.language_list))
    outcome = BatchOutcome()
    engine = db.get_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session, SmtpSender(settings) as sender:
        items = _load(session, step_ids, claimant)
        for item in items:
            step, contact = item.step, item.contact
            if _cancel_if_plan_closed(session, item, now):
                session.commit()
                continue
            if contact.email_opt_out or contact.erased_at is not None:
                reason = "contact opted out of email" + (
                    f" ({contact.email_opt_out_source})" if contact.email_opt_out_source else ""
                )
                _finish(session, outcome, step, StepStatus.SKIPPED, now, reason=reason)
                outcome.skipped += 1
                session.commit()
                continue
            if _defer_outside_window(session, item, now, outcome):
                session.commit()
                continue
            spec = template_spec(item.template).step(step.step_key)
            assert spec.email_template is not None
            language = renderer.pick_language(contact.language)
            unsubscribe = unsubscribe_url(contact.id or 0, settings)
            context = email_context(item, settings, unsubscribe, language)
            rendered = renderer.render(spec.email_template, language, context)
            staff = item.applier or item.assignee
            outgoing = OutgoingEmail(
                to=contact.email,
                to_name=contact.full_name,
                subject=rendered.subject,
                text=rendered.text,
                html=rendered.html,
                reply_to=staff.email if staff else None,
                reply_to_name=staff.name if staff else None,
                message_id=new_message_id(settings),
                unsubscribe_url=unsubscribe,
                language=language,
            )
            delivery = Delivery(
                plan_step_id=id_of(step),
                kind=DeliveryKind.EMAIL,
                sequence=_next_sequence(session, step.id or 0),
                recipient=contact.email,
                subject=rendered.subject,
                language=language,
                message_id=outgoing.message_id,
                state=DeliveryState.SENDING,
                flow_run_id=flow_run_id,
                created_at=clock(),
            )
            session.add(delivery)
            step.flow_run_id = flow_run_id
            session.add(step)
            session.commit()
            pause_here("before_send")
            try:
                answer = sender.send(build_message(outgoing, settings))
            except PermanentSendError as error:
                delivery.state = DeliveryState.FAILED
                delivery.smtp_response = error.response or str(error)
                step.status = StepStatus.FAILED
                step.retryable = False
                step.last_error = str(error)
                step.completed_at = now
                step.lease_until = None
                step.updated_at = now
                session.add_all([delivery, step])
                session.flush()
                # A recipient the server refuses for good will not get this email: the next step (often the call)
                # matters more now, so its dependents proceed.
                released = release_dependents(session=session, step=step, now=now, force=True)
                outcome.released.extend(_due_item(session, s) for s in released)
                outcome.failed += 1
                session.commit()
                continue
            except SendOutcomeUnknownError as error:
                # The message was handed over and the answer lost: it may have gone out. Never resend it on our
                # own; staff say (engage tasks resolve). The batch goes on over a new connection.
                delivery.state = DeliveryState.UNKNOWN
                delivery.smtp_response = str(error)
                step.status = StepStatus.UNKNOWN
                step.last_error = str(error)
                step.lease_until = None
                step.claimed_by = None
                step.updated_at = now
                session.add_all([delivery, step])
                outcome.unknown += 1
                session.commit()
                continue
            except TransientSendError as error:
                delivery.state = DeliveryState.FAILED
                delivery.smtp_response = error.response or str(error)
                step.last_error = str(error)
                session.add_all([delivery, step])
                session.commit()
                raise
            pause_here("after_accept")
            delivery.state = DeliveryState.SENT
            delivery.smtp_response = answer
            delivery.sent_at = clock()
            session.add(delivery)
            _finish(session, outcome, step, StepStatus.DONE, now)
            outcome.sent += 1
            session.flush()
            pause_here("during_ledger_write")
            session.commit()
    return outcome


def open_work_items(
    *, step_ids: Iterable[int], claimant: str, now: datetime, flow_run_id: str | None = None, url: str | None = None
) -> BatchOutcome:
    """Due call and task steps become open work items for their assignee (a call gets its slot)."""
    outcome = BatchOutcome()
    with db.session_scope(url) as session:
        items = _load(session, step_ids, claimant)
        # Calls usually got their slot when their step got its date; one placement covers those that did not.
        calls.sync_calls(
            session=session, now=now, step_ids=[id_of(i.step) for i in items if i.step.kind == StepKind.CALL]
        )
        for item in items:
            step = item.step
            if _cancel_if_plan_closed(session, item, now):
                continue
            if step.kind == StepKind.CALL and item.contact.do_not_call:
                _finish(session, outcome, step, StepStatus.SKIPPED, now, reason="contact asked not to be called")
                outcome.skipped += 1
                continue
            if step.kind == StepKind.CALL:
                _create_call(session, item, now)
            step.status = StepStatus.OPEN
            step.lease_until = None
            step.claimed_by = None
            step.flow_run_id = flow_run_id
            step.updated_at = now
            session.add(step)
            outcome.opened += 1
    return outcome


def _create_call(session: Session, item: _Loaded, now: datetime) -> Call | None:
    """The call of a due call step: placed when the step got its date, else now, in the assignee's next free slot."""
    existing = session.exec(select(Call).where(Call.plan_step_id == item.step.id)).first()
    if existing is None:
        calls.sync_calls(session=session, now=now, step_ids=[id_of(item.step)])
        existing = session.exec(select(Call).where(Call.plan_step_id == item.step.id)).first()
    return existing


def mark_failed(
    *,
    step_ids: Iterable[int],
    claimant: str,
    error: str,
    now: datetime,
    origin: str | None = None,
    url: str | None = None,
) -> int:
    """Retries ran out: the claimed steps not finished are `failed` and block their dependents until staff act.

    They stay `retryable` and remember the run that failed them (``origin``, the run a person sees, else the
    ``claimant``), so retrying that run in the Prefect UI, or `engage retry --run`, runs exactly them again.
    """
    with db.session_scope(url) as session:
        items = _load(session, step_ids, claimant)
        for item in items:
            item.step.status = StepStatus.FAILED
            item.step.retryable = True
            item.step.last_error = error[:2000]
            item.step.flow_run_id = origin or claimant
            item.step.lease_until = None
            item.step.claimed_by = None
            item.step.updated_at = now
            session.add(item.step)
        return len(items)


def scheduled_due_items(*, now: datetime, url: str | None = None) -> list[DueItem]:
    """Every future due time in the ledger, one per (workshop, template step, day)."""
    with db.session_scope(url, readonly=True) as session:
        rows = session.exec(
            select(PlanStep, Plan, Workshop)
            .join(Plan, col(Plan.id) == PlanStep.plan_id)
            .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
            .where(PlanStep.status == StepStatus.SCHEDULED, col(PlanStep.due_at) > now)
        ).all()
        items: dict[str, DueItem] = {}
        for step, plan, workshop in rows:
            assert step.due_at is not None
            item = DueItem(
                workshop_id=plan.workshop_id,
                workshop_name=workshop.name if workshop else None,
                workshop_date=workshop.date if workshop else None,
                template_key=plan.template_key,
                step_key=step.step_key,
                step_name=step.name,
                due_at=step.due_at,
            )
            items.setdefault(item.idempotency_key, item)
        return sorted(items.values(), key=lambda i: i.due_at)


def unique_due_items(items: Iterable[DueItem]) -> list[DueItem]:
    """One item per (workshop, template step, day), the earliest time of the day."""
    chosen: dict[str, DueItem] = {}
    for item in items:
        current = chosen.get(item.idempotency_key)
        if current is None or item.due_at < current.due_at:
            chosen[item.idempotency_key] = item
    return sorted(chosen.values(), key=lambda i: i.due_at)


__all__ = [
    "BatchOutcome",
    "DueItem",
    "StepGroup",
    "claim_due_steps",
    "group_claims",
    "mark_failed",
    "open_work_items",
    "plan_spec",
    "recover_expired_claims",
    "scheduled_due_items",
    "send_email_batch",
    "unique_due_items",
]
