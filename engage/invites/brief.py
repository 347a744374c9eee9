"""What an invite tells the caller: the call, the contact, the plan so far, in the recipient's language. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from engage.invites.due import InviteMessage
from engage.rules.words import _language_name, long_date
from engage.vocabulary import (
    DeliveryKind,
    StepKind,
    StepStatus,
)


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    language: str
    timezone: str


@dataclass(frozen=True)
class StepLine:
    """A step of the plan as the caller reads it before calling: name, status, when, and what came of it."""

    name: str
    kind: str
    status: str
    when: datetime | None
    detail: str | None


@dataclass(frozen=True)
class Note:
    when: datetime
    author: str | None
    step_name: str
    text: str


@dataclass(frozen=True)
class CallBrief:
    """Everything an invite tells the caller about one call."""

    call_id: int
    step_id: int
    uid: str
    slot_start: datetime
    slot_end: datetime
    sequence: int
    cancelled: bool
    assignee: Person
    fallback: bool
    contact_name: str
    contact_email: str
    contact_phone: str | None
    contact_language: str | None
    plan_id: int
    template_name: str
    step_name: str
    step_description: str | None
    priority: str
    workshop_name: str | None = None
    workshop_date: date | None = None
    workshop_place: str | None = None
    history: tuple[StepLine, ...] = ()
    notes: tuple[Note, ...] = ()


_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "sep": ": ",
        "high": "high",
        "low": "low",
        "call": "Call",
        "moved": "Moved: ",
        "cancelled": "Cancelled: ",
        "at": "at",
        "intro": 'Call {name} about "{step}" ({template}, plan {plan}).',
        "intro_cancelled": 'This call is cancelled: {name}, "{step}" ({template}, plan {plan}).',
        "intro_reassigned": 'This call now belongs to {assignee}: {name}, "{step}" ({template}, plan {plan}).',
        "reassigned": "Reassigned to {assignee}: ",
        "phone": "Phone",
        "email": "Email",
        "language": "Language",
        "workshop": "Workshop",
        "todo": "What to do",
        "priority": "Priority",
        "fallback": (
            "Assigned to you as a fallback: the rule names the contact's owner, and this contact has none, "
            "so the call goes to the person who applied the plan."
        ),
        "before": "Before this call",
        "notes": "Notes",
        "none": "nothing yet",
        "done_hint": 'When it is done: engage tasks complete {task} --outcome "..."',
        "reminder": "Call {name} in {minutes} minutes",
        "unknown": "unknown",
    },
    "fr": {
        "sep": "\u00a0: ",
        "high": "haute",
        "low": "basse",
        "call": "Appeler",
        "moved": "Déplacé\u00a0: ",
        "cancelled": "Annulé\u00a0: ",
        "at": "à",
        "intro": "Appeler {name} pour «\u00a0{step}\u00a0» ({template}, plan {plan}).",
        "intro_cancelled": "Cet appel est annulé\u00a0: {name}, «\u00a0{step}\u00a0» ({template}, plan {plan}).",
        "intro_reassigned": (
            "Cet appel revient désormais à {assignee}\u00a0: {name}, «\u00a0{step}\u00a0» ({template}, plan {plan})."
        ),
        "reassigned": "Réattribué à {assignee}\u00a0: ",
        "phone": "Téléphone",
        "email": "Courriel",
        "language": "Langue",
        "workshop": "Atelier",
        "todo": "À faire",
        "priority": "Priorité",
        "fallback": (
            "Attribué à vous par défaut\u00a0: la règle désigne le responsable du contact, qui n'en a pas\u00a0; "
            "l'appel revient donc à la personne qui a appliqué le plan."
        ),
        "before": "Avant cet appel",
        "notes": "Notes",
        "none": "rien pour l'instant",
        "done_hint": 'Une fois fait\u00a0: engage tasks complete {task} --outcome "..."',
        "reminder": "Appeler {name} dans {minutes} minutes",
        "unknown": "inconnu",
    },
}


_STATUS_WORDS = {
    "en": {
        StepStatus.DONE: "done",
        StepStatus.SKIPPED: "skipped",
        StepStatus.FAILED: "failed",
        StepStatus.UNKNOWN: "sent? unknown",
        StepStatus.CANCELLED: "cancelled",
        StepStatus.SCHEDULED: "due",
        StepStatus.RUNNING: "in progress",
        StepStatus.OPEN: "open",
        StepStatus.WAITING: "waiting",
        "sent": "sent",
    },
    "fr": {
        StepStatus.DONE: "fait",
        StepStatus.SKIPPED: "sauté",
        StepStatus.FAILED: "échec",
        StepStatus.UNKNOWN: "envoi incertain",
        StepStatus.CANCELLED: "annulé",
        StepStatus.SCHEDULED: "prévu",
        StepStatus.RUNNING: "en cours",
        StepStatus.OPEN: "ouvert",
        StepStatus.WAITING: "en attente",
        "sent": "envoyé",
    },
}


def _language(person: Person) -> str:
    return person.language if person.language in _WORDS else "en"


def _moment(moment: datetime, person: Person, language: str) -> str:
    local = moment.astimezone(ZoneInfo(person.timezone))
    return f"{long_date(local.date(), language)} {_WORDS[language]['at']} {local:%H:%M}"


def _reassigned_away(brief: CallBrief, recipient: Person, cancelled: bool) -> bool:
    """A cancel to someone who is no longer the assignee, for a call that goes on with someone else."""
    return cancelled and not brief.cancelled and recipient.email.lower() != brief.assignee.email.lower()


def describe_call(brief: CallBrief, recipient: Person, *, cancelled: bool = False) -> str:
    """The invite's description, in the recipient's language: who to call, about what, and what came before."""
    language = _language(recipient)
    words, statuses = _WORDS[language], _STATUS_WORDS[language]
    facts = {"name": brief.contact_name, "step": brief.step_name, "template": brief.template_name}
    intro = "intro_reassigned" if _reassigned_away(brief, recipient, cancelled) else "intro"
    intro = "intro_cancelled" if intro == "intro" and cancelled else intro
    lines = [words[intro].format(**facts, plan=brief.plan_id, assignee=brief.assignee.name), ""]
    sep = words["sep"]
    lines.append(f"{words['phone']}{sep}{brief.contact_phone or '-'}")
    lines.append(f"{words['email']}{sep}{brief.contact_email}")
    lines.append(f"{words['language']}{sep}{_language_name(brief.contact_language, language)}")
    if brief.workshop_name:
        workshop = [brief.workshop_name]
        if brief.workshop_date:
            workshop.append(long_date(brief.workshop_date, language))
        if brief.workshop_place:
            workshop.append(brief.workshop_place)
        lines.append(f"{words['workshop']}{sep}{', '.join(workshop)}")
    if brief.priority != "normal":
        lines.append(f"{words['priority']}{sep}{words.get(brief.priority, brief.priority)}")
    if brief.step_description:
        lines.append(f"{words['todo']}{sep}{' '.join(brief.step_description.split())}")
    if brief.fallback:
        lines += ["", words["fallback"]]
    lines += ["", f"{words['before']}{sep.rstrip()}"]
    if not brief.history:
        lines.append(f"- {words['none']}")
    for step in brief.history:
        status = statuses["sent"] if step.kind == StepKind.EMAIL and step.status == StepStatus.DONE else None
        status = status or statuses.get(step.status, step.status)
        when = f" {long_date(step.when.astimezone(ZoneInfo(recipient.timezone)).date(), language)}" if step.when else ""
        detail = f"{sep}{' '.join(step.detail.split())}" if step.detail else ""
        lines.append(f"- {step.name}{sep}{status}{when}{detail}")
    if brief.notes:
        lines += ["", f"{words['notes']}{sep.rstrip()}"]
        for note in brief.notes:
            day = long_date(note.when.astimezone(ZoneInfo(recipient.timezone)).date(), language)
            author = f", {note.author}" if note.author else ""
            lines.append(f"- {day}{author} ({note.step_name}){sep}{' '.join(note.text.split())}")
    if not cancelled:
        lines += ["", words["done_hint"].format(task=brief.step_id)]
    return "\n".join(lines) + "\n"


def invite_subject(brief: CallBrief, message: InviteMessage, recipient: Person) -> str:
    """e.g. `Call Jeanne Dupont · Follow-up call · Wednesday 23 December 2026 at 09:00`."""
    language = _language(recipient)
    words = _WORDS[language]
    prefixes: dict[str, str] = {DeliveryKind.UPDATE: words["moved"], DeliveryKind.CANCEL: words["cancelled"]}
    prefix = prefixes.get(message.kind, "")
    call = words["call"] if not prefix else words["call"].lower()
    if _reassigned_away(brief, recipient, message.method == "CANCEL"):
        # The slot is now the new assignee's: this calendar only needs to know the call left it, and for whom.
        return (
            f"{words['reassigned'].format(assignee=brief.assignee.name)}{call} {brief.contact_name} · {brief.step_name}"
        )
    when = _moment(brief.slot_start, recipient, language)
    return f"{prefix}{call} {brief.contact_name} · {brief.step_name} · {when}"


def _invite_text(brief: CallBrief, message: InviteMessage, recipient: Person) -> str:
    """The readable part of an invite: when (unless the call left this calendar for someone else's), then the brief."""
    cancel = message.method == "CANCEL"
    description = describe_call(brief, recipient, cancelled=cancel)
    if not _reassigned_away(brief, recipient, cancel):
        description = f"{_moment(brief.slot_start, recipient, _language(recipient))}\n\n{description}"
    return description
