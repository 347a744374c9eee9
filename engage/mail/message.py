"""Building messages as the bytes of SMTP DATA: headers encoded once, parts quoted-printable, CRLF line ends."""

from __future__ import annotations

import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from functools import lru_cache
from urllib.parse import quote

from engage.errors import PermanentSendError
from engage.settings import Settings


@dataclass(frozen=True)
class CalendarPart:
    """An iCalendar object sent along a message's text: `text/calendar; method=REQUEST` (or CANCEL), as calendars
    expect an invite."""

    method: str
    data: bytes


@dataclass(frozen=True)
class OutgoingEmail:
    """Everything one message says, whatever its kind; :func:`build_message` writes it.

    The body is ``text`` alone, ``text`` and ``html`` (an alternative), or ``text`` and ``calendar`` (an invite).
    ``reply_to`` (with its name) is written as it is, None writing no Reply-To (who answers a contact's email is
    decided by `engage.rendering.context.signer`). ``unsubscribe_url`` adds the List-Unsubscribe headers (emails to
    contacts); ``auto_submitted`` marks automatic mail to staff (invites, digests: RFC 3834). ``date`` is the Date
    header, the moment the message is built when None.
    """

    to: str
    to_name: str | None
    subject: str
    text: str
    html: str | None
    reply_to: str | None
    reply_to_name: str | None
    message_id: str
    unsubscribe_url: str | None
    language: str
    calendar: CalendarPart | None = None
    auto_submitted: bool = False
    date: datetime | None = None


@dataclass(frozen=True)
class PreparedMessage:
    """A message ready for SMTP: envelope addresses and the bytes of DATA (7-bit, CRLF line ends)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


def new_message_id(settings: Settings) -> str:
    """Return a unique Message-ID short enough never to be folded: `<32 hex digits@organisation domain>`."""
    domain = settings.organisation_email.rpartition("@")[2] or "engage.local"
    return f"<{uuid.uuid4().hex}@{domain}>"


_CRLF = b"\r\n"


_LINE_START_FROM = re.compile(rb"^From ", re.MULTILINE)


# Line breaks and other spacing collapse to one space; no-break spaces stay (French puts them before « : » and »).
_SPACING = re.compile(r"[^\S\u00a0\u202f\u2007]+")


def _one_line(value: str) -> str:
    """Collapse whitespace, so that nothing a contact typed can start a header of its own (no-break spaces stay)."""
    return _SPACING.sub(" ", value).strip(" ")


def _ascii_address(address: str) -> str:
    """Return an address as SMTP carries it: an internationalised domain in IDNA, the local part ASCII only."""
    address = address.strip()
    if any(char in address for char in '\r\n<>,;"') or address.count("@") != 1:
        raise PermanentSendError(f"not a deliverable email address: {address!r}")
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise PermanentSendError(f"{address!r} has a non-ASCII local part, which needs SMTPUTF8")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise PermanentSendError(f"{address!r} has a domain that cannot be encoded for SMTP") from None
    return f"{local}@{domain}"


@lru_cache(maxsize=1024)
def _address_header(name: str | None, address: str) -> str:
    return formataddr((_one_line(name or ""), address), charset="utf-8").replace("\n", "\r\n").replace("\r\r\n", "\r\n")


# A step's subject is usually the same for every contact of a batch, and encoding it is the costliest header.
@lru_cache(maxsize=512)
def _subject_header(subject: str) -> str:
    subject = _one_line(subject)
    charset = "us-ascii" if subject.isascii() else "utf-8"
    return Header(subject, charset, header_name="Subject").encode(linesep="\r\n")


def _list_unsubscribe(url: str, mailto: str | None) -> str:
    targets = [f"<{url}>"]
    if mailto:
        token = url.rstrip("/").rpartition("/")[2]
        targets.insert(0, f"<mailto:{mailto}?subject={quote('unsubscribe ' + token)}>")
    joined = ", ".join(targets)
    # Keep header lines under 78 characters where the values allow it (RFC 5322 2.1.1).
    return joined if len(joined) < 60 else ",\r\n ".join(targets)


def _quoted_printable(text: str) -> bytes:
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    if not normalised.endswith("\n"):
        normalised += "\n"
    encoded = binascii.b2a_qp(normalised.encode("utf-8"), quotetabs=False, istext=True, header=False)
    # "From " at the start of a line is rewritten by some relays (mbox); encoding the F keeps the text intact.
    encoded = _LINE_START_FROM.sub(b"=46rom ", encoded)
    return encoded.replace(b"\n", _CRLF)


def _part(subtype: str, text: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode()
        + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + _quoted_printable(text)
    )


def _addresses(email: OutgoingEmail, settings: Settings) -> tuple[str, str]:
    """The envelope's sender and recipient, as SMTP carries them (an address no server takes fails for good)."""
    return _ascii_address(settings.smtp_from or settings.organisation_email), _ascii_address(email.to)


