"""The invite pass: send what the calendars of pending calls still need to hear."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from engage.errors import TransientSendError
from engage.invites.brief import CallBrief, Person
from engage.invites.calendar import compose_invite
from engage.invites.due import INVITE_KINDS, InviteMessage, SentInvite, messages_due
from engage.invites.ledger import _person, load_briefs
from engage.mail.message import new_message_id
from engage.mail.outbox import BUSY, Outbox, recover_deliveries
from engage.reports import redact
from engage.settings import Settings, get_settings
from models import (
    Call,
    Delivery,
    DeliveryKind,
    DeliveryState,
    Staff,
)

log = logging.getLogger(__name__)


@dataclass
class InviteOutcome:
    """What one sending pass did, in counts only (Prefect keeps these)."""

    requests: int = 0
    cancels: int = 0
    failed: int = 0
    unknown: int = 0
    busy: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.requests + self.cancels

    def as_dict(self) -> dict[str, int]:
        return {
            "invites_sent": self.requests,
            "cancels_sent": self.cancels,
            "invites_failed": self.failed,
            "invites_unknown": self.unknown,
        }


def send_pending_invites(
    *,
    now: datetime,
    settings: Settings | None = None,
    limit: int = 500,
    flow_run_id: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> InviteOutcome:
    """Send what the calendars of the calls marked `invite_pending` still need to hear, over one SMTP connection.

    Each message is delivered through the outbox (`engage.mail.outbox`): recorded `sending` and committed before the
    SMTP server is asked, then `sent`, `failed` (refused for good), `unknown` (the connection dropped after handing
    it over) or `deferred` (a transient failure: the server unreachable, 4xx). A deferral stops the pass and raises
    TransientSendError: the calls not done stay pending, and the next pass, or a retry, sends their messages again,
    with the next sequence. Calls are read ``limit`` at a time, in id order, until none is pending.
    """
    settings = settings or get_settings()
    outcome = InviteOutcome()
    recover_deliveries(settings, now=now)
    # The connection opens with the first message: a pass with nothing to send never touches the SMTP server.
    with Outbox.open(settings, flow_run_id=flow_run_id, clock=clock or (lambda: now)) as outbox:
        invite_pass = _InvitePass(outbox, now, outcome)
        after = 0
        while not outcome.errors:
            call_ids = _pending_calls(outbox.session, after=after, limit=limit)
            if not call_ids:
                break
            after = call_ids[-1]
            invite_pass.send(call_ids)
            if len(call_ids) < limit:
                break
    if outcome.errors:
        raise TransientSendError(
            f"call invites could not all be sent now and stay pending for the next pass: {redact(outcome.errors[0])}"
        )
    return outcome


def _pending_calls(session: Session, *, after: int, limit: int) -> list[int]:
    rows = session.exec(
        select(Call.id)
        .where(col(Call.invite_pending).is_(True), col(Call.id) > after)
        .order_by(col(Call.id))
        .limit(limit)
    )
    return [call_id for call_id in rows if call_id is not None]


# Built once: the pass writes these for every call, and building a statement costs more than executing it.
_CALL = Call.__table__  # type: ignore[attr-defined]


# Only if nothing changed the call meanwhile: a change made during the pass stays pending.
_CALL_TOLD = (
    update(_CALL)
    .where(_CALL.c.id == bindparam("where_call"), _CALL.c.sequence == bindparam("where_sequence"))
    .values(invite_pending=False)
)


_BUMP_SEQUENCE = (
    update(_CALL)
    .where(_CALL.c.id == bindparam("where_call"), _CALL.c.sequence == bindparam("where_sequence"))
    .values(sequence=bindparam("set_sequence"))
)


class _InvitePass:
    """Works out what the calendars of a page of calls need to hear, and has the outbox deliver it."""

    def __init__(self, outbox: Outbox, now: datetime, outcome: InviteOutcome) -> None:
        self.outbox, self.now, self.outcome = outbox, now, outcome

    def send(self, call_ids: list[int]) -> None:
        """Four queries for the page, then one commit a message; stops at the first transient failure."""
        session = self.outbox.session
        briefs = load_briefs(session=session, call_ids=call_ids)
        history: dict[int, list[SentInvite]] = defaultdict(list)
        for delivery in session.exec(
            select(Delivery).where(
                col(Delivery.plan_step_id).in_([b.step_id for b in briefs.values()]),
                col(Delivery.kind).in_(INVITE_KINDS),
            )
        ):
            if delivery.plan_step_id is not None:
                history[delivery.plan_step_id].append(
                    SentInvite(delivery.kind, delivery.sequence, delivery.recipient, delivery.state)
                )
        due = {brief.call_id: _messages_of(brief, history[brief.step_id]) for brief in briefs.values()}
        recipients = {m.recipient.lower() for messages, _ in due.values() for m in messages}
        self.people = {
            staff.email.lower(): _person(staff)
            for staff in session.exec(select(Staff).where(col(Staff.email).in_(sorted(recipients))))
        }
        session.commit()
        for call_id, (messages, sequence) in due.items():
            self.outcome.calls += 1
            if self._send_call(briefs[call_id], messages, sequence):
                told = {"where_call": call_id, "where_sequence": sequence}
                self.outbox.later(partial(self._tell_call, told))
            if self.outcome.errors:
                return  # the server is unreachable or deferring: the next pass sends the rest

    def _tell_call(self, told: dict[str, Any]) -> None:
        self.outbox.session.connection().execute(_CALL_TOLD, told)

    def _send_call(self, brief: CallBrief, messages: list[InviteMessage], sequence: int) -> bool:
        """Send one call's messages; False when the call must stay pending (changed meanwhile, or not all sent)."""
        if sequence != brief.sequence and not self._bump_sequence(brief, sequence):
            return False
        for message in messages:
            if not self._send_message(brief, message):
                return False
        return True

    def _bump_sequence(self, brief: CallBrief, sequence: int) -> bool:
        """Messages take SEQUENCE numbers above the call's: record the highest first, so a later change counts on."""
        bumped: list[bool] = []

        def bump() -> None:
            values = {"where_call": brief.call_id, "where_sequence": brief.sequence, "set_sequence": sequence}
            result: Any = self.outbox.session.connection().execute(_BUMP_SEQUENCE, values)
            bumped.append(bool(result.rowcount))

        self.outbox.commit(bump)
        return bumped[0]

    def _send_message(self, brief: CallBrief, message: InviteMessage) -> bool:
        """Deliver one invite; False when the call must stay pending."""
        recipient = self.people.get(message.recipient.lower()) or Person(
            email=message.recipient, name="", language=brief.assignee.language, timezone=brief.assignee.timezone
        )
        settings = self.outbox.settings
        email = compose_invite(
            brief, message, recipient, now=self.now, settings=settings, message_id=new_message_id(settings)
        )
        try:
            state = self.outbox.deliver(
                email, kind=DeliveryKind(message.kind), sequence=message.sequence, plan_step_id=brief.step_id
            )
        except TransientSendError as error:
            self.outcome.errors.append(str(error))
            return False
        if state == BUSY:
            # Another pass records the same message right now: it sends it, this one leaves the call alone.
            self.outcome.busy += 1
            return False
        if state == DeliveryState.FAILED:
            self.outcome.failed += 1
        elif state == DeliveryState.UNKNOWN:
            self.outcome.unknown += 1
        elif message.method == "CANCEL":
            self.outcome.cancels += 1
        else:
            self.outcome.requests += 1
        return True


def _messages_of(brief: CallBrief, history: list[SentInvite]) -> tuple[list[InviteMessage], int]:
    return messages_due(
        assignee=brief.assignee.email, sequence=brief.sequence, cancelled=brief.cancelled, history=history
    )
