"""Plain builders: the standard library's (and icalendar's) way to write what Engage builds directly.

Production never imports this module. It is the oracle of the property tests (what production builds must read
back as what these build) and the benchmark's *bare* baseline (a plain loop that builds each invite this way).
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses

from icalendar import Calendar

from engage.digest.collect import Digest
from engage.digest.render import render_digest
from engage.errors import PermanentSendError
from engage.invites.brief import CallBrief, Person, _invite_text, _language, invite_subject
from engage.invites.calendar import Organiser, _empty_calendar, _invite_event, _timezone_years
from engage.invites.due import InviteMessage
from engage.mail.message import PreparedMessage, _ascii_address
from engage.settings import Settings


def prepare_email_message(message: EmailMessage, settings: Settings) -> PreparedMessage:
    """Turn a standard-library message into what `SmtpSender.send` transmits (envelope from its To, Cc and Bcc)."""
    recipients = tuple(
        _ascii_address(address)
        for _, address in getaddresses(
            [str(value) for key in ("To", "Cc", "Bcc") for value in message.get_all(key, [])]
        )
        if address
    )
    if not recipients:
        raise PermanentSendError("the message has no recipient")
    del message["Bcc"]
    sender = _ascii_address(settings.smtp_from or settings.organisation_email)
    return PreparedMessage(
        sender=sender,
        recipients=recipients,
        data=message.as_bytes(policy=email.policy.SMTP),
        message_id=str(message.get("Message-ID", "")),
    )


def invite_calendar(
    brief: CallBrief,
    message: InviteMessage,
    recipient: Person,
    *,
    now: datetime,
    organiser: Organiser,
) -> Calendar:
    """The iCalendar object of one invite: METHOD REQUEST or CANCEL, in the recipient's time zone (with VTIMEZONE)."""
    calendar = _empty_calendar(message.method)
    calendar.add_component(
        _invite_event(
            brief,
            message,
            recipient,
            now=now,
            organiser=organiser,
        )
    )
    first, last = _timezone_years(brief.slot_start)
    calendar.add_missing_timezones(first_date=first, last_date=last)
    return calendar


def invite_email(
    brief: CallBrief,
    message: InviteMessage,
    recipient: Person,
    *,
    now: datetime,
    settings: Settings,
    message_id: str,
) -> EmailMessage:
    """The email of one invite: a readable text part and a `text/calendar; method=...` part, as calendars expect."""
    calendar = invite_calendar(
        brief,
        message,
        recipient,
        now=now,
        organiser=Organiser.of(settings),
    )
    email = EmailMessage()
    email["From"] = formataddr((settings.organisation_name, settings.smtp_from or settings.organisation_email))
    email["To"] = formataddr((recipient.name, recipient.email))
    email["Subject"] = invite_subject(brief, message, recipient)
    email["Date"] = format_datetime(now)
    email["Message-ID"] = message_id
    # Automatic mail: out-of-office replies and the like should not answer it (RFC 3834).
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(_invite_text(brief, message, recipient), cte="quoted-printable")
    # base64 keeps the calendar's CRLF line ends and folded lines exactly as written.
    email.add_alternative(
        calendar.to_ical(),
        maintype="text",
        subtype="calendar",
        cte="base64",
        params={"method": message.method, "charset": "utf-8"},
    )
    # After the content: setting the content clears every Content-* header.
    email["Content-Language"] = _language(recipient)
    return email


def digest_email(digest: Digest, *, now: datetime, settings: Settings, message_id: str) -> EmailMessage:
    """The digest as an email to its staff member: a text part and an HTML part."""
    rendered = render_digest(digest, settings)
    email = EmailMessage()
    email["From"] = formataddr((settings.organisation_name, settings.smtp_from or settings.organisation_email))
    email["To"] = formataddr((digest.staff.name, digest.staff.email))
    email["Subject"] = rendered.subject
    email["Date"] = format_datetime(now)
    email["Message-ID"] = message_id
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(rendered.text, cte="quoted-printable")
    email.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    # After the content: setting the content clears every Content-* header (the digest built this way before the
    # outbox lost its Content-Language so).
    email["Content-Language"] = rendered.language
    return email
