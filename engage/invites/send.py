"""The invite pass: send what the calendars of pending calls still need to hear."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from engage import db
from engage.errors import PermanentSendError, SendOutcomeUnknownError, TransientSendError
from engage.invites.brief import CallBrief, Person, _language, invite_subject
from engage.invites.calendar import build_invite
from engage.invites.due import INVITE_KINDS, InviteMessage, SentInvite, messages_due
from engage.invites.ledger import _person, load_briefs
from engage.mail.message import new_message_id
from engage.mail.smtp import SmtpSender
from engage.reports import redact
from engage.settings import Settings, get_settings
from models import (
    Call,
    Delivery,
    DeliveryState,
    Staff,
)

log = logging.getLogger(__name__)


def recover_stale_invites(*, session: Session, now: datetime, older_than: timedelta) -> int:
    """An invite still `sending` long after it started may have gone out: it becomes `unknown`, never sent again."""
    result: Any = session.execute(
        update(Delivery)
        .where(
            col(Delivery.kind).in_(INVITE_KINDS),
            col(Delivery.state) == DeliveryState.SENDING,
            col(Delivery.created_at) < now - older_than,
        )
        .values(state=DeliveryState.UNKNOWN)
    )
    return int(result.rowcount or 0)


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

    Each message is recorded `sending` (with its Message-ID) and committed before the SMTP server is asked, then
    `sent`, `failed` (refused for good) or `unknown` (the connection dropped after handing it over). A transient
    failure (server unreachable, 4xx) forgets the record, since nothing went out, stops the pass and raises
    TransientSendError: the calls not done stay pending, and the next pass, or a retry, sends them. Calls are read
    ``limit`` at a time, in id order, until none is pending.
    """
    settings = settings or get_settings()
    clock = clock or (lambda: now)
    outcome = InviteOutcome()
    engine = db.get_engine(settings.database_url)
    with Session(engine, expire_on_commit=False) as session:
        recover_stale_invites(session=session, now=now, older_than=timedelta(seconds=settings.lease_seconds))
        session.commit()
    after = 0
    # The connection opens with the first message: a pass with nothing to send never touches the SMTP server.
    with SmtpSender(settings) as sender, Session(engine, expire_on_commit=False) as session:
        while not outcome.errors:
            call_ids = [
                call_id
                for call_id in session.exec(
                    select(Call.id)
                    .where(col(Call.invite_pending).is_(True), col(Call.id) > after)
                    .order_by(col(Call.id))
                    .limit(limit)
                )
                if call_id is not None
            ]
            if not call_ids:
                break
            after = call_ids[-1]
            _send_batch(session, sender, call_ids, now, settings, flow_run_id, clock, outcome)
            if len(call_ids) < limit:
                break
    if outcome.errors:
        raise TransientSendError(
            f"call invites could not all be sent now and stay pending for the next pass: {redact(outcome.errors[0])}"
        )
    return outcome


# Built once: the pass writes these for every invite, and building a statement costs more than executing it.
_DELIVERY = Delivery.__table__  # type: ignore[attr-defined]


_CALL = Call.__table__  # type: ignore[attr-defined]


_INSERT_DELIVERY = insert(_DELIVERY)


_DELIVERY_KEY = and_(
    _DELIVERY.c.plan_step_id == bindparam("where_step"),
    _DELIVERY.c.kind == bindparam("where_kind"),
    _DELIVERY.c.sequence == bindparam("where_sequence"),
)


_SET_DELIVERY = (
    update(_DELIVERY)
    .where(_DELIVERY_KEY)
    .values(state=bindparam("set_state"), smtp_response=bindparam("set_response"), sent_at=bindparam("set_sent_at"))
)


_FORGET_DELIVERY = delete(_DELIVERY).where(_DELIVERY_KEY)


# Only if nothing changed the call meanwhile: a change made during the pass stays pending.
_CALL_TOLD = (
    update(_CALL)
    .where(_CALL.c.id == bindparam("where_call"), _CALL.c.sequence == bindparam("where_sequence"))
    .values(invite_pending=False)
)


@dataclass
class _Ledger:
    """The pass's writes: each message is recorded `sending` in the same commit that records the one before it.

    ``later`` holds the writes that follow a message the server accepted (it is `sent`; its call, when that was its
    last message, is told); they go with the next commit, so the pass commits once a message. A crash before that
    commit leaves the accepted message `sending`, and it becomes `unknown` (never resent) when its lease is over.
    """

    session: Session
    later: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)

    def _write_later(self) -> None:
        connection = self.session.connection()
        for statement, parameters in self.later:
            connection.execute(statement, parameters)

    def commit(self, *writes: tuple[Any, dict[str, Any]]) -> None:
        """Commit ``writes`` with the writes waiting; on a unique conflict, commit the waiting ones alone and raise."""
        self._write_later()
        connection = self.session.connection()
        try:
            for statement, parameters in writes:
                connection.execute(statement, parameters)
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            self._write_later()
            self.session.commit()
            self.later.clear()
            raise
        self.later.clear()


def _delivery_key(step_id: int, message: InviteMessage) -> dict[str, Any]:
    return {"where_step": step_id, "where_kind": message.kind, "where_sequence": message.sequence}


