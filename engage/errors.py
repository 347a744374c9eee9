"""The exceptions Engage raises on purpose, in one tree. Each docstring says when it is raised.

The CLI prints the message of any of them on one line and exits non-zero; inside a flow they propagate, so the run
is marked Failed with that message. Callers catch the branch they mean::

    EngageError                    a problem the user can fix, never a bug
    ├── ConfigurationError         a setting is missing, wrong or a placeholder
    ├── InvalidValueError          a value is not of its form (an hour range, a time zone...); also a ValueError
    ├── TemplateError              a plan template does not validate
    │   └── RenderError            an email template is missing or uses what emails may not use
    ├── ImportFileError            an attendee file cannot be read at all; nothing was written
    ├── NotFoundError              a contact, staff member, plan, task or template named does not exist
    ├── InvalidStateError          the operation does not apply to the record as it is now
    ├── SlotError                  no working day within a year has room for a call
    ├── BadTokenError              an unsubscribe token is malformed or forged
    ├── ServerError                a part of the local stack did not start
    ├── StepsFailedError           batches of a run still failed after their retries
    └── SendError                  sending one message failed
        ├── TransientSendError     it may pass: retry later (4xx, refused or dropped connection)
        │   ├── ConnectionSendError        nothing could be handed over: no recipient is to blame
        │   └── SendOutcomeUnknownError    handed over, then the answer was lost: it may have gone out
        └── PermanentSendError     refused for good (5xx, an address no server takes): never retried
"""

from __future__ import annotations


class EngageError(Exception):
    """Base of every error that is the user's to fix, not a bug."""


class ConfigurationError(EngageError):
    """A setting is missing or wrong, or a secret is still its placeholder where it may not be."""


class InvalidValueError(EngageError, ValueError):
    """A value typed by a person is not of the form it must have (hours, days, a time zone); the message says which."""


class TemplateError(EngageError):
    """A plan template does not validate; the message names the file, the step and the field."""


class RenderError(TemplateError):
    """An email template is missing, or uses a variable or link the context does not have."""


class ImportFileError(EngageError):
    """An attendee file cannot be read at all (encoding, no email column); nothing was written."""


class NotFoundError(EngageError):
    """A contact, staff member, plan, task or template named by the user does not exist."""


class InvalidStateError(EngageError):
    """The operation does not apply to the record in its current state (e.g. completing a cancelled step)."""


class SlotError(EngageError):
    """No working day within a year has room for a call: the staff member's hours or days cannot hold it."""


class BadTokenError(EngageError):
    """The unsubscribe token is malformed or its signature does not match."""


class ServerError(EngageError):
    """A part of the local stack did not start; the message says which, and where its log is."""


class StepsFailedError(EngageError):
    """Some batches still failed after their retries: their steps are `failed` in the ledger until retried."""


class SendError(EngageError):
    """Sending one message failed; ``code`` and ``response`` hold the SMTP server's answer when there was one."""

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
