"""Outgoing mail: messages built as bytes, the SMTP connection, and the outbox that records every delivery."""

from engage.mail.capture import CapturedMessage, SmtpCapture
from engage.mail.message import CalendarPart, OutgoingEmail, PreparedMessage, build_message, new_message_id
from engage.mail.outbox import BUSY, Consequences, Outbox, recover_deliveries, recover_stale_deliveries
from engage.mail.smtp import SmtpSender

__all__ = [
    "BUSY",
    "CalendarPart",
    "CapturedMessage",
    "Consequences",
    "OutgoingEmail",
    "Outbox",
    "PreparedMessage",
    "SmtpCapture",
    "SmtpSender",
    "build_message",
    "new_message_id",
    "recover_deliveries",
    "recover_stale_deliveries",
]
