"""The sample people every email is rendered for before any contact gets it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from engage.rendering.context import email_context, signer

if TYPE_CHECKING:
    from engage.settings import Settings


@dataclass
class SampleContact:
    """A contact who exists only to render an email; nothing is stored."""

    email: str
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = None

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


@dataclass(frozen=True)
class SampleWorkshop:
    name: str
    date: date
    place: str | None = None


@dataclass(frozen=True)
class SampleStaff:
    name: str
    email: str


@dataclass(frozen=True)
class SamplePeople:
    """Who a sample email is for and about, when no real contact is given."""

    contact: SampleContact
    workshop: SampleWorkshop | None
    staff: SampleStaff | None


def sample_people(language: str) -> list[SamplePeople]:
    """Return the people validation and previews render emails for: a complete contact, and one with little known.

    The second has no name, no workshop and no staff member (a plan applied from a segment), so both sides of
    each `{% if %}` are rendered before any contact gets the email. Nothing here is stored.
    """
    return [
        SamplePeople(
            contact=SampleContact(
                email="helene.lefevre@example.org", first_name="Hélène", last_name="Lefèvre", language=language
            ),
            workshop=SampleWorkshop(name="Regards sur la rue", date=date(2026, 11, 20), place="Lyon"),
            staff=SampleStaff(email="camille.martin@example.org", name="Camille Martin"),
        ),
        SamplePeople(
            contact=SampleContact(email="someone@example.org", language=language),
            workshop=None,
            staff=None,
        ),
    ]


def sample_unsubscribe_url(settings: Settings) -> str:
    """Return an unsubscribe link of the right shape that unsubscribes nobody."""
    return f"{settings.unsubscribe_base_url.rstrip('/')}/u/0.sample"


def sample_contexts(*, settings: Settings, links: Mapping[str, str], language: str) -> list[dict[str, Any]]:
    """Return the contexts validation renders every email with, one per sample person (see `sample_people`)."""
    return [
        email_context(
            contact=people.contact,
            workshop=people.workshop,
            signed_by=signer(applied_by=people.staff, assignee=None, settings=settings),
            links=links,
            settings=settings,
            unsubscribe_url=sample_unsubscribe_url(settings),
            language=language,
        )
        for people in sample_people(language)
    ]
