"""The digest's subject, text and HTML, in the staff member's language."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment

from engage.digest.collect import Digest, DigestLine
from engage.mail.message import OutgoingEmail
from engage.rendering.environment import template_environment
from engage.rules.words import long_date
from engage.settings import Settings, get_settings
from models import (
    Staff,
)


@dataclass(frozen=True)
class RenderedDigest:
    language: str
    subject: str
    text: str
    html: str


@lru_cache(maxsize=8)
def _environment(directory: Path) -> Environment:
    return template_environment(directory, keep_trailing_newline=True, long_date=True)


def _language(staff: Staff, directory: Path, settings: Settings) -> str:
    for candidate in (staff.language, settings.default_language, "en"):
        if candidate and (directory / candidate.split("-")[0].lower() / "subject.txt").is_file():
            return candidate.split("-")[0].lower()
    return "en"


def _line_context(line: DigestLine, zone: ZoneInfo, language: str) -> dict[str, Any]:
    local = line.when.astimezone(zone) if line.when else None
    return {
        "task": line.step_id,
        "kind": line.kind,
        "status": line.status,
        "step": line.step_name,
        "contact": line.contact_name,
        "phone": line.contact_phone or "",
        "template": line.template_key,
        "time": f"{local:%H:%M}" if local else "",
        "date": long_date(local.date(), language) if local else "",
        "fallback": line.fallback,
        "detail": line.detail or "",
    }


def render_digest(digest: Digest, settings: Settings | None = None) -> RenderedDigest:
    """The digest's subject, text and HTML, in the staff member's language (else the organisation's default)."""
    settings = settings or get_settings()
    directory = settings.email_templates_dir / "digest"
    language = _language(digest.staff, directory, settings)
    zone = ZoneInfo(digest.staff.timezone)
    context = {
        "language": language,
        "staff": {"name": digest.staff.name, "email": digest.staff.email},
        "organisation": {"name": settings.organisation_name},
        "day": long_date(digest.day, language),
        "calls": [_line_context(line, zone, language) for line in digest.calls_today],
        "tasks": [_line_context(line, zone, language) for line in digest.tasks_today],
        "overdue": [_line_context(line, zone, language) for line in digest.overdue],
        "news": [_line_context(line, zone, language) for line in digest.news],
    }
    environment = _environment(directory)
    subject = environment.get_template(f"{language}/subject.txt").render(context)
    return RenderedDigest(
        language=language,
        # One line; split on line ends only, so the non-breaking spaces of French typography stay.
        subject=" ".join(part.strip() for part in subject.splitlines() if part.strip()),
        text=environment.get_template(f"{language}/body.txt").render(context),
        html=environment.get_template(f"{language}/body.html").render(context),
    )


def compose_digest(digest: Digest, *, now: datetime, settings: Settings, message_id: str) -> OutgoingEmail:
    """The digest as an email to its staff member: a text part and an HTML part, marked automatic."""
    rendered = render_digest(digest, settings)
    return OutgoingEmail(
        to=digest.staff.email,
        to_name=digest.staff.name,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        reply_to=None,
        reply_to_name=None,
        message_id=message_id,
        unsubscribe_url=None,
        language=rendered.language,
        auto_submitted=True,
        date=now,
    )
