"""Sending digests: once per staff member and local day."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from engage.digest.collect import Digest, collect_digests, digest_due
from engage.digest.render import compose_digest
from engage.errors import InvalidStateError, TransientSendError
from engage.mail.message import new_message_id
from engage.mail.outbox import BUSY, Consequences, Outbox, recover_deliveries
from engage.reports import redact
from engage.settings import Settings, get_settings
from engage.staff import get_staff
from models import (
    Delivery,
    DeliveryKind,
    DeliveryState,
    Staff,
    StaffDigest,
    id_of,
)

log = logging.getLogger(__name__)


#: What `engage digest` calls a day whose digest had nothing to say (no email went out: its items are 0).
EMPTY = "empty"


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

    ``only`` (a staff email) sends that person's digest now, whatever the hour, still at most once that day. Each
    person's day is decided first (a `staff_digest` row, unique per person and day: concurrent runs agree), then
    its email is delivered through the outbox (`engage.mail.outbox`): recorded `sending` before the SMTP server is
    asked, then `sent`, `failed`, `unknown` or `deferred`. A deferral (a transient failure: nothing went out) stops
    the run and raises TransientSendError once it is over; a later run that day (a retry) sends that digest again,
    with the next sequence.
    """
    settings = settings or get_settings()
    outcome = DigestOutcome()
    recover_deliveries(settings, now=now)
    with Outbox.open(settings, flow_run_id=flow_run_id, clock=lambda: now) as outbox:
        run = _DigestRun.read(outbox, now=now, only=only, outcome=outcome)
        for digest in run.digests:
            run.send(digest)
            if outcome.errors:
                break  # the server is unreachable or deferring: a retry sends the rest
    log.info("staff digests: %s", outcome.as_dict())
    if outcome.errors:
        # Prefect shows this message: addresses an SMTP answer may quote are hidden.
        raise TransientSendError(f"staff digests could not all be sent now: {redact(outcome.errors[0])}")
    return outcome


@dataclass
class _Day:
    """A day already decided: its row, and the sequence its next email takes (None: it needs none)."""

    row: StaffDigest
    next_sequence: int | None


class _DigestRun:
    """The staff members of one run, their days, and the ladder each digest goes down: decide, then deliver."""

    def __init__(self, outbox: Outbox, now: datetime, outcome: DigestOutcome) -> None:
        self.outbox, self.now, self.outcome = outbox, now, outcome
        self.days: dict[tuple[int, date], _Day] = {}
        self.digests: list[Digest] = []

    @classmethod
    def read(cls, outbox: Outbox, *, now: datetime, only: str | None, outcome: DigestOutcome) -> _DigestRun:
        """Who gets a digest now, and what it says; the read transaction ends before anything is sent."""
        run = cls(outbox, now, outcome)
        session, settings = outbox.session, outbox.settings
        if only:
            member = get_staff(session=session, email=only)
            if not member.active:
                raise InvalidStateError(f"staff member {member.email} is not active: no digest")
            members = [member]
        else:
            members = list(session.exec(select(Staff).where(col(Staff.active).is_(True)).order_by(col(Staff.id))))
        local_days = {id_of(m): now.astimezone(ZoneInfo(m.timezone)).date() for m in members}
        run.days = _decided_days(session, local_days)
        wanted = []
        for member in members:
            day = run.days.get((id_of(member), local_days[id_of(member)]))
            if day is not None and day.next_sequence is None:
                outcome.already_done += 1
            elif only is None and not digest_due(member, now, settings.digest_time):
                outcome.not_due += 1
            else:
                wanted.append(member)
        since = _last_sent(session, [id_of(m) for m in wanted])
        run.digests = collect_digests(session=session, now=now, staff=wanted, since=since)
        session.commit()
        return run

    def send(self, digest: Digest) -> None:
        day = self.days.get((id_of(digest.staff), digest.day))
        if day is None:
            day = self._decide(digest)
            if day is None:
                # Another run decided this person's day at the same moment: it sends (or not) for both.
                self.outcome.already_done += 1
                return
        if not digest.items:
            if day.row.items:  # a retry that finds nothing left to say: the day becomes an empty one
                self.outbox.commit(partial(self._set_items, day.row, 0))
            self.outcome.empty += 1
            return
        assert day.next_sequence is not None
        self._deliver(digest, day)

    def _decide(self, digest: Digest) -> _Day | None:
        """Record what this person's day gets (an email of so many items, or none); None if decided elsewhere."""
        session = self.outbox.session
        row = StaffDigest(
            staff_id=id_of(digest.staff),
            day=digest.day,
            items=digest.items,
            flow_run_id=self.outbox.flow_run_id,
            created_at=self.now,
        )

        def insert() -> None:
            session.add(row)
            session.flush()  # now, so that a day decided elsewhere is found here

        try:
            self.outbox.commit(insert)
        except IntegrityError:
            return None
        return _Day(row=row, next_sequence=0)

    def _deliver(self, digest: Digest, day: _Day) -> None:
        settings = self.outbox.settings
        email = compose_digest(digest, now=self.now, settings=settings, message_id=new_message_id(settings))
        consequences = _DigestItems(self, day.row, digest.items)
        try:
            state = self.outbox.deliver(
                email,
                kind=DeliveryKind.DIGEST,
                sequence=day.next_sequence or 0,
                staff_digest_id=id_of(day.row),
                consequences=consequences,
            )
        except TransientSendError as error:
            self.outcome.errors.append(str(error))
            return
        if state == BUSY:
            self.outcome.already_done += 1  # another run is sending this very digest
        elif state == DeliveryState.SENT:
            self.outcome.sent += 1
        elif state == DeliveryState.FAILED:
            self.outcome.failed += 1
        else:
            self.outcome.unknown += 1

    def _set_items(self, row: StaffDigest, items: int) -> None:
        self.outbox.session.connection().execute(
            update(StaffDigest).where(col(StaffDigest.id) == row.id).values(items=items)
        )
        row.items = items


