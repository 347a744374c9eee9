"""Calendar invites for calls: what each calendar still needs to hear, what the invite says, and sending it."""

from engage.invites.brief import CallBrief, Note, Person, StepLine, describe_call, invite_subject
from engage.invites.calendar import PRODID, build_invite, invite_calendar_bytes
from engage.invites.due import INVITE_KINDS, InviteMessage, SentInvite, messages_due
from engage.invites.ledger import load_briefs
from engage.invites.send import InviteOutcome, recover_stale_invites, send_pending_invites

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
    "build_invite",
    "describe_call",
    "invite_calendar_bytes",
    "invite_subject",
    "load_briefs",
    "messages_due",
    "recover_stale_invites",
    "send_pending_invites",
]
