"""Build and send email over SMTP; one connection reused for a batch, reopened when the server drops it."""

from __future__ import annotations

import smtplib
import ssl
import uuid
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from types import TracebackType

from engage.errors import EngageError
from engage.settings import Settings
from models import utcnow


class SendError(EngageError):
    """Sending one message failed."""

    def __init__(self, message: str, *, code: int | None = None, response: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.response = response


class TransientSendError(SendError):
    """The server or the network failed in a way that may pass (4xx, refused, dropped): retry later."""


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


def new_message_id(settings: Settings) -> str:
    """A unique Message-ID short enough never to be folded: `<32 hex digits@organisation domain>`."""
    domain = settings.organisation_email.rpartition("@")[2] or "engage.local"
    return f"<{uuid.uuid4().hex}@{domain}>"


def _address(name: str | None, email: str) -> Address:
    local, _, domain = email.rpartition("@")
    return Address(display_name=name or "", username=local, domain=domain)


def build_message(email: OutgoingEmail, settings: Settings) -> EmailMessage:
    """A multipart message (text, and HTML when there is one) with the headers every email of Engage carries."""
    message = EmailMessage()
    message["From"] = _address(settings.organisation_name, settings.smtp_from or settings.organisation_email)
    message["To"] = _address(email.to_name, email.to)
    if email.reply_to:
        message["Reply-To"] = _address(email.reply_to_name, email.reply_to)
    message["Subject"] = email.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = email.message_id
    message["Content-Language"] = email.language
    if email.unsubscribe_url:
        message["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(email.text)
    if email.html:
        message.add_alternative(email.html, subtype="html")
    return message


class SmtpSender:
    """A reusable SMTP connection; classifies failures as transient or permanent. Never logs the password."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.smtp_security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
                if s.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                smtp.login(s.smtp_user, password)
        except smtplib.SMTPAuthenticationError as error:
            raise PermanentSendError(
                f"SMTP login refused for user {s.smtp_user!r} at {s.smtp_host}:{s.smtp_port} ({error.smtp_code})",
                code=error.smtp_code,
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            raise TransientSendError(
                f"cannot connect to SMTP server {s.smtp_host}:{s.smtp_port}: {type(error).__name__}: {error}"
            ) from None
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None

    def send(self, message: EmailMessage) -> str:
        """Send one message; returns the server's answer. Reconnects once if the connection was dropped."""
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            try:
                refused = self._smtp.send_message(message)
            except smtplib.SMTPServerDisconnected:
                self._smtp = None
                if attempt == 2:
                    raise TransientSendError("the SMTP server closed the connection") from None
                continue
            except smtplib.SMTPRecipientsRefused as error:
                code, answer = next(iter(error.recipients.values()))
                raise _classified(code, answer) from None
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
                raise _classified(error.smtp_code, error.smtp_error) from None
            except (OSError, smtplib.SMTPException) as error:
                self.close()
                raise TransientSendError(f"SMTP error: {type(error).__name__}: {error}") from None
            if refused:
                code, answer = next(iter(refused.values()))
                raise _classified(code, answer)
            return "250 accepted"
        raise TransientSendError("the SMTP server closed the connection")


def _classified(code: int, answer: bytes | str) -> SendError:
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
    response = f"{code} {text}"
    if 400 <= code < 500:
        return TransientSendError(f"SMTP server deferred the message: {response}", code=code, response=response)
    return PermanentSendError(f"SMTP server refused the message: {response}", code=code, response=response)
