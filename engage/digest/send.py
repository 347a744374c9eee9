"""Sending digests: once per staff member and local day."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from engage import db
from engage.digest.collect import Digest, collect_digests, digest_due
from engage.digest.render import digest_email
from engage.errors import InvalidStateError, PermanentSendError, SendOutcomeUnknownError, TransientSendError
from engage.mail.message import new_message_id
from engage.mail.smtp import SmtpSender
from engage.reports import redact
from engage.settings import Settings, get_settings
from engage.staff import get_staff
from models import (
    DeliveryState,
    Staff,
    StaffDigest,
    id_of,
)

log = logging.getLogger(__name__)


#: A day whose digest had nothing to say (no email went out).
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
