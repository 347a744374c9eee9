"""Moving plans forward: claim due steps, send their emails, open their calls and tasks, record every outcome.

No Prefect in here: the flows wrap these functions in tasks, the tests call them directly. Claims are atomic and
carry a lease, so several runs at once never take the same step, and a crashed run's claims are taken again.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, bindparam, exists, insert, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col, func, select

from engage import calls, db, rendering
from engage.errors import NotFoundError
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
from engage.plans import StepFinisher, StepRow, plan_spec, template_spec, write_row
from engage.rendering import EmailRenderer, get_renderer
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
        # One item per due time is all scheduling needs: a run over 100,000 steps keeps a handful, not 100,000.
        self.released = unique_due_items([*self.released, *other.released])

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}


# --- SQLite writers ---------------------------------------------------------------------------------------------

_SQLITE_WRITERS: dict[str, threading.Lock] = {}
_SQLITE_WRITERS_LOCK = threading.Lock()


def _writing(engine: Engine) -> AbstractContextManager[object]:
    """Hold this while a write transaction of ``engine`` runs, when it is SQLite: one writer thread at a time.

    SQLite takes one writer at a time anyway; threads that collide there wait in SQLite's busy handler, which sleeps
    1, 2, 5, 10... milliseconds between tries. Batches sent at once commit every few hundred microseconds, so they
    queue on this lock instead, and each is woken the moment the one before it commits.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    key = str(engine.url)
    with _SQLITE_WRITERS_LOCK:
        return _SQLITE_WRITERS.setdefault(key, threading.Lock())


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


def _claimable(now: datetime) -> tuple[Any, Any]:
    """What a claim takes at ``now``: steps whose claim expired, then steps due (each walks its own index)."""
    return (
        and_(col(PlanStep.status) == StepStatus.RUNNING, col(PlanStep.lease_until) < now),
        and_(col(PlanStep.status) == StepStatus.SCHEDULED, col(PlanStep.due_at) <= now),
    )


def has_due_steps(*, now: datetime, url: str | None = None) -> bool:
    """Whether a claim at ``now`` would find a step: one cheap look (an EXISTS per condition), nothing locked."""
    with db.session_scope(url, readonly=True) as session:
        return bool(session.scalar(sa_select(or_(*(exists().where(condition) for condition in _claimable(now))))))