class _DigestItems(Consequences):
    """A retried digest lists what it lists now: its day's row says so with its `sending` record."""

    def __init__(self, run: _DigestRun, row: StaffDigest, items: int) -> None:
        self.run, self.row, self.items = run, row, items

    def sending(self) -> None:
        if self.row.items != self.items:
            self.run._set_items(self.row, self.items)


def _decided_days(session: Session, local_days: dict[int, date]) -> dict[tuple[int, date], _Day]:
    """The days of these staff members already decided, each with the sequence its next email takes, if any.

    A day needs an email when it has items and none of its deliveries went out or may have: none yet, or only
    deferred ones.
    """
    rows = session.exec(
        select(StaffDigest).where(
            col(StaffDigest.staff_id).in_(list(local_days)), col(StaffDigest.day).in_(set(local_days.values()))
        )
    ).all()
    deliveries: dict[int, list[tuple[int, str]]] = {id_of(row): [] for row in rows}
    if deliveries:
        for digest_id, sequence, state in session.execute(
            sa_select(col(Delivery.staff_digest_id), col(Delivery.sequence), col(Delivery.state)).where(
                col(Delivery.staff_digest_id).in_(list(deliveries)), col(Delivery.kind) == DeliveryKind.DIGEST
            )
        ):
            deliveries[digest_id].append((sequence, state))
    days = {}
    for row in rows:
        if local_days.get(row.staff_id) != row.day:
            continue
        tried = deliveries[id_of(row)]
        retry = row.items > 0 and all(state == DeliveryState.DEFERRED for _, state in tried)
        next_sequence = max((sequence for sequence, _ in tried), default=-1) + 1 if retry else None
        days[(row.staff_id, row.day)] = _Day(row=row, next_sequence=next_sequence)
    return days


def _last_sent(session: Session, staff_ids: list[int]) -> dict[int, datetime]:
    """When each of these staff members' last digest went out: "since your last digest" starts there."""
    if not staff_ids:
        return {}
    rows = session.execute(
        sa_select(col(StaffDigest.staff_id), func.max(col(Delivery.sent_at)))
        .join(Delivery, col(Delivery.staff_digest_id) == StaffDigest.id)
        .where(col(StaffDigest.staff_id).in_(staff_ids), col(Delivery.sent_at).is_not(None))
        .group_by(col(StaffDigest.staff_id))
    )
    return {row[0]: row[1] for row in rows}