def _headers(email: OutgoingEmail, settings: Settings, sender: str, recipient: str) -> list[str]:
    """The headers of every kind of message, in the order Engage writes them; the body's own come after."""
    headers = [
        f"From: {_address_header(settings.organisation_name, sender)}",
        f"To: {_address_header(email.to_name, recipient)}",
    ]
    if email.reply_to:
        headers.append(f"Reply-To: {_address_header(email.reply_to_name, _ascii_address(email.reply_to))}")
    # A step's subject repeats over a batch (cached); automatic mail to staff has a subject of its own (not cached,
    # so as not to push the emails' subjects out).
    subject = _subject_header.__wrapped__(email.subject) if email.auto_submitted else _subject_header(email.subject)
    headers += [
        f"Subject: {subject}",
        f"Date: {format_datetime(email.date or datetime.now(UTC))}",
        f"Message-ID: {email.message_id}",
        f"Content-Language: {_one_line(email.language)}",
    ]
    if email.unsubscribe_url:
        headers.append(f"List-Unsubscribe: {_list_unsubscribe(email.unsubscribe_url, settings.unsubscribe_mailto)}")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    if email.auto_submitted:
        # Automatic mail: out-of-office replies and the like should not answer it (RFC 3834).
        headers.append("Auto-Submitted: auto-generated")
    headers.append("MIME-Version: 1.0")
    return headers


def _base64_lines(data: bytes) -> bytes:
    """base64 in lines of 76 characters, each ended by CRLF, as MIME writes it."""
    return b"".join(binascii.b2a_base64(data[start : start + 57]) for start in range(0, len(data), 57)).replace(
        b"\n", _CRLF
    )


def _calendar_part(calendar: CalendarPart) -> bytes:
    # base64 keeps the calendar's CRLF line ends and folded lines exactly as written.
    return (
        f'Content-Type: text/calendar; method="{_one_line(calendar.method)}"; charset="utf-8"\r\n'.encode()
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + _base64_lines(calendar.data)
    )


def _alternative(headers: list[str], parts: tuple[bytes, bytes]) -> bytes:
    """A multipart/alternative body of two parts; adds its Content-Type to ``headers``."""
    # "=_" never occurs in quoted-printable or base64 text, so the boundary cannot collide with a body.
    boundary = f"=_engage_{uuid.uuid4().hex}"
    headers.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
    # The line break before a delimiter belongs to the delimiter (RFC 2046): each part ends with one more, so that
    # its own last line break survives.
    delimiter = f"\r\n--{boundary}\r\n".encode()
    return delimiter[2:] + parts[0] + delimiter + parts[1] + f"\r\n--{boundary}--\r\n".encode()


def build_message(email: OutgoingEmail, settings: Settings) -> PreparedMessage:
    """Build any message of Engage (text; text and HTML; text and a calendar) as the bytes SMTP carries.

    Raises PermanentSendError for an address no SMTP server would take: nothing can be handed over.
    """
    if email.html is not None and email.calendar is not None:
        raise ValueError("a message has an HTML part or a calendar part, not both")
    sender, recipient = _addresses(email, settings)
    headers = _headers(email, settings, sender, recipient)
    text = _part("plain", email.text)
    if email.calendar is not None:
        body = _CRLF + _alternative(headers, (text, _calendar_part(email.calendar)))
    elif email.html is not None:
        body = _CRLF + _alternative(headers, (text, _part("html", email.html)))
    else:
        # A single text part's own headers continue the message's; a multipart body starts after a blank line.
        body = text
    data = "\r\n".join(headers).encode("ascii") + _CRLF + body
    return PreparedMessage(sender=sender, recipients=(recipient,), data=data, message_id=email.message_id)
