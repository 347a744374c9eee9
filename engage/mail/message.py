"""Building messages as the bytes of SMTP DATA: headers encoded once, parts quoted-printable, CRLF line ends."""

from __future__ import annotations

import binascii
import email
import email.policy
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import lru_cache
from urllib.parse import quote

from engage.errors import PermanentSendError
from engage.settings import Settings
from models import utcnow


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    to_name: str
    subject: str
    text: str
    html: str | None
    reply_to: str | None
    reply_to_name: str | None
    message_id: str
    unsubscribe_url: str | None
    language: str


@dataclass(frozen=True)
class PreparedMessage:
    """A message ready for SMTP: envelope addresses and the bytes of DATA (7-bit, CRLF line ends)."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str

    def parsed(self) -> EmailMessage:
        """Read the message back with the standard library, as a mail client would."""
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)  # the default policy makes EmailMessage objects
        return message


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


def build_message(email: OutgoingEmail, settings: Settings, *, now: datetime | None = None) -> PreparedMessage:
    """Build a message (text, and HTML when there is one) with the headers every email of Engage carries."""
    sender = _ascii_address(settings.smtp_from or settings.organisation_email)
    recipient = _ascii_address(email.to)
    headers = [
        f"From: {_address_header(settings.organisation_name, sender)}",
        f"To: {_address_header(email.to_name, recipient)}",
    ]
    reply_to = email.reply_to or settings.organisation_reply_to
    if reply_to:
        reply_name = email.reply_to_name if email.reply_to else settings.organisation_name
        headers.append(f"Reply-To: {_address_header(reply_name, _ascii_address(reply_to))}")
    headers += [
        f"Subject: {_subject_header(email.subject)}",
        f"Date: {format_datetime(now or utcnow())}",
        f"Message-ID: {email.message_id}",
        f"Content-Language: {_one_line(email.language)}",
    ]
    if email.unsubscribe_url:
        headers.append(f"List-Unsubscribe: {_list_unsubscribe(email.unsubscribe_url, settings.unsubscribe_mailto)}")
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers.append("MIME-Version: 1.0")
    if email.html is None:
        body = _part("plain", email.text)
    else:
        # "=_" never occurs in quoted-printable text, so the boundary cannot collide with a body.
        boundary = f"=_engage_{uuid.uuid4().hex}"
        headers.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
        # The line break before a delimiter belongs to the delimiter (RFC 2046): each part ends with one more,
        # so that its own last line break survives.
        delimiter = f"\r\n--{boundary}\r\n".encode()
        body = (
            delimiter[2:]
            + _part("plain", email.text)
            + delimiter
            + _part("html", email.html)
            + f"\r\n--{boundary}--\r\n".encode()
        )
    head = "\r\n".join(headers).encode("ascii") + _CRLF
    # A single text part's own headers continue the message's; a multipart body starts after a blank line.
    data = head + body if email.html is None else head + _CRLF + body
    return PreparedMessage(sender=sender, recipients=(recipient,), data=data, message_id=email.message_id)


def _base64_lines(data: bytes) -> bytes:
    """base64 in lines of 76 characters, each ended by CRLF, as MIME writes it."""
    return b"".join(binascii.b2a_base64(data[start : start + 57]) for start in range(0, len(data), 57)).replace(
        b"\n", _CRLF
    )


def build_calendar_message(
    *,
    to: str,
    to_name: str | None,
    subject: str,
    message_id: str,
    language: str,
    text: str,
    calendar: bytes,
    method: str,
    settings: Settings,
    now: datetime,
) -> PreparedMessage:
    """Build a calendar invite: a readable text part and a `text/calendar; method=...` part, as calendars expect.

    The same message as the standard library builds from an `EmailMessage` (:func:`prepare_email_message`), written
    directly: the calendar in base64, so that its CRLF line ends and folded lines arrive exactly as written.
    """
    sender = _ascii_address(settings.smtp_from or settings.organisation_email)
    recipient = _ascii_address(to)
    boundary = f"=_engage_{uuid.uuid4().hex}"
    headers = [
        f"From: {_address_header(settings.organisation_name, sender)}",
        f"To: {_address_header(to_name, recipient)}",
        # Each invite's subject is its own: encoded without filling the cache of the emails' subjects.
        f"Subject: {_subject_header.__wrapped__(subject)}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: {message_id}",
        f"Content-Language: {_one_line(language)}",
        # Automatic mail: out-of-office replies and the like should not answer it (RFC 3834).
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"',
    ]
    delimiter = f"\r\n--{boundary}\r\n".encode()
    body = (
        delimiter[2:]
        + _part("plain", text)
        + delimiter
        + f'Content-Type: text/calendar; method="{_one_line(method)}"; charset="utf-8"\r\n'.encode()
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + _base64_lines(calendar)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    data = "\r\n".join(headers).encode("ascii") + _CRLF + _CRLF + body
    return PreparedMessage(sender=sender, recipients=(recipient,), data=data, message_id=message_id)
