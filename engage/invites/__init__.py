"""Calendar invites for calls: what each calendar still needs to hear, what the invite says, and sending it."""

from engage.invites.brief import CallBrief, Note, Person, StepLine, describe_call, invite_subject
from engage.invites.calendar import PRODID, compose_invite, invite_calendar_bytes
from engage.invites.due import INVITE_KINDS, InviteMessage, SentInvite, messages_due
from engage.invites.ledger import load_briefs
from engage.invites.send import InviteOutcome, send_pending_invites

__all__ = [
    "CallBrief",
    "INVITE_KINDS",
    "InviteMessage",
    "InviteOutcome",
    "Note",
    "PRODID",
    "Person",
    "SentInvite",
    "StepLine",
    "compose_invite",
    "describe_call",
    "invite_calendar_bytes",
    "invite_subject",
    "load_briefs",
    "messages_due",
    "send_pending_invites",
]
