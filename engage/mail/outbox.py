"""The outbox: the one delivery protocol of every message Engage sends, and the records it keeps in the ledger.

A contact's email, a call's invite, update or cancel, a staff digest and a test send all go the same way::

    Outbox.deliver -> _record_sending -> _transmit -> _record_outcome (sent: with the next commit)

1. The delivery is recorded `sending`, with its Message-ID, and committed before the SMTP server is asked.
2. The server's answer decides its state:

   - `sent` (the answer kept): the server took it. This write, and what follows from it for its kind (the step
     done, the next step released, the call told), go in the next commit, which records the next message
     `sending`: one commit a message. Whatever stops the sender, the outbox commits them on its way out
     (:meth:`Outbox.open`), so an accepted message is recorded `sent`;
   - `failed`: refused for good (5xx), or an address no SMTP server takes (then nothing is asked of the server);
   - `unknown`: the connection dropped after the message was handed over, before the answer: it may have gone out.
     Never sent again on its own; staff say (`engage tasks resolve`);
   - `deferred`: a transient failure (the server unreachable, a 4xx answer): see below.

3. A delivery left `sending` by a crash, for longer than ENGAGE_LEASE_SECONDS, becomes `unknown`, whatever its
   kind (:func:`recover_stale_deliveries`).

**One rule for transient failures, for every kind: the record stays, `deferred`**, and TransientSendError goes up
to the caller, who stops its pass (every next message would fare the same) so that Prefect retries it later.
Nothing went out, so the message may be sent again: the retry is a new delivery, with the next sequence. A record is
never deleted: the ledger keeps every attempt (when the relay deferred what, with which answer), a freed key can
never be taken by two runs at once, and a delivery that was `deferred` can never be mistaken for one that went out.
What looks for a message already sent reads `deferred` as "not sent".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from engage import db
from engage.errors import PermanentSendError, SendOutcomeUnknownError, TransientSendError
from engage.faults import pause_here
from engage.mail.message import OutgoingEmail, PreparedMessage, build_message
from engage.mail.smtp import SmtpSender
from engage.secrets import smtp_password_source
from engage.settings import Settings
from models import DeliveryKind, DeliveryState, StepStatus

#: What :meth:`Outbox.deliver` returns when another run is recording the same message right now: it sends it.
BUSY = "busy"


class Consequences:
    """What a kind of message writes about each outcome of its delivery, in the same commit as that outcome.

    Each method runs inside the outbox's transaction and may write with the outbox's session; the default writes
    nothing. `sent` runs with the next commit (see the module's docstring), the others at once.
    """

    def sending(self) -> None:
        """With the `sending` record, before the server is asked."""

    def sent(self, answer: str) -> None:
        """With the `sent` record: the server took the message (``answer`` is its reply)."""

    def refused(self, error: PermanentSendError) -> None:
        """With the `failed` record: refused for good."""

    def unknown(self, error: SendOutcomeUnknownError) -> None:
        """With the `unknown` record: handed over, the answer lost."""

    def deferred(self, error: TransientSendError) -> None:
        """With the `deferred` record: nothing went out; the error goes up to the caller after this."""


NOTHING = Consequences()


# Built once: the outbox writes these for every message, and building a statement costs more than executing it.
_DELIVERY = SQLModel.metadata.tables["delivery"]


_PLAN_STEP = SQLModel.metadata.tables["plan_step"]


_INSERT_DELIVERY = insert(_DELIVERY).returning(_DELIVERY.c.id)


_SET_DELIVERY = (
    update(_DELIVERY)
    .where(_DELIVERY.c.id == bindparam("where_id"))
    .values(state=bindparam("set_state"), smtp_response=bindparam("set_response"), sent_at=bindparam("set_sent_at"))
)


class Outbox:
    """Delivers messages over one SMTP connection and records each delivery in one session, by the protocol above.

    Every commit of its session goes through the outbox (:meth:`commit`, :meth:`deliver`), so the writes that wait
    for the next commit (a message the server accepted) ride with whichever comes first. On SQLite each commit holds
    the process's writer lock (`engage.db.writing`).
    """

    def __init__(
        self,
        *,
        session: Session,
        sender: SmtpSender,
        settings: Settings,
        flow_run_id: str | None = None,
        clock: Callable[[], datetime],
    ) -> None:
        self.session = session
        self.sender = sender
        self.settings = settings
        self.flow_run_id = flow_run_id
        self.clock = clock
        self.writing = db.writing(session.get_bind())  # type: ignore[arg-type]
        self._later: list[Callable[[], None]] = []

    @classmethod
    @contextmanager
    def open(
        cls, settings: Settings, *, flow_run_id: str | None = None, clock: Callable[[], datetime]
    ) -> Iterator[Outbox]:
        """An outbox on the configured ledger and SMTP server; the connection opens with the first message.

        On the way out, normal or not, the writes still waiting are committed: a message the server accepted is
        recorded `sent`, whatever stopped the caller.
        """
        engine = db.get_engine(settings.database_url)
        with (
            Session(engine, expire_on_commit=False) as session,
            SmtpSender(settings, password=smtp_password_source(settings)) as sender,
        ):
            outbox = cls(session=session, sender=sender, settings=settings, flow_run_id=flow_run_id, clock=clock)
            try:
                yield outbox
            except BaseException:
                outbox._commit_waiting_alone()
                raise
            outbox.commit()

    # --- commits ---------------------------------------------------------------------------------------------------

    def commit(self, write: Callable[[], object] | None = None) -> None:
        """Commit what ``write`` writes (in this outbox's session) with the writes waiting for the next commit.

        ``write`` runs first: when it breaks a unique constraint (IntegrityError; an ORM insert must be flushed
        for that), the waiting writes are committed alone, then the error is raised.
        """
        with self.writing:
            if write is not None:
                try:
                    write()
                except IntegrityError:
                    self.session.rollback()
                    self._write_waiting()
                    self.session.commit()
                    raise
            self._write_waiting()
            self.session.commit()

    def later(self, write: Callable[[], None]) -> None:
        """Have ``write`` go with the next commit (they run in the order given, each once)."""
        self._later.append(write)

    def _write_waiting(self) -> None:
        # Each waiting write is taken off the list before it runs, so none ever runs twice: one that fails with its
        # transaction leaves its message `sending`, and that becomes `unknown` (never resent), not `sent` twice over.
        while self._later:
            self._later.pop(0)()

    def _commit_waiting_alone(self) -> None:
        """Something stopped the caller: forget its unfinished writes, commit the waiting ones."""
        self.session.rollback()
        if self._later:
            self.commit()

    # --- the protocol ----------------------------------------------------------------------------------------------

    def deliver(
        self,
        email: OutgoingEmail,
        *,
        kind: DeliveryKind,
        sequence: int = 0,
        plan_step_id: int | None = None,
        staff_digest_id: int | None = None,
        consequences: Consequences = NOTHING,
    ) -> str:
        """Deliver one message; return the state it reached, or BUSY when another run records the same one now.

        A deferral (a transient failure) is recorded, then its TransientSendError is raised.
        """
        record = {
            "plan_step_id": plan_step_id,
            "staff_digest_id": staff_digest_id,
            "kind": kind,
            "sequence": sequence,
            "recipient": email.to,
            "subject": email.subject[:500],
            "language": email.language,
            "message_id": email.message_id,
            "state": DeliveryState.SENDING,
            "smtp_response": None,
            "flow_run_id": self.flow_run_id,
            "created_at": self.clock(),
            "sent_at": None,
        }
        try:
            message = build_message(email, self.settings)
        except PermanentSendError as error:  # an address no server would take: nothing is handed over
            return self._record_refused(record, error, consequences)
        delivery_id = self._record_sending(record, consequences)
        if delivery_id is None:
            return BUSY
        return self._transmit(delivery_id, message, consequences)

    def _record_refused(self, record: dict[str, Any], error: PermanentSendError, consequences: Consequences) -> str:
        """Commit the record of a message no server would take, `failed` at once."""

        def write() -> None:
            consequences.sending()
            consequences.refused(error)

        refused = record | {"state": DeliveryState.FAILED, "smtp_response": _cut(error.response or str(error))}
        return DeliveryState.FAILED if self._insert(refused, write) is not None else BUSY

    def _record_sending(self, record: dict[str, Any], consequences: Consequences) -> int | None:
        """Commit the `sending` record (with the writes waiting); None when the same message is recorded already."""
        return self._insert(record, consequences.sending)

    def _insert(self, record: dict[str, Any], write: Callable[[], None]) -> int | None:
        """Commit a new delivery record and ``write``; None when its key is taken (the same message, elsewhere)."""
        inserted: list[int] = []

        def insert() -> None:
            inserted.append(int(self.session.connection().execute(_INSERT_DELIVERY, record).scalar_one()))
            write()

        try:
            self.commit(insert)
        except IntegrityError:
            return None
        return inserted[0]

    def _transmit(self, delivery_id: int, message: PreparedMessage, consequences: Consequences) -> str:
        """Hand the message to the SMTP server and record what its answer means."""
        pause_here("before_send")
        try:
            answer = self.sender.send(message)
        except PermanentSendError as error:
            refused = error
            self._record_outcome(delivery_id, DeliveryState.FAILED, refused, lambda: consequences.refused(refused))
            return DeliveryState.FAILED
        except SendOutcomeUnknownError as error:
            lost = error
            self._record_outcome(delivery_id, DeliveryState.UNKNOWN, lost, lambda: consequences.unknown(lost))
            return DeliveryState.UNKNOWN
        except TransientSendError as error:
            deferred = error
            self._record_outcome(delivery_id, DeliveryState.DEFERRED, deferred, lambda: consequences.deferred(deferred))
            raise
        pause_here("after_accept")
        self._record_sent(delivery_id, answer, self.clock(), consequences)
        return DeliveryState.SENT

    def _record_outcome(
        self, delivery_id: int, state: DeliveryState, error: Exception, write: Callable[[], None]
    ) -> None:
        response = getattr(error, "response", None) if state != DeliveryState.UNKNOWN else None
        values = {"where_id": delivery_id, "set_state": state, "set_response": _cut(response or str(error))}

        def record() -> None:
            self.session.connection().execute(_SET_DELIVERY, values | {"set_sent_at": None})
            write()

        self.commit(record)

    def _record_sent(self, delivery_id: int, answer: str, sent_at: datetime, consequences: Consequences) -> None:
        values = {"where_id": delivery_id, "set_state": DeliveryState.SENT, "set_response": _cut(answer)}

        def record() -> None:
            self.session.connection().execute(_SET_DELIVERY, values | {"set_sent_at": sent_at})
            consequences.sent(answer)
            self.session.flush()
            pause_here("during_ledger_write")

        self.later(record)


def _cut(response: str) -> str:
    return response[:1000]


_LOST = "the run sending this email stopped before the SMTP server's answer was recorded"


def recover_deliveries(settings: Settings, *, now: datetime) -> int:
    """`recover_stale_deliveries` on the configured ledger, for deliveries older than ENGAGE_LEASE_SECONDS; every
    pass that sends (invites, digests, test sends) starts with it (claims do it for the runner's emails)."""
    url = settings.database_url
    with db.writing(db.get_engine(url)), db.session_scope(url) as session:
        return recover_stale_deliveries(session=session, now=now, older_than=timedelta(seconds=settings.lease_seconds))


def recover_lost_emails(*, session: Session, now: datetime) -> int:
    """A run died holding claims: a step whose email is still `sending` may have gone out, so both become `unknown`.

    A contact's email belongs to its step's claim: once the claim's lease is over, nobody will record the answer.
    Walks the expired claims (the step index), not the deliveries, so a claim pays little for it. Returns how many
    emails it marked.
    """
    lost = sa_select(_DELIVERY.c.id, _DELIVERY.c.plan_step_id).where(
        _DELIVERY.c.state == DeliveryState.SENDING,
        _DELIVERY.c.kind == DeliveryKind.EMAIL,
        _DELIVERY.c.plan_step_id.in_(
            sa_select(_PLAN_STEP.c.id).where(_PLAN_STEP.c.status == StepStatus.RUNNING, _PLAN_STEP.c.lease_until < now)
        ),
    )
    rows = session.connection().execute(lost).all()
    if not rows:
        return 0
    session.connection().execute(
        update(_DELIVERY).where(_DELIVERY.c.id.in_([row.id for row in rows])).values(state=DeliveryState.UNKNOWN)
    )
    session.connection().execute(
        update(_PLAN_STEP)
        .where(_PLAN_STEP.c.id.in_(sorted({row.plan_step_id for row in rows})))
        .values(status=StepStatus.UNKNOWN, last_error=_LOST, lease_until=None, claimed_by=None, updated_at=now)
    )
    return len(rows)


def recover_stale_deliveries(*, session: Session, now: datetime, older_than: timedelta) -> int:
    """A delivery still `sending` long after it started may have gone out: it becomes `unknown`, never sent again.

    Every kind alike: a contact's email by its step's claim (:func:`recover_lost_emails`: a live run finishes its
    own), any other message, or an email whose step is no longer claimed, once it is older than ``older_than``.
    Returns how many deliveries it marked.
    """
    recovered = recover_lost_emails(session=session, now=now)
    running = sa_select(_PLAN_STEP.c.id).where(_PLAN_STEP.c.status == StepStatus.RUNNING)
    result: Any = session.connection().execute(
        update(_DELIVERY)
        .where(
            _DELIVERY.c.state == DeliveryState.SENDING,
            _DELIVERY.c.created_at < now - older_than,
            or_(
                _DELIVERY.c.kind != DeliveryKind.EMAIL,
                _DELIVERY.c.plan_step_id.is_(None),
                _DELIVERY.c.plan_step_id.not_in(running),
            ),
        )
        .values(state=DeliveryState.UNKNOWN)
    )
    return recovered + int(result.rowcount or 0)
