"""Build and send email over SMTP; one connection reused for a batch, reopened when the server drops it.

Messages are built as bytes ready for the SMTP DATA command (headers encoded, both parts quoted-printable,
CRLF line ends) without the ``email.message`` object model: building is the costly part of sending, and an
email of Engage always has the same simple shape. ``PreparedMessage.parsed()`` reads one back for checks.

The SMTP password comes from ``ENGAGE_SMTP_PASSWORD`` or, read only when a connection logs in, a Prefect
Secret block named by ``ENGAGE_SMTP_PASSWORD_BLOCK``. It is never logged, never part of an error message
and never shown in a repr.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import logging
import re
import smtplib
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses
from functools import lru_cache
from types import TracebackType
from typing import Any
from urllib.parse import quote

from pydantic import Secret, SecretStr

from engage.errors import EngageError
from engage.settings import Settings
from models import utcnow

__all__ = [
    "ConnectionSendError",
    "OutgoingEmail",
    "PermanentSendError",
    "PreparedMessage",
    "SendError",
    "SendOutcomeUnknownError",
    "SmtpSender",
    "TransientSendError",
    "build_message",
    "new_message_id",
]

log = logging.getLogger(__name__)


class SendError(EngageError):
    """Sending one message failed."""

    def __init__(self, message: str, *, code: int | None = None, response: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.response = response


class TransientSendError(SendError):
    """The server or the network failed in a way that may pass (4xx, refused, dropped): retry later."""


class ConnectionSendError(TransientSendError):
    """No message could be handed over (connection, TLS, login or sender refused): no recipient is to blame."""


class SendOutcomeUnknownError(TransientSendError):
    """The connection dropped after the message was handed over, before the server answered: it may have gone out."""


class PermanentSendError(SendError):
    """The server refused this recipient or message for good (5xx): do not retry."""


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


# --- Building -------------------------------------------------------------------------------------------------

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


def prepare_email_message(message: EmailMessage, settings: Settings) -> PreparedMessage:
    """Turn a standard-library message (e.g. a calendar invite) into what `SmtpSender.send` transmits."""
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


# --- Sending --------------------------------------------------------------------------------------------------


class _RateLimiter:
    """Space messages evenly so a process never sends more than the relay's rate; shared by every sender."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, per_minute: float) -> None:
        interval = 60.0 / per_minute
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + interval
        if start > now:
            time.sleep(start - now)


_RATE_LIMITER = _RateLimiter()


class _Dropped(Exception):
    """The connection was lost before the message was handed over: sending again cannot duplicate it."""


def _load_secret_block(name: str) -> str:
    """Read the SMTP password from a Prefect Secret block; Prefect is imported only when this is used."""
    from prefect.blocks.system import Secret as SecretBlock

    try:
        # Called from synchronous code, load() returns the block itself (not a coroutine).
        block: Any = SecretBlock.load(name)
    # Prefect raises its own, httpx's and pydantic's errors here; each becomes one clear line. The password is not
    # loaded when this fails, so the message cannot contain it.
    except Exception as error:
        raise ConnectionSendError(
            f"cannot read the SMTP password from the Prefect Secret block {name!r}: {type(error).__name__}: {error}"
        ) from None
    # The raw value: Secret.get() would parse a password such as "1234" as JSON and return a number.
    value = block.value.get_secret_value() if isinstance(block.value, SecretStr | Secret) else block.value
    if not isinstance(value, str) or not value:
        raise ConnectionSendError(f"the Prefect Secret block {name!r} must hold a text value (the SMTP password)")
    return value


