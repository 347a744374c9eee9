"""`engage preview`, `engage send-test` and `engage unsubscribe-server`: see an email before contacts do."""

from __future__ import annotations

from pathlib import Path

import typer

from engage import db, plan_templates
from engage.cli._common import console
from engage.previews import preview_email, send_test_email
from engage.settings import get_settings

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


def preview(
    template: str = TemplateArgument,
    step: str = StepArgument,
    contact_email: str | None = ContactOption,
    language: str | None = LanguageOption,
    out: Path = typer.Option(Path("preview"), "--out", help="Folder to write the files to (created if needed)."),
) -> None:
    """Render one email step to files: subject, HTML, text, and the whole message as .eml for a mail client."""
    if contact_email is not None:
        db.ensure_schema()
    shown = preview_email(template_key=template, step_key=step, contact_email_address=contact_email, language=language)
    email, message = shown.email, shown.message
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
    if shown.note:
        console.print(shown.note, markup=False, highlight=False, soft_wrap=True)
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
    db.ensure_schema()
    sent = send_test_email(
        template_key=template, step_key=step, to=to, contact_email_address=contact_email, language=language
    )
    console.print(
        f"sent {template} / {step} ({sent.preview.email.language}) to {to} through {settings.smtp_host}:"
        f"{settings.smtp_port}: {sent.answer}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"Message-ID: {sent.preview.email.message_id}", markup=False, highlight=False, soft_wrap=True)


def unsubscribe_server(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 for every interface."),
    port: int = typer.Option(8025, "--port", help="Port to listen on (ENGAGE_UNSUBSCRIBE_BASE_URL points here)."),
) -> None:
    """Serve the unsubscribe links of every email until Ctrl-C: GET confirms, POST and one-click unsubscribe."""
    from engage.unsubscribe.app import serve

    serve(get_settings(), host=host, port=port)
