"""An SMTP connection reused for a batch, reopened when the server drops it; failures classified."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from types import TracebackType

from pydantic import SecretStr

from engage.errors import (
    ConnectionSendError,
    PermanentSendError,
    SendError,
    SendOutcomeUnknownError,
    TransientSendError,
)
from engage.mail.message import _CRLF, PreparedMessage
from engage.settings import Settings

log = logging.getLogger(__name__)


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


class SmtpSender:
    """A reusable SMTP connection; classifies failures as transient or permanent. Never logs the password.

    The password is ENGAGE_SMTP_PASSWORD, else what ``password`` returns (called once, when a connection first logs
    in: `engage.secrets.smtp_password_source` reads a Prefect Secret block that way).
    """

    def __init__(self, settings: Settings, *, password: Callable[[], str] | None = None) -> None:
        self.settings = settings
        self._password_source = password
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
            elif self._password_source is not None:
                self._password = SecretStr(self._password_source())
            elif s.smtp_password_block:
                raise ConnectionSendError(
                    f"ENGAGE_SMTP_PASSWORD_BLOCK names {s.smtp_password_block!r}, but this sender was given no way to "
                    "read it (engage.secrets.smtp_password_source)"
                )
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

    def send(self, prepared: PreparedMessage) -> str:
        """Send one message; return the server's answer. Reconnects once if the connection was dropped."""
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
