"""Render a step's email from its Jinja2 templates: pure, no sending, no database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

from engage.errors import EngageError


class RenderError(EngageError):
    """An email template is missing or uses something the context does not have."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None
    language: str


class EmailRenderer:
    """Loads `email_templates/<name>/<language>/{subject.txt,body.txt,body.html}` with autoescaped HTML."""

    def __init__(self, directory: Path, languages: Sequence[str]) -> None:
        if not languages:
            raise RenderError("no email languages configured")
        self.directory = directory
        self.languages = list(languages)
        self.environment = Environment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def pick_language(self, wanted: str | None) -> str:
        """The contact's language when the organisation writes in it, else the default (first) language."""
        if wanted and wanted.lower() in self.languages:
            return wanted.lower()
        return self.languages[0]

    def has_html(self, name: str, language: str) -> bool:
        return (self.directory / name / language / "body.html").is_file()

    def render(self, name: str, language: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Render subject, text and (when present) HTML of one email in one language."""
        try:
            subject = self.environment.get_template(f"{name}/{language}/subject.txt").render(context)
            text = self.environment.get_template(f"{name}/{language}/body.txt").render(context)
            html = (
                self.environment.get_template(f"{name}/{language}/body.html").render(context)
                if self.has_html(name, language)
                else None
            )
        except TemplateNotFound as missing:
            raise RenderError(f"email template {missing.name} is missing") from None
        subject = " ".join(subject.split())
        if not subject:
            raise RenderError(f"email template {name}/{language}: the subject is empty")
        return RenderedEmail(subject=subject, text=text.strip() + "\n", html=html, language=language)


@lru_cache(maxsize=4)
def get_renderer(directory: Path, languages: tuple[str, ...]) -> EmailRenderer:
    return EmailRenderer(directory, languages)
