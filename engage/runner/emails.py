"""The emails of a batch: rendered, recorded before and after the SMTP server answers, one commit a message."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, update
from sqlmodel import Session, SQLModel, col, func, select

from engage import db, rendering
from engage.db import _writing
from engage.errors import PermanentSendError, SendOutcomeUnknownError, TransientSendError
from engage.faults import pause_here
from engage.mail.message import OutgoingEmail, build_message, new_message_id
from engage.mail.smtp import SmtpSender
from engage.plan_templates.store import template_spec
from engage.plans.lifecycle import StepFinisher
from engage.rendering.renderer import EmailRenderer, get_renderer
from engage.rules.due import next_send_time
from engage.runner.batch import _cancel_if_plan_closed, _due_item, _finish, _load, _Loaded
from engage.runner.due import BatchOutcome
from engage.settings import Settings, get_settings
from engage.sql import write_row
from engage.unsubscribe.tokens import unsubscribe_url
from models import (
    Delivery,
    DeliveryKind,
    DeliveryState,
    PlanStatus,
    StepStatus,
    id_of,
)


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