class SmtpSender:
    """A reusable SMTP connection; classifies failures as transient or permanent. Never logs the password."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: smtplib.SMTP | None = None
        self._password: SecretStr | None = None
        self._tls: ssl.SSLContext | None = None
        self.connections_opened = 0

    def __repr__(self) -> str:
        s = self.settings
        return f"SmtpSender({s.smtp_host}:{s.smtp_port}, security={s.smtp_security}, user={s.smtp_user!r})"

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.close()

    @property
    def _where(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            ca_file = self.settings.smtp_ca_file
            try:
                self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as error:
                raise ConnectionSendError(f"cannot read ENGAGE_SMTP_CA_FILE {ca_file}: {error}") from None
        return self._tls

    def _login_password(self) -> str:
        s = self.settings
        if self._password is None:
            if s.smtp_password is not None:
                self._password = s.smtp_password
            elif s.smtp_password_block:
                self._password = SecretStr(_load_secret_block(s.smtp_password_block))
            else:
                raise ConnectionSendError(
                    f"ENGAGE_SMTP_USER is {s.smtp_user!r} but no password is configured: set ENGAGE_SMTP_PASSWORD "
                    "or ENGAGE_SMTP_PASSWORD_BLOCK"
                )
        return self._password.get_secret_value()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP | None = None
        try:
            if s.smtp_security == "ssl":
                smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=self._tls_context())
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
            smtp.ehlo()
            if s.smtp_security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConnectionSendError(f"the SMTP server {self._where} does not offer STARTTLS")
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if s.smtp_user:
                smtp.login(s.smtp_user, self._login_password())
        except smtplib.SMTPAuthenticationError as error:
            _quietly_close(smtp)
            answer = _answer(error.smtp_code, error.smtp_error)
            raise ConnectionSendError(
                f"SMTP login refused for user {s.smtp_user!r} at {self._where}: {answer}",
                code=error.smtp_code,
                response=answer,
            ) from None
        except ssl.SSLCertVerificationError as error:
            _quietly_close(smtp)
            raise ConnectionSendError(
                f"the TLS certificate of the SMTP server {self._where} is not trusted ({error.verify_message}); "
                "set ENGAGE_SMTP_CA_FILE to the CA that signed it"
            ) from None
        except ConnectionSendError:
            _quietly_close(smtp)
            raise
        except (OSError, smtplib.SMTPException) as error:
            _quietly_close(smtp)
            raise ConnectionSendError(
                f"cannot connect to SMTP server {self._where}: {type(error).__name__}: {_error_text(error)}"
            ) from None
        self.connections_opened += 1
        return smtp

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        if self._connection is not None:
            smtp, self._connection = self._connection, None
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def _discard(self) -> None:
        if self._connection is not None:
            _quietly_close(self._connection)
            self._connection = None

    def send(self, message: PreparedMessage | EmailMessage) -> str:
        """Send one message; return the server's answer. Reconnects once if the connection was dropped."""
        prepared = message if isinstance(message, PreparedMessage) else prepare_email_message(message, self.settings)
        if self.settings.smtp_rate_per_minute:
            _RATE_LIMITER.wait(self.settings.smtp_rate_per_minute)
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._connect()
            try:
                return self._transmit(self._connection, prepared)
            except _Dropped:
                self._discard()
                if attempt == 2:
                    raise TransientSendError(
                        f"the SMTP server {self._where} closed the connection again right after reconnecting"
                    ) from None
                log.info("the SMTP server %s closed the connection; reconnecting", self._where)
        raise AssertionError("unreachable")  # pragma: no cover

    def _transmit(self, smtp: smtplib.SMTP, message: PreparedMessage) -> str:
        """MAIL, RCPT, DATA by hand: a drop before DATA's content is retried, one after it is reported unknown."""
        try:
            code, answer = smtp.mail(message.sender)
            if code != 250:
                self._reset(smtp)
                raise _refused(code, answer, sender=message.sender)
            for recipient in message.recipients:
                code, answer = smtp.rcpt(recipient)
                if code not in (250, 251):
                    self._reset(smtp)
                    raise _refused(code, answer)
            smtp.putcmd("data")
            code, answer = smtp.getreply()
            if code != 354:
                self._reset(smtp)
                raise _refused(code, answer)
        except (smtplib.SMTPServerDisconnected, OSError):
            raise _Dropped from None
        try:
            smtp.send(_dot_stuffed(message.data))
            code, answer = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self._discard()
            raise SendOutcomeUnknownError(
                f"the connection to {self._where} was lost after the message was handed over, before the server "
                f"answered ({type(error).__name__}): it may have been delivered"
            ) from None
        if code != 250:
            if code == 421:
                self._discard()
            raise _refused(code, answer)
        return _answer(code, answer)

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """Forget a refused transaction so the connection serves the next message; drop it if that fails."""
        try:
            code, _ = smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            self._discard()


def _dot_stuffed(data: bytes) -> bytes:
    stuffed = re.sub(rb"(?m)^\.", b"..", data)
    if not stuffed.endswith(_CRLF):
        stuffed += _CRLF
    return stuffed + b"." + _CRLF


def _quietly_close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        try:
            smtp.close()
        except OSError as error:
            log.debug("closing an SMTP connection failed: %s", type(error).__name__)


def _error_text(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return _answer(error.smtp_code, error.smtp_error)
    return str(error)


def _answer(code: int, answer: bytes | str) -> str:
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
    return f"{code} {' '.join(text.split())}"


def _refused(code: int, answer: bytes | str, *, sender: str | None = None) -> SendError:
    response = _answer(code, answer)
    if sender is not None:
        # The server refuses the From address itself: every message would fail alike, so no recipient is blamed.
        return ConnectionSendError(f"SMTP server refused the sender {sender}: {response}", code=code, response=response)
    if 400 <= code < 500 or code < 200:
        return TransientSendError(f"SMTP server deferred the message: {response}", code=code, response=response)
    return PermanentSendError(f"SMTP server refused the message: {response}", code=code, response=response)
