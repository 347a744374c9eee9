"""Seeing a step's email before contacts do: a preview of it, and a test send to a mailbox, as production makes it.

The operations behind `engage preview` and `engage send-test` (and, later, the staff desk): the email is made by
the runner's own function (`engage.mail.compose.contact_email`), signed by the runner's rule, and a test send is
delivered through the outbox like any message (a delivery of kind `test`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, col, select

from engage import db, plan_templates
from engage.contacts.lookup import get_contact
from engage.errors import EngageError, NotFoundError, SendError
from engage.mail.compose import contact_email
from engage.mail.message import OutgoingEmail, PreparedMessage, build_message, new_message_id
from engage.mail.outbox import Consequences, Outbox, recover_deliveries
from engage.plan_templates.schema import PlanTemplateSpec, StepSpec
from engage.rendering.context import ContactFacts, StaffFacts, WorkshopFacts, signer
from engage.rendering.renderer import get_renderer
from engage.rendering.samples import sample_people, sample_unsubscribe_url
from engage.settings import Settings, get_settings
from engage.unsubscribe.tokens import unsubscribe_url
from models import DeliveryKind, DeliveryState, Plan, PlanStep, Staff, Workshop, utcnow


@dataclass(frozen=True)
class EmailPreview:
    """One step's email for one contact, as the runner would send it; ``note`` says what it was rendered for."""

    email: OutgoingEmail
    message: PreparedMessage
    note: str | None


@dataclass(frozen=True)
class TestSend:
    """A test send the SMTP server accepted: its answer and the message's Message-ID."""

    __test__ = False  # not a pytest test class

    preview: EmailPreview
    answer: str


def email_step(*, settings: Settings, template_key: str, step_key: str) -> tuple[PlanTemplateSpec, StepSpec]:
    """The plan template of ``template_key`` (its YAML file) and its email step ``step_key``; one clear error else."""
    path = settings.plan_templates_dir / f"{template_key}{plan_templates.TEMPLATE_SUFFIX}"
    if Path(template_key).name != template_key or not path.is_file():
        known = [p.stem for p in plan_templates.template_files(settings.plan_templates_dir)]
        raise NotFoundError(f'no plan template "{template_key}"; known: {", ".join(known) or "none"}')
    spec = plan_templates.load_template(path)
    email_steps = [step.key for step in spec.steps if step.kind == "email"]
    try:
        step = spec.step(step_key)
    except KeyError:
        raise NotFoundError(
            f'plan template "{template_key}" has no step "{step_key}"; its email steps: {", ".join(email_steps)}'
        ) from None
    if step.email_template is None:
        raise EngageError(
            f'step "{step_key}" of "{template_key}" is a {step.kind} step, not an email; '
            f"its email steps: {', '.join(email_steps)}"
        )
    return spec, step


@dataclass(frozen=True)
class _Recipient:
    """Who an email is rendered for, and with what: their plan's workshop, and who applied it and does the step."""

    contact: ContactFacts
    workshop: WorkshopFacts | None
    applied_by: StaffFacts | None
    assignee: StaffFacts | None
    unsubscribe_url: str
    note: str | None


def _ledger_recipient(
    session: Session, *, email: str, template_key: str, step_key: str, settings: Settings
) -> _Recipient:
    """A contact of the ledger, with their latest plan of this template (if any)."""
    contact = get_contact(session=session, email=email)
    plan = session.exec(
        select(Plan)
        .where(Plan.contact_id == contact.id, Plan.template_key == template_key)
        .order_by(col(Plan.id).desc())
    ).first()
    workshop = applied_by = assignee = None
    if plan is not None:
        workshop = session.get(Workshop, plan.workshop_id) if plan.workshop_id else None
        applied_by = session.get(Staff, plan.applied_by_id) if plan.applied_by_id else None
        step = session.exec(select(PlanStep).where(PlanStep.plan_id == plan.id, PlanStep.step_key == step_key)).first()
        assignee = session.get(Staff, step.assignee_id) if step is not None and step.assignee_id else None
    note = None if plan is not None else f"{email} has no {template_key} plan: rendered without a workshop"
    url = unsubscribe_url(contact.id or 0, settings)
    return _Recipient(contact, workshop, applied_by, assignee, url, note)


