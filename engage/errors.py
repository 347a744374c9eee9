"""The exceptions Engage raises on purpose. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class EngageError(Exception):
    """Base of every error that is the user's to fix, not a bug."""


class ConfigurationError(EngageError):
    """A setting is missing or wrong."""


class TemplateError(EngageError):
    """A plan template does not validate; the message names the file, the step and the field."""


class ImportFileError(EngageError):
    """An attendee file cannot be read at all (encoding, no email column); nothing was written."""


class NotFoundError(EngageError):
    """A contact, staff member, plan or task named on the command line does not exist."""


class InvalidStateError(EngageError):
    """The operation does not apply to the record in its current state (e.g. completing a cancelled step)."""
