"""`engage preview`, `engage send-test` and `engage unsubscribe-server`: see an email before contacts do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from sqlmodel import col, select

from engage import plan_templates
from engage.cli._common import console, ledger
from engage.contacts.lookup import get_contact
from engage.errors import EngageError, NotFoundError
from engage.mail.message import OutgoingEmail, PreparedMessage, build_message, new_message_id
from engage.mail.smtp import SmtpSender
from engage.plan_templates.schema import PlanTemplateSpec, StepSpec
from engage.rendering.context import RenderedEmail, email_context
from engage.rendering.renderer import get_renderer
from engage.rendering.samples import sample_people, sample_unsubscribe_url
from engage.settings import Settings, get_settings
from engage.unsubscribe.tokens import unsubscribe_url
from models import Contact, Plan, Staff, Workshop

TemplateArgument = typer.Argument(..., help="The plan template's key, e.g. volunteer-followup.", show_default=False)
StepArgument = typer.Argument(..., help="The key of one of its email steps, e.g. survey.", show_default=False)
ContactOption = typer.Option(
    None,
    "--contact",
    metavar="EMAIL",
    help="Render it for this contact of the ledger, with their plan's workshop and staff (default: a sample contact).",
)
LanguageOption = typer.Option(
    None, "--lang", help="The language to render (default: the contact's, else the organisation's first)."
)


@dataclass(frozen=True)
class _Rendered:
    template: PlanTemplateSpec
    step: StepSpec
    contact: Contact
    staff: Staff | None
    email: RenderedEmail
    unsubscribe: str
    note: str | None


def _email_step(settings: Settings, template_key: str, step_key: str) -> tuple[PlanTemplateSpec, StepSpec]:
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


def _render(template_key: str, step_key: str, contact_email: str | None, language: str | None) -> _Rendered:
    settings = get_settings()
    spec, step = _email_step(settings, template_key, step_key)
    assert step.email_template is not None  # _email_step refuses steps without one
    renderer = get_renderer(settings.email_templates_dir, tuple(settings.language_list))
    if language is not None and language.lower() not in renderer.languages:
        written = ", ".join(renderer.languages)
        raise EngageError(f"--lang {language}: emails are written in {written} (ENGAGE_LANGUAGES)")
    note = None
    if contact_email is None:
        people = sample_people(language or renderer.languages[0])[0]
        contact, workshop, staff = people.contact, people.workshop, people.staff
        unsubscribe = sample_unsubscribe_url(settings)
        note = f"sample contact {contact.full_name}: pass --contact EMAIL to render for someone in the ledger"
    else:
        with ledger(readonly=True) as session:
            contact = get_contact(session=session, email=contact_email)
            plan = session.exec(
                select(Plan)
                .where(Plan.contact_id == contact.id, Plan.template_key == template_key)
                .order_by(col(Plan.id).desc())
            ).first()
            workshop = session.get(Workshop, plan.workshop_id) if plan and plan.workshop_id else None
            staff_id = plan.applied_by_id if plan else contact.owner_id
            staff = session.get(Staff, staff_id) if staff_id else None
        if plan is None:
            note = f"{contact_email} has no {template_key} plan: rendered without a workshop"
        unsubscribe = unsubscribe_url(contact.id or 0, settings)
    chosen = language.lower() if language else renderer.pick_language(contact.language)
    context = email_context(
        contact=contact,
        workshop=workshop,
        staff=staff,
        links=spec.links,
        settings=settings,
        unsubscribe_url=unsubscribe,
        language=chosen,
    )
    rendered = renderer.render(step.email_template, chosen, context)
    return _Rendered(spec, step, contact, staff, rendered, unsubscribe, note)


def _message(rendered: _Rendered, settings: Settings, *, to: str, to_name: str) -> PreparedMessage:
    email = rendered.email
    return build_message(
        OutgoingEmail(
            to=to,
            to_name=to_name,
            subject=email.subject,
            text=email.text,
            html=email.html,
            reply_to=rendered.staff.email if rendered.staff else None,
            reply_to_name=rendered.staff.name if rendered.staff else None,
            message_id=new_message_id(settings),
            unsubscribe_url=rendered.unsubscribe,
            language=email.language,
        ),
        settings,
    )


def preview(
    template: str = TemplateArgument,
    step: str = StepArgument,
    contact_email: str | None = ContactOption,
    language: str | None = LanguageOption,
    out: Path = typer.Option(Path("preview"), "--out", help="Folder to write the files to (created if needed)."),
) -> None:
    """Render one email step to files: subject, HTML, text, and the whole message as .eml for a mail client."""
    settings = get_settings()
    rendered = _render(template, step, contact_email, language)
    email = rendered.email
    message = _message(rendered, settings, to=rendered.contact.email, to_name=rendered.contact.full_name)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{template}.{step}.{email.language}"
    files = {
        out / f"{stem}.subject.txt": (email.subject + "\n").encode(),
        out / f"{stem}.txt": email.text.encode(),
        out / f"{stem}.eml": message.data,
    }
    if email.html is not None:
        files[out / f"{stem}.html"] = email.html.encode()
    for path, data in files.items():
        path.write_bytes(data)
    if rendered.note:
        console.print(rendered.note, markup=False, highlight=False, soft_wrap=True)
    console.print(f"subject: {email.subject}", markup=False, highlight=False, soft_wrap=True)
    for path in sorted(files, key=lambda p: p.name):
        console.print(plan_templates.display_path(path), markup=False, highlight=False, soft_wrap=True)


def send_test(
    template: str = TemplateArgument,
    step: str = StepArgument,
    to: str = typer.Option(
        ..., "--to", metavar="EMAIL", help="Where to send it, e.g. your own mailbox.", show_default=False
    ),
    contact_email: str | None = ContactOption,
    language: str | None = LanguageOption,
) -> None:
    """Send one email step to an address through the configured SMTP server, to see it in a real mailbox."""
    settings = get_settings()
    rendered = _render(template, step, contact_email, language)
    message = _message(rendered, settings, to=to, to_name="")
    with SmtpSender(settings) as sender:
        answer = sender.send(message)
    console.print(
        f"sent {template} / {step} ({rendered.email.language}) to {to} through {settings.smtp_host}:"
        f"{settings.smtp_port}: {answer}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"Message-ID: {message.message_id}", markup=False, highlight=False, soft_wrap=True)


def unsubscribe_server(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 for every interface."),
    port: int = typer.Option(8025, "--port", help="Port to listen on (ENGAGE_UNSUBSCRIBE_BASE_URL points here)."),
) -> None:
    """Serve the unsubscribe links of every email until Ctrl-C: GET confirms, POST and one-click unsubscribe."""
    from engage.unsubscribe.app import serve

    serve(get_settings(), host=host, port=port)