def _sample_recipient(language: str, settings: Settings) -> _Recipient:
    people = sample_people(language)[0]
    note = f"sample contact {people.contact.full_name}: pass --contact EMAIL to render for someone in the ledger"
    return _Recipient(people.contact, people.workshop, people.staff, None, sample_unsubscribe_url(settings), note)


def preview_email(
    *,
    template_key: str,
    step_key: str,
    contact_email_address: str | None = None,
    language: str | None = None,
    to: str | None = None,
    settings: Settings | None = None,
) -> EmailPreview:
    """Render a step's email as the runner would: for a contact of the ledger (their language, their plan's
    workshop and staff), or a sample contact; in ``language`` if given. Addressed to the contact, or ``to``."""
    settings = settings or get_settings()
    spec, step = email_step(settings=settings, template_key=template_key, step_key=step_key)
    assert step.email_template is not None  # email_step refuses steps without one
    renderer = get_renderer(settings.email_templates_dir, tuple(settings.language_list))
    if language is not None and language.lower() not in renderer.languages:
        written = ", ".join(renderer.languages)
        raise EngageError(f"--lang {language}: emails are written in {written} (ENGAGE_LANGUAGES)")
    if contact_email_address is None:
        recipient = _sample_recipient(language or renderer.languages[0], settings)
    else:
        with db.session_scope(settings.database_url, readonly=True) as session:
            recipient = _ledger_recipient(
                session, email=contact_email_address, template_key=template_key, step_key=step_key, settings=settings
            )
    email = contact_email(
        renderer=renderer,
        settings=settings,
        email_template=step.email_template,
        links=spec.links,
        contact=recipient.contact,
        workshop=recipient.workshop,
        signed_by=signer(applied_by=recipient.applied_by, assignee=recipient.assignee, settings=settings),
        language=language.lower() if language else renderer.pick_language(recipient.contact.language),
        unsubscribe_url=recipient.unsubscribe_url,
        message_id=new_message_id(settings),
        to=to,
    )
    return EmailPreview(email=email, message=build_message(email, settings), note=recipient.note)


class _Outcome(Consequences):
    """What the server said of a test send, for the one who asked."""

    def __init__(self) -> None:
        self.answer = ""
        self.error: SendError | None = None

    def sent(self, answer: str) -> None:
        self.answer = answer

    def refused(self, error: SendError) -> None:
        self.error = error

    def unknown(self, error: SendError) -> None:
        self.error = error


def send_test_email(
    *,
    template_key: str,
    step_key: str,
    to: str,
    contact_email_address: str | None = None,
    language: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> TestSend:
    """Send a step's email, as `preview_email` makes it, to ``to`` through the configured SMTP server.

    Delivered through the outbox like any message, a delivery of kind `test` (of no step). Raises the SendError of
    a send that did not go out (deferred, refused) or may have (unknown).
    """
    settings = settings or get_settings()
    preview = preview_email(
        template_key=template_key,
        step_key=step_key,
        contact_email_address=contact_email_address,
        language=language,
        to=to,
        settings=settings,
    )
    moment = now or utcnow()
    recover_deliveries(settings, now=moment)
    outcome = _Outcome()
    with Outbox.open(settings, clock=lambda: now or utcnow()) as outbox:
        state = outbox.deliver(preview.email, kind=DeliveryKind.TEST, consequences=outcome)
    if state != DeliveryState.SENT:
        assert outcome.error is not None
        raise outcome.error
    return TestSend(preview=preview, answer=outcome.answer)