def claim_due_steps(
    *, now: datetime, claimant: str, limit: int, lease_seconds: int, url: str | None = None
) -> list[int]:
    """Atomically take up to ``limit`` due steps (and steps whose claim expired) for ``claimant``.

    In one transaction: lock the candidates (PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent runs take different
    rows; SQLite: the transaction began IMMEDIATE, so claims run one at a time), then mark exactly those rows.
    Two statements on purpose: PostgreSQL may evaluate a LIMIT subquery inside `UPDATE ... WHERE id IN (...)` more
    than once, and then claims more rows than asked.
    """
    with _writing(db.get_engine(url)), db.session_scope(url) as session:
        recover_expired_claims(session=session, now=now)
        # Expired claims first, then due steps, each in due order: two queries, because one with an OR of the two
        # cannot walk the (status, due_at) index, and would sort every due step of the ledger for each claim.
        ids: list[int] = []
        for condition in _claimable(now):
            if len(ids) < limit:
                ids += (
                    step_id
                    for step_id in session.exec(
                        select(col(PlanStep.id))
                        .where(condition)
                        .order_by(col(PlanStep.due_at), col(PlanStep.id))
                        .limit(limit - len(ids))
                        .with_for_update(skip_locked=True)
                    )
                    if step_id is not None
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
        return sorted(ids)


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
    # Templates are read apart, once each: joined, their JSON definition would be parsed again for every row.
    rows = session.execute(
        sa_select(PlanStep, Plan, Contact, Workshop, applier, assignee)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .join(Contact, col(Contact.id) == Plan.contact_id)
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
    templates: dict[int, PlanTemplate] = {}
    for template_id in sorted({plan.template_id for _, plan, *_ in rows}):
        template = session.get(PlanTemplate, template_id)
        if template is None:  # a foreign key makes this impossible short of a broken database
            raise NotFoundError(f"plan template version {template_id} is missing")
        templates[template_id] = template
    return [
        _Loaded(step, plan, contact, workshop, applied_by, assigned_to, templates[plan.template_id])
        for step, plan, contact, workshop, applied_by, assigned_to in rows
    ]


def _due_item(item: _Loaded, step: PlanStep | StepRow) -> DueItem:
    """The due time a step of ``item``'s plan now has (the step itself, or one it released)."""
    assert step.due_at is not None
    return DueItem(
        workshop_id=item.plan.workshop_id,
        workshop_name=item.workshop.name if item.workshop else None,
        workshop_date=item.workshop.date if item.workshop else None,
        template_key=item.plan.template_key,
        step_key=step.step_key,
        step_name=step.name,
        due_at=step.due_at,
    )


def _finish(
    finisher: StepFinisher, outcome: BatchOutcome, item: _Loaded, status: StepStatus, now: datetime, **kwargs: str
) -> None:
    released = finisher.finish(item.step, status, now, **kwargs)  # type: ignore[arg-type]
    outcome.released.extend(_due_item(item, s) for s in released)


def _cancel_if_plan_closed(session: Session, item: _Loaded, now: datetime) -> bool:
    if item.plan.status == PlanStatus.ACTIVE:
        return False
    item.step.status = StepStatus.CANCELLED
    item.step.skip_reason = f"plan {item.plan.status}"
    item.step.lease_until = None
    item.step.updated_at = now
    session.add(item.step)
    return True


def _next_slot(item: _Loaded, now: datetime, next_slots: dict[int, datetime]) -> datetime:
    """The first moment from ``now`` inside the send window of the item's template (worked out once a batch)."""
    template_id = id_of(item.template)
    if template_id not in next_slots:
        next_slots[template_id] = next_send_time(now, template_spec(item.template).calendar_rules())
    return next_slots[template_id]


def _defer_outside_window(
    session: Session, item: _Loaded, now: datetime, outcome: BatchOutcome, next_slots: dict[int, datetime]
) -> bool:
    """Emails go out inside the template's send window; a late run puts the step back to the next window."""
    next_slot = _next_slot(item, now, next_slots)
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
    outcome.released.append(_due_item(item, item.step))
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


def _next_sequences(session: Session, step_ids: list[int]) -> dict[int, int]:
    """The sequence the next email delivery of each step takes (0 for a step never sent)."""
    rows = session.exec(
        select(Delivery.plan_step_id, func.max(Delivery.sequence))
        .where(col(Delivery.plan_step_id).in_(step_ids), Delivery.kind == DeliveryKind.EMAIL)
        .group_by(col(Delivery.plan_step_id))
    ).all()
    return {step_id: int(highest) + 1 for step_id, highest in rows if highest is not None}


def _outgoing_email(
    item: _Loaded, renderer: EmailRenderer, settings: Settings, *, message_id: str
) -> tuple[OutgoingEmail, str]:
    """Render the email of one step for its contact; (email, language)."""
    step, contact = item.step, item.contact
    spec = template_spec(item.template).step(step.step_key)
    assert spec.email_template is not None
    language = renderer.pick_language(contact.language)
    unsubscribe = unsubscribe_url(contact.id or 0, settings)
    context = email_context(item, settings, unsubscribe, language)
    rendered = renderer.render_contact(spec.email_template, language, context)
    staff = item.applier or item.assignee
    outgoing = OutgoingEmail(
        to=contact.email,
        to_name=contact.full_name,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        reply_to=staff.email if staff else None,
        reply_to_name=staff.name if staff else None,
        message_id=message_id,
        unsubscribe_url=unsubscribe,
        language=language,
    )
    return outgoing, language


@dataclass
class _Sending:
    """The delivery of one email, from its `sending` record to the SMTP server's answer."""

    item: _Loaded
    sequence: int
    answer: str = ""
    sent_at: datetime | None = None

    @property
    def step_id(self) -> int:
        return id_of(self.item.step)


# Built once: the runner writes these for every email, and building a statement costs more than executing it.
_DELIVERY = SQLModel.metadata.tables["delivery"]
_INSERT_DELIVERY = insert(_DELIVERY)
_SET_DELIVERY = (
    update(_DELIVERY)
    .where(
        _DELIVERY.c.plan_step_id == bindparam("where_step"),
        _DELIVERY.c.kind == bindparam("where_kind"),
        _DELIVERY.c.sequence == bindparam("where_sequence"),
    )
    .values(state=bindparam("set_state"), smtp_response=bindparam("set_response"), sent_at=bindparam("set_sent_at"))
)


def _record_delivery(session: Session, sending: _Sending, state: DeliveryState, response: str | None) -> None:
    """Write the outcome of a delivery recorded `sending` (found by its step, kind and sequence)."""
    session.connection().execute(
        _SET_DELIVERY,
        {
            "where_step": sending.step_id,
            "where_kind": DeliveryKind.EMAIL,
            "where_sequence": sending.sequence,
            "set_state": state,
            "set_response": response[:1000] if response is not None else None,
            "set_sent_at": sending.sent_at,
        },
    )


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
    `sent`, with its step's completion and the release of the next step: one commit per message, and at most one
    message per connection whose fate a crash can hide. The batch's plans are read once, up front.
    A transient failure (4xx, connection) raises TransientSendError after recording what went out: the caller
    retries, and the ledger makes the retry skip every step already sent.
    """
    settings = settings or get_settings()
    clock = clock or (lambda: now)
    renderer = get_renderer(settings.email_templates_dir, tuple(settings.language_list))
    outcome = BatchOutcome()
    engine = db.get_engine(settings.database_url)
    writing = _writing(engine)
    with Session(engine, expire_on_commit=False) as session, SmtpSender(settings) as sender:
        # Read what the batch needs in a read transaction (on SQLite it takes no write lock), then end it.
        if engine.dialect.name == "sqlite":
            session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        items = _load(session, step_ids, claimant)
        if not items:
            return outcome
        finisher = StepFinisher(session=session, plans=[item.plan for item in items])
        sequences = _next_sequences(session, [id_of(item.step) for item in items])
        session.commit()
        next_slots: dict[int, datetime] = {}
        accepted: _Sending | None = None

        def record_accepted() -> None:
            """Write the last accepted message `sent`, its step done and the next step due (committed by the caller)."""
            nonlocal accepted
            if accepted is None:
                return
            done, accepted = accepted, None
            _record_delivery(session, done, DeliveryState.SENT, done.answer)
            _finish(finisher, outcome, done.item, StepStatus.DONE, now)
            outcome.sent += 1
            session.flush()
            pause_here("during_ledger_write")

        try:
            for item in items:
                step, contact = item.step, item.contact
                if item.plan.status != PlanStatus.ACTIVE:
                    with writing:
                        _cancel_if_plan_closed(session, item, now)
                        record_accepted()
                        session.commit()
                    continue
                if contact.email_opt_out or contact.erased_at is not None:
                    reason = "contact opted out of email" + (
                        f" ({contact.email_opt_out_source})" if contact.email_opt_out_source else ""
                    )
                    with writing:
                        _finish(finisher, outcome, item, StepStatus.SKIPPED, now, reason=reason)
                        outcome.skipped += 1
                        record_accepted()
                        session.commit()
                    continue
                if _next_slot(item, now, next_slots) > now:
                    with writing:
                        _defer_outside_window(session, item, now, outcome, next_slots)
                        record_accepted()
                        session.commit()
                    continue
                outgoing, language = _outgoing_email(item, renderer, settings, message_id=new_message_id(settings))
                refused: PermanentSendError | None = None
                try:
                    message = build_message(outgoing, settings)
                except PermanentSendError as error:  # an address no server would take: nothing is handed over
                    refused = error
                sending = _Sending(item=item, sequence=sequences.get(id_of(step), 0))
                with writing:
                    session.connection().execute(
                        _INSERT_DELIVERY,
                        {
                            "plan_step_id": sending.step_id,
                            "kind": DeliveryKind.EMAIL,
                            "sequence": sending.sequence,
                            "recipient": contact.email,
                            "subject": outgoing.subject[:500],
                            "language": language,
                            "message_id": outgoing.message_id,
                            "state": DeliveryState.SENDING,
                            "smtp_response": None,
                            "flow_run_id": flow_run_id,
                            "created_at": clock(),
                            "sent_at": None,
                        },
                    )
                    if step.flow_run_id != flow_run_id:
                        write_row(session, step, {"flow_run_id": flow_run_id})
                    if refused is not None:
                        _refused_for_good(finisher, outcome, sending, refused, now)
                    # One commit: the previous message `sent` (with its step's completion) and this one `sending`.
                    record_accepted()
                    session.commit()
                if refused is not None:
                    continue
                pause_here("before_send")
                try:
                    answer = sender.send(message)
                except PermanentSendError as error:
                    with writing:
                        _refused_for_good(finisher, outcome, sending, error, now)
                        session.commit()
                    continue
                except SendOutcomeUnknownError as error:
                    # The message was handed over and the answer lost: it may have gone out. Never resend it on our
                    # own; staff say (engage tasks resolve). The batch goes on over a new connection.
                    with writing:
                        _record_delivery(session, sending, DeliveryState.UNKNOWN, str(error))
                        write_row(
                            session,
                            step,
                            {
                                "status": StepStatus.UNKNOWN,
                                "last_error": str(error)[:2000],
                                "lease_until": None,
                                "claimed_by": None,
                                "updated_at": now,
                            },
                        )
                        outcome.unknown += 1
                        session.commit()
                    continue
                except TransientSendError as error:
                    with writing:
                        _record_delivery(session, sending, DeliveryState.FAILED, error.response or str(error))
                        write_row(session, step, {"last_error": str(error)[:2000]})
                        session.commit()
                    raise
                pause_here("after_accept")
                sending.answer, sending.sent_at = answer, clock()
                accepted = sending
            with writing:
                record_accepted()
                session.commit()
        except BaseException:
            # Whatever stops the batch, a message the server accepted is recorded `sent`, not left in doubt.
            if accepted is not None:
                session.rollback()
                with writing:
                    record_accepted()
                    session.commit()
            raise
    return outcome


def _refused_for_good(
    finisher: StepFinisher, outcome: BatchOutcome, sending: _Sending, error: PermanentSendError, now: datetime
) -> None:
    """The recipient or message is refused for good (5xx, or an address no server takes): fail the step."""
    step = sending.item.step
    _record_delivery(finisher.session, sending, DeliveryState.FAILED, error.response or str(error))
    write_row(
        finisher.session,
        step,
        {
            "status": StepStatus.FAILED,
            "retryable": False,
            "last_error": str(error)[:2000],
            "completed_at": now,
            "lease_until": None,
            "updated_at": now,
        },
    )
    # A recipient the server refuses for good will not get this email: the next step (often the call) matters more
    # now, so its dependents proceed.
    released = finisher.release(step, now, force=True)
    outcome.released.extend(_due_item(sending.item, s) for s in released)
    outcome.failed += 1


def open_work_items(
    *, step_ids: Iterable[int], claimant: str, now: datetime, flow_run_id: str | None = None, url: str | None = None
) -> BatchOutcome:
    """Due call and task steps become open work items for their assignee (a call gets its slot)."""
    outcome = BatchOutcome()
    with _writing(db.get_engine(url)), db.session_scope(url) as session:
        items = _load(session, step_ids, claimant)
        call_steps = [id_of(i.step) for i in items if i.step.kind == StepKind.CALL]
        # Calls usually got their slot when their step got its date; one placement covers those that did not.
        calls.sync_calls(session=session, now=now, step_ids=call_steps)
        placed = set(
            session.exec(select(Call.plan_step_id).where(col(Call.plan_step_id).in_(call_steps))).all()
            if call_steps
            else ()
        )
        finisher = StepFinisher(session=session, plans=[item.plan for item in items])
        opened: list[int] = []
        for item in items:
            step = item.step
            if _cancel_if_plan_closed(session, item, now):
                continue
            if step.kind == StepKind.CALL and item.contact.do_not_call:
                _finish(finisher, outcome, item, StepStatus.SKIPPED, now, reason="contact asked not to be called")
                outcome.skipped += 1
                continue
            if step.kind == StepKind.CALL and id_of(step) not in placed:
                _create_call(session, item, now)
            opened.append(id_of(step))
        if opened:
            # One statement for the batch: the same values for every step that opens.
            values = {
                "status": StepStatus.OPEN,
                "lease_until": None,
                "claimed_by": None,
                "flow_run_id": flow_run_id,
                "updated_at": now,
            }
            session.connection().execute(update(PlanStep).where(col(PlanStep.id).in_(opened)).values(**values))
            outcome.opened += len(opened)
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
    with _writing(db.get_engine(url)), db.session_scope(url) as session:
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
    "has_due_steps",
    "mark_failed",
    "open_work_items",
    "plan_spec",
    "recover_expired_claims",
    "scheduled_due_items",
    "send_email_batch",
    "unique_due_items",
]
