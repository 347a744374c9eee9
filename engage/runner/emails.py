"""The emails of a batch: each rendered for its contact and delivered through the outbox, one commit a message."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from sqlmodel import Session, col, func, select

from engage.errors import PermanentSendError, SendOutcomeUnknownError, TransientSendError
from engage.mail.compose import contact_email
from engage.mail.message import OutgoingEmail, new_message_id
from engage.mail.outbox import Consequences, Outbox
from engage.plan_templates.store import template_spec
from engage.plans.lifecycle import StepFinisher
from engage.rendering.context import signer
from engage.rendering.renderer import get_renderer
from engage.rules.due import next_send_time
from engage.runner.batch import _cancel_if_plan_closed, _due_item, _finish, _load, _Loaded
from engage.runner.due import BatchOutcome
from engage.settings import Settings, get_settings
from engage.sql import write_row
from engage.unsubscribe.tokens import unsubscribe_url
from models import Delivery, DeliveryKind, PlanStatus, StepStatus, id_of


def send_email_batch(
    *,
    step_ids: Iterable[int],
    claimant: str,
    now: datetime,
    flow_run_id: str | None = None,
    settings: Settings | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BatchOutcome:
    """Send the emails of claimed steps over one SMTP connection, each delivery recorded by the outbox.

    The batch's plans are read once, up front. Each message is one commit: its `sending` record rides with the
    previous message's `sent` (and that step's completion, and the release of the next step), so a crash can hide
    the fate of at most one message per connection. A transient failure (4xx, connection) leaves its delivery
    `deferred` and raises TransientSendError: the caller retries, and the ledger makes the retry skip every step
    already sent.
    """
    settings = settings or get_settings()
    with Outbox.open(settings, flow_run_id=flow_run_id, clock=clock or (lambda: now)) as outbox:
        batch = _EmailBatch.read(outbox, step_ids=step_ids, claimant=claimant, now=now)
        for item in batch.items:
            batch.run(item)
    return batch.outcome


class _EmailBatch:
    """One batch's claimed steps, and the rungs each goes down: closed plan, opted out, outside the window, send."""

    def __init__(self, outbox: Outbox, items: list[_Loaded], now: datetime) -> None:
        settings = outbox.settings
        self.outbox, self.items, self.now = outbox, items, now
        self.outcome = BatchOutcome()
        self.finisher = StepFinisher(session=outbox.session, plans=[item.plan for item in items])
        self.sequences = _next_sequences(outbox.session, [id_of(item.step) for item in items])
        self.renderer = get_renderer(settings.email_templates_dir, tuple(settings.language_list))
        self._next_slots: dict[int, datetime] = {}

    @classmethod
    def read(cls, outbox: Outbox, *, step_ids: Iterable[int], claimant: str, now: datetime) -> _EmailBatch:
        """Read what the batch needs in a read transaction (on SQLite it takes no write lock), then end it."""
        session = outbox.session
        if session.get_bind().dialect.name == "sqlite":
            session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        batch = cls(outbox, _load(session, step_ids, claimant), now)
        session.commit()
        return batch

    def run(self, item: _Loaded) -> None:
        if item.plan.status != PlanStatus.ACTIVE:
            self.outbox.commit(lambda: _cancel_if_plan_closed(self.outbox.session, item, self.now))
        elif item.contact.email_opt_out or item.contact.erased_at is not None:
            self.outbox.commit(lambda: self._skip(item))
        elif self._next_slot(item) > self.now:
            self.outbox.commit(lambda: self._defer(item))
        else:
            self._send(item)

    def _send(self, item: _Loaded) -> None:
        self.outbox.deliver(
            self._email(item),
            kind=DeliveryKind.EMAIL,
            sequence=self.sequences.get(id_of(item.step), 0),
            plan_step_id=id_of(item.step),
            consequences=_StepEmail(self, item),
        )

    def _email(self, item: _Loaded) -> OutgoingEmail:
        """The step's email, rendered for its contact in their language."""
        spec = template_spec(item.template)
        email_template = spec.step(item.step.step_key).email_template
        assert email_template is not None  # only email steps are batched here
        settings = self.outbox.settings
        return contact_email(
            renderer=self.renderer,
            settings=settings,
            email_template=email_template,
            links=spec.links,
            contact=item.contact,
            workshop=item.workshop,
            signed_by=signer(applied_by=item.applier, assignee=item.assignee, settings=settings),
            language=self.renderer.pick_language(item.contact.language),
            unsubscribe_url=unsubscribe_url(item.contact.id or 0, settings),
            message_id=new_message_id(settings),
        )

    def _skip(self, item: _Loaded) -> None:
        contact = item.contact
        source = f" ({contact.email_opt_out_source})" if contact.email_opt_out_source else ""
        _finish(
            self.finisher,
            self.outcome,
            item,
            StepStatus.SKIPPED,
            self.now,
            reason=f"contact opted out of email{source}",
        )
        self.outcome.skipped += 1

    def _next_slot(self, item: _Loaded) -> datetime:
        """The first moment from now inside the send window of the item's template (worked out once a batch)."""
        template_id = id_of(item.template)
        if template_id not in self._next_slots:
            self._next_slots[template_id] = next_send_time(self.now, template_spec(item.template).calendar_rules())
        return self._next_slots[template_id]

    def _defer(self, item: _Loaded) -> None:
        """Emails go out inside the template's send window; a late run puts the step back to the next window."""
        step = item.step
        step.status = StepStatus.SCHEDULED
        step.due_at = self._next_slot(item)
        step.claimed_by = None
        step.lease_until = None
        step.attempts = max(0, step.attempts - 1)
        step.updated_at = self.now
        self.outbox.session.add(step)
        self.outcome.deferred += 1
        self.outcome.released.append(_due_item(item, step))


