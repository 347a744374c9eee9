"""What an email template sees (the variables, checked strictly) and what rendering it gives."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from jinja2 import (
    StrictUndefined,
    pass_context,
)
from jinja2.runtime import Context
from jinja2.utils import missing

from engage.rules.words import long_date

if TYPE_CHECKING:
    from engage.settings import Settings


class ContactFacts(Protocol):
    """What an email knows of its contact (a ledger row, or a sample person)."""

    @property
    def email(self) -> str: ...
    @property
    def first_name(self) -> str | None: ...
    @property
    def last_name(self) -> str | None: ...
    @property
    def language(self) -> str | None: ...
    @property
    def full_name(self) -> str: ...


class WorkshopFacts(Protocol):
    """What an email knows of the workshop its plan follows up."""

    @property
    def name(self) -> str: ...
    @property
    def date(self) -> date: ...
    @property
    def place(self) -> str | None: ...


class StaffFacts(Protocol):
    """What an email knows of a staff member who may sign it."""

    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str: ...


#: The files of one email in one language: (file name, what admins call it, required).
EMAIL_PARTS = (
    ("subject.txt", "the subject", True),
    ("body.txt", "the text part", True),
    ("body.html", "the HTML part", False),
)


class Variables:
    """A read-only group of variables such as ``contact``: ``contact.first_name`` reads ``first_name``.

    Not a dict on purpose: a link or field named ``items`` or ``keys`` must read the value, not a dict method.
    It knows its own name, so a misspelt variable is reported as ``contact.first_nam``.
    """

    __slots__ = ("_path", "_values")

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        self._path = path
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Variables({self._path!r}, {sorted(self._values)})"

    @property
    def variable_path(self) -> str:
        return self._path

    def names(self) -> list[str]:
        """Return the names this group holds, sorted."""
        return sorted(self._values)


class _Undefined(StrictUndefined):
    """StrictUndefined whose message names the variable as a template writes it, with a suggestion."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        name, parent = self._undefined_name, self._undefined_obj
        if self._undefined_hint or not isinstance(name, str):
            return super()._undefined_message
        if parent is missing:
            return f"uses {name}, which is not a variable emails may use{_suggest(name, sorted(TOP_LEVEL_NAMES))}"
        if isinstance(parent, Variables):
            path = parent.variable_path
            if path == "links":
                return (
                    f"uses links.{name}, which the template does not define under links{_suggest(name, parent.names())}"
                )
            return f"uses {path}.{name}, which is not a variable emails may use{_suggest(name, parent.names(), path)}"
        return super()._undefined_message


def _suggest(word: str, choices: Sequence[str], prefix: str | None = None) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    if not close:
        return ""
    return f' (did you mean "{prefix + "." if prefix else ""}{close[0]}"?)'


@pass_context
def _long_date_filter(context: Context, day: date | None) -> str:
    return "" if day is None else long_date(day, str(context.get("language", "en")))


#: Every top-level name an email template may use; the README of email_templates/ documents them.
TOP_LEVEL_NAMES = frozenset(
    {"contact", "workshop", "organisation", "staff", "links", "unsubscribe_url", "language", "subject"}
)


@dataclass(frozen=True)
class Signer:
    """Who signs a contact's email (the `staff` variables of its templates) and answers its replies (Reply-To)."""

    name: str
    email: str
    reply_to: str | None
    reply_to_name: str | None


def signer(*, applied_by: StaffFacts | None, assignee: StaffFacts | None, settings: Settings) -> Signer:
    """Who signs a contact's email: the staff member who applied the plan, else the step's assignee, else the
    organisation (answers then go to ENGAGE_ORGANISATION_REPLY_TO; without it the email has no Reply-To)."""
    staff = applied_by or assignee
    if staff is not None:
        return Signer(name=staff.name, email=staff.email, reply_to=staff.email, reply_to_name=staff.name)
    reply_to = settings.organisation_reply_to
    return Signer(
        name=settings.organisation_name,
        email=reply_to or settings.organisation_email,
        reply_to=reply_to,
        reply_to_name=settings.organisation_name if reply_to else None,
    )


def email_context(
    *,
    contact: ContactFacts,
    workshop: WorkshopFacts | None,
    signed_by: Signer,
    links: Mapping[str, str],
    settings: Settings,
    unsubscribe_url: str,
    language: str,
) -> dict[str, Any]:
    """Build what an email template may use for one contact in one language; see `email_templates/README.md`."""
    reply_to = settings.organisation_reply_to or settings.organisation_email
    return {
        "contact": Variables(
            "contact",
            {
                "first_name": contact.first_name or "",
                "last_name": contact.last_name or "",
                "full_name": contact.full_name,
                "email": contact.email,
            },
        ),
        "workshop": Variables(
            "workshop",
            {
                "name": workshop.name if workshop else "",
                "date": workshop.date if workshop else None,
                "date_text": long_date(workshop.date, language) if workshop else "",
                "place": (workshop.place or "") if workshop else "",
            },
        ),
        "organisation": Variables(
            "organisation",
            {
                "name": settings.organisation_name,
                "address": settings.organisation_address,
                "email": settings.organisation_email,
                "reply_to": reply_to,
            },
        ),
        "staff": Variables("staff", {"name": signed_by.name, "email": signed_by.email}),
        "links": Variables("links", links),
        "unsubscribe_url": unsubscribe_url,
        "language": language,
    }


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None
    language: str