def _send_batch(
    session: Session,
    sender: SmtpSender,
    call_ids: list[int],
    now: datetime,
    settings: Settings,
    flow_run_id: str | None,
    clock: Callable[[], datetime],
    outcome: InviteOutcome,
) -> None:
    """Work out and send what the calendars of these calls need to hear: four queries, then one commit a message."""
    briefs = load_briefs(session=session, call_ids=call_ids)
    history: dict[int, list[SentInvite]] = defaultdict(list)
    for delivery in session.exec(
        select(Delivery).where(
            col(Delivery.plan_step_id).in_([b.step_id for b in briefs.values()]),
            col(Delivery.kind).in_(INVITE_KINDS),
        )
    ):
        history[delivery.plan_step_id].append(
            SentInvite(delivery.kind, delivery.sequence, delivery.recipient, delivery.state)
        )
    plans = {brief.call_id: _plan_of(brief, history[brief.step_id]) for brief in briefs.values()}
    recipients = {m.recipient.lower() for messages, _ in plans.values() for m in messages}
    people = {
        staff.email.lower(): _person(staff)
        for staff in session.exec(select(Staff).where(col(Staff.email).in_(sorted(recipients))))
    }
    session.commit()
    ledger = _Ledger(session)
    try:
        for call_id, (messages, sequence) in plans.items():
            brief = briefs[call_id]
            outcome.calls += 1
            done = _send_call(
                ledger, sender, brief, messages, sequence, people, now, settings, flow_run_id, clock, outcome
            )
            if done:
                ledger.later.append((_CALL_TOLD, {"where_call": call_id, "where_sequence": sequence}))
            if outcome.errors:
                break  # the server is unreachable or deferring: the next pass sends the rest
    except BaseException:
        # Whatever stops the pass, a message the server accepted is recorded `sent`, not left in doubt.
        session.rollback()
        ledger.commit()
        raise
    ledger.commit()


def _plan_of(brief: CallBrief, history: list[SentInvite]) -> tuple[list[InviteMessage], int]:
    return messages_due(
        assignee=brief.assignee.email, sequence=brief.sequence, cancelled=brief.cancelled, history=history
    )


def _send_call(
    ledger: _Ledger,
    sender: SmtpSender,
    brief: CallBrief,
    messages: list[InviteMessage],
    sequence: int,
    people: dict[str, Person],
    now: datetime,
    settings: Settings,
    flow_run_id: str | None,
    clock: Callable[[], datetime],
    outcome: InviteOutcome,
) -> bool:
    """Send one call's messages; False when the call must stay pending (changed meanwhile, or a transient failure)."""
    session = ledger.session
    if sequence != brief.sequence:
        # Messages take SEQUENCE numbers above the call's: record the highest first, so a later change counts on.
        bumped: Any = session.execute(
            update(Call)
            .where(col(Call.id) == brief.call_id, col(Call.sequence) == brief.sequence)
            .values(sequence=sequence)
        )
        ledger.commit()
        if not bumped.rowcount:
            return False
    for message in messages:
        recipient = people.get(message.recipient.lower()) or Person(
            email=message.recipient, name="", language=brief.assignee.language, timezone=brief.assignee.timezone
        )
        message_id = new_message_id(settings)
        key = _delivery_key(brief.step_id, message)
        try:
            prepared = build_invite(brief, message, recipient, now=now, settings=settings, message_id=message_id)
        except PermanentSendError as error:  # an address no server would take: nothing is handed over
            prepared, refused = None, error
        subject = invite_subject(brief, message, recipient)
        try:
            ledger.commit(
                (
                    _INSERT_DELIVERY,
                    {
                        "plan_step_id": brief.step_id,
                        "kind": message.kind,
                        "sequence": message.sequence,
                        "recipient": recipient.email,
                        "subject": subject[:500],
                        "language": _language(recipient),
                        "message_id": message_id,
                        "state": DeliveryState.SENDING,
                        "smtp_response": None,
                        "flow_run_id": flow_run_id,
                        "created_at": clock(),
                        "sent_at": None,
                    },
                )
            )
        except IntegrityError:
            # Another pass records the same message right now: it sends it, this one leaves the call alone.
            outcome.busy += 1
            return False
        try:
            if prepared is None:
                raise refused
            answer = sender.send(prepared)
        except PermanentSendError as error:
            ledger.commit((_SET_DELIVERY, _outcome(key, DeliveryState.FAILED, error.response or str(error), None)))
            outcome.failed += 1
            continue
        except SendOutcomeUnknownError as error:
            ledger.commit((_SET_DELIVERY, _outcome(key, DeliveryState.UNKNOWN, str(error), None)))
            outcome.unknown += 1
            continue
        except TransientSendError as error:
            # Nothing was handed over: forget the record, so the next pass sends this message again.
            ledger.commit((_FORGET_DELIVERY, key))
            outcome.errors.append(str(error))
            return False
        ledger.later.append((_SET_DELIVERY, _outcome(key, DeliveryState.SENT, answer, clock())))
        if message.method == "CANCEL":
            outcome.cancels += 1
        else:
            outcome.requests += 1
    return True


def _outcome(key: dict[str, Any], state: str, response: str, sent_at: datetime | None) -> dict[str, Any]:
    return key | {"set_state": state, "set_response": response[:1000], "set_sent_at": sent_at}
