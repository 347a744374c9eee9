"""A contact's email, ready for the outbox: rendered the one way, signed the one way, addressed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from engage.mail.message import OutgoingEmail
from engage.rendering.context import Signer, email_context
from engage.rendering.renderer import EmailRenderer
from engage.settings import Settings

if TYPE_CHECKING:
    from engage.rendering.context import ContactFacts, WorkshopFacts


def contact_email(
    *,
    renderer: EmailRenderer,
    settings: Settings,
    email_template: str,
    links: Mapping[str, str],
    contact: ContactFacts,
    workshop: WorkshopFacts | None,
    signed_by: Signer,
    language: str,
    unsubscribe_url: str,
    message_id: str,
    to: str | None = None,
) -> OutgoingEmail:
    """Render ``email_template`` for ``contact`` in ``language`` and address it: to the contact (or ``to``, a test
    send's mailbox), answered by its signer, with its unsubscribe link in the List-Unsubscribe headers.

    The runner, `engage preview` and `engage send-test` all make a contact's email here.
    """
    context = email_context(
        contact=contact,
        workshop=workshop,
        signed_by=signed_by,
        links=links,
        settings=settings,
        unsubscribe_url=unsubscribe_url,
        language=language,
    )
    rendered = renderer.render(email_template, language, context)
    return OutgoingEmail(
        to=to or contact.email,
        to_name="" if to else contact.full_name,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        reply_to=signed_by.reply_to,
        reply_to_name=signed_by.reply_to_name,
        message_id=message_id,
        unsubscribe_url=unsubscribe_url,
        language=language,
    )
