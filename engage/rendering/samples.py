"""The sample people every email is rendered for before any contact gets it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engage.settings import Settings
    from models import Contact, Staff, Workshop
from engage.rendering.context import email_context, signer


@dataclass(frozen=True)
class SamplePeople:
    """Who a sample email is for and about, when no real contact is given."""

    contact: Contact
    workshop: Workshop | None
    staff: Staff | None


def sample_people(language: str) -> list[SamplePeople]:
    """Return the people validation and previews render emails for: a complete contact, and one with little known.

    The second has no name, no workshop and no staff member (a plan applied from a segment), so both sides of
    each `{% if %}` are rendered before any contact gets the email. Nothing here is stored.
    """
    from models import Contact, Staff, Workshop

    return [
        SamplePeople(
            contact=Contact(
                email="helene.lefevre@example.org",
                email_key="helene.lefevre@example.org",
                first_name="Hélène",
                last_name="Lefèvre",
                language=language,
            ),
            workshop=Workshop(name="Regards sur la rue", date=date(2026, 11, 20), place="Lyon"),
            staff=Staff(email="camille.martin@example.org", name="Camille Martin"),
        ),
        SamplePeople(
            contact=Contact(email="someone@example.org", email_key="someone@example.org", language=language),
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