class _StepEmail(Consequences):
    """What a step's email delivery writes about its step."""

    def __init__(self, batch: _EmailBatch, item: _Loaded) -> None:
        self.batch, self.item = batch, item

    def sending(self) -> None:
        flow_run_id = self.batch.outbox.flow_run_id
        if self.item.step.flow_run_id != flow_run_id:
            write_row(self.batch.outbox.session, self.item.step, {"flow_run_id": flow_run_id})

    def sent(self, answer: str) -> None:
        batch = self.batch
        _finish(batch.finisher, batch.outcome, self.item, StepStatus.DONE, batch.now)
        batch.outcome.sent += 1

    def refused(self, error: PermanentSendError) -> None:
        """Refused for good (5xx, or an address no server takes): the step fails, and the plan goes on."""
        batch, step, now = self.batch, self.item.step, self.batch.now
        values = {
            "status": StepStatus.FAILED,
            "retryable": False,
            "last_error": str(error)[:2000],
            "completed_at": now,
            "lease_until": None,
            "updated_at": now,
        }
        write_row(batch.outbox.session, step, values)
        # A recipient the server refuses for good will not get this email: the next step (often the call) matters
        # more now, so its dependents proceed.
        released = batch.finisher.release(step, now, force=True)
        batch.outcome.released.extend(_due_item(self.item, s) for s in released)
        batch.outcome.failed += 1

    def unknown(self, error: SendOutcomeUnknownError) -> None:
        """It may have gone out: never resent on our own; staff say (engage tasks resolve). The batch goes on."""
        values = {
            "status": StepStatus.UNKNOWN,
            "last_error": str(error)[:2000],
            "lease_until": None,
            "claimed_by": None,
            "updated_at": self.batch.now,
        }
        write_row(self.batch.outbox.session, self.item.step, values)
        self.batch.outcome.unknown += 1

    def deferred(self, error: TransientSendError) -> None:
        """Nothing went out; the step keeps its claim, and the caller's retry sends it with the next sequence."""
        write_row(self.batch.outbox.session, self.item.step, {"last_error": str(error)[:2000]})


def _next_sequences(session: Session, step_ids: list[int]) -> dict[int, int]:
    """The sequence the next email delivery of each step takes (0 for a step never sent)."""
    rows = session.exec(
        select(Delivery.plan_step_id, func.max(Delivery.sequence))
        .where(col(Delivery.plan_step_id).in_(step_ids), Delivery.kind == DeliveryKind.EMAIL)
        .group_by(col(Delivery.plan_step_id))
    ).all()
    return {step_id: int(highest) + 1 for step_id, highest in rows if step_id is not None and highest is not None}
