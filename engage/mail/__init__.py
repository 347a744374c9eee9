"""Outgoing mail: messages built as bytes, the SMTP connection, and the outbox that records every delivery."""

from engage.mail.capture import CapturedMessage, SmtpCapture
from engage.mail.message import OutgoingEmail, PreparedMessage, build_calendar_message, build_message, new_message_id
from engage.mail.smtp import SmtpSender

__all__ = [
    "CapturedMessage",
    "OutgoingEmail",
    "PreparedMessage",
    "SmtpCapture",
    "SmtpSender",
    "build_calendar_message",
    "build_message",
    "new_message_id",
]
