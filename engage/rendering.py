"""Render a step's email from its Jinja2 templates: pure, no sending, no database.

An email is a folder under ``email_templates/`` with one sub-folder per language holding ``subject.txt``,
``body.txt`` (the plain-text part) and ``body.html`` (the HTML part, which extends a layout of
``email_templates/_layout/``). The HTML is autoescaped and its CSS inlined into each element, so Gmail and
Outlook keep it. Every template sees the same variables, built by :func:`email_context`: the runner calls it
for each contact, and validation calls it with sample contacts, so what validates is what gets sent.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import css_inline
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from jinja2.utils import missing

from engage.errors import EngageError

if TYPE_CHECKING:
    from engage.settings import Settings
    from models import Contact, Staff, Workshop

__all__ = [
    "EMAIL_PARTS",
    "EmailProblem",
    "EmailRenderer",
    "RenderError",
    "RenderedEmail",
    "Variables",
    "email_context",
    "get_renderer",
    "long_date",
    "sample_contexts",
    "sample_people",
]

#: The files of one email in one language: (file name, what admins call it, required).
EMAIL_PARTS = (
    ("subject.txt", "the subject", True),
    ("body.txt", "the text part", True),
    ("body.html", "the HTML part", False),
)


class RenderError(EngageError):
    """An email template is missing or uses something the context does not have."""


# --- Variables ------------------------------------------------------------------------------------------------


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


# --- Dates in words, without the machine's locale ---------------------------------------------------------------

_DATE_WORDS: dict[str, tuple[list[str], list[str]]] = {
    "fr": (
        "lundi mardi mercredi jeudi vendredi samedi dimanche".split(),
        "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(),
    ),
    "en": (
        "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
        "January February March April May June July August September October November December".split(),
    ),
    "de": (
        "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag".split(),
        "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split(),
    ),
    "es": (
        "lunes martes miércoles jueves viernes sábado domingo".split(),
        "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(),
    ),
    "it": (
        "lunedì martedì mercoledì giovedì venerdì sabato domenica".split(),
        "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre".split(),
    ),
}


def long_date(day: date, language: str) -> str:
    """Write a date in words, e.g. "vendredi 20 novembre 2026" or "Friday 20 November 2026"; ISO otherwise."""
    words = _DATE_WORDS.get(language.split("-")[0].lower())
    if words is None:
        return day.isoformat()
    weekday, month = words[0][day.weekday()], words[1][day.month - 1]
    match language[:2].lower():
        case "fr":
            return f"{weekday} {'1er' if day.day == 1 else day.day} {month} {day.year}"
        case "de":
            return f"{weekday}, {day.day}. {month} {day.year}"
        case "es":
            return f"{weekday}, {day.day} de {month} de {day.year}"
        case _:
            return f"{weekday} {day.day} {month} {day.year}"


@pass_context
def _long_date_filter(context: Context, day: date | None) -> str:
    return "" if day is None else long_date(day, str(context.get("language", "en")))


# --- The variables of an email --------------------------------------------------------------------------------

#: Every top-level name an email template may use; the README of email_templates/ documents them.
TOP_LEVEL_NAMES = frozenset(
    {"contact", "workshop", "organisation", "staff", "links", "unsubscribe_url", "language", "subject"}
)


def email_context(
    *,
    contact: Contact,
    workshop: Workshop | None,
    staff: Staff | None,
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
        "staff": Variables(
            "staff",
            {
                "name": staff.name if staff else settings.organisation_name,
                "email": staff.email if staff else reply_to,
            },
        ),
        "links": Variables("links", links),
        "unsubscribe_url": unsubscribe_url,
        "language": language,
    }


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
            staff=people.staff,
            links=links,
            settings=settings,
            unsubscribe_url=sample_unsubscribe_url(settings),
            language=language,
        )
        for people in sample_people(language)
    ]


# --- Rendering ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None
    language: str


@dataclass(frozen=True)
class EmailProblem:
    """One thing wrong with one email in one language, found by rendering it."""

    language: str
    file: Path | None
    message: str
    line: int | None = None
    #: where the error surfaced when that is another template than the one at fault (a macro given a bad value)
    via: tuple[Path, int] | None = None

    def describe(self, show: Callable[[Path], str] = str) -> str:
        """Return one line: `missing FILE (the subject)` or `FILE uses contact.nme, ... (line 3)`."""
        where = f" (line {self.line})" if self.line else ""
        if self.via is not None:
            where = f" (line {self.line}, via {show(self.via[0])} line {self.via[1]})"
        if self.file is None:
            return f"{self.message}{where}"
        if self.message.startswith("missing"):
            return f"missing {show(self.file)}{self.message.removeprefix('missing')}"
        separator = " " if self.message.startswith("uses ") else ": "
        return f"{show(self.file)}{separator}{self.message}{where}"


class EmailRenderer:
    """Loads `email_templates/<name>/<language>/{subject.txt,body.txt,body.html}` with autoescaped HTML."""

    def __init__(self, directory: Path, languages: Sequence[str]) -> None:
        if not languages:
            raise RenderError("no email languages configured")
        self.directory = directory
        self.languages = [language.lower() for language in languages]
        self.environment = Environment(
            loader=FileSystemLoader(str(directory)),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=_Undefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.environment.filters["long_date"] = _long_date_filter
        # Remote stylesheets are never fetched: an email's look must not depend on the network at send time.
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)

    def pick_language(self, wanted: str | None) -> str:
        """Return the contact's language when the organisation writes in it (`fr-CA` is `fr`), else the default."""
        if wanted:
            code = wanted.strip().lower().replace("_", "-")
            for candidate in (code, code.split("-")[0]):
                if candidate in self.languages:
                    return candidate
        return self.languages[0]

    def has_html(self, name: str, language: str) -> bool:
        return (self.directory / name / language / "body.html").is_file()

    def render(self, name: str, language: str, context: Mapping[str, Any], *, inline_css: bool = True) -> RenderedEmail:
        """Render subject, text and (when present) HTML of one email in one language."""
        values = dict(context)
        values.setdefault("language", language)
        try:
            subject = " ".join(self._template(name, language, "subject.txt").render(values).split())
            text = self._template(name, language, "body.txt").render(values)
            html = None
            if self.has_html(name, language):
                html = self._template(name, language, "body.html").render(values, subject=subject)
        except TemplateNotFound as missing_template:
            raise RenderError(f"email template {missing_template.name} is missing") from None
        except UndefinedError as error:
            raise RenderError(f"email template {name}/{language}: {_template_position(error)}{error}") from None
        if not subject:
            raise RenderError(f"email template {name}/{language}: the subject is empty")
        if html is not None and inline_css:
            html = self.inline_css(html)
        return RenderedEmail(subject=subject, text=text.strip() + "\n", html=html, language=language)

    def inline_css(self, html: str) -> str:
        """Move the CSS of `<style>` blocks into each element's `style` attribute (@media rules stay)."""
        try:
            return self._inliner.inline(html)
        except css_inline.InlineError as error:
            raise RenderError(f"cannot inline the CSS of an email: {error}") from None

    def _template(self, name: str, language: str, part: str) -> Any:
        return self.environment.get_template(f"{name}/{language}/{part}")

    def problems(self, name: str, contexts: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[EmailProblem]:
        """Render one email in every language with each sample context; return every problem, once each.

        ``contexts`` maps each language to the contexts to render it with.
        """
        found: list[EmailProblem] = []
        folder = self.directory / name
        html_languages = [language for language in self.languages if (folder / language / "body.html").is_file()]
        for language in self.languages:
            if not (folder / language).is_dir():
                found.append(EmailProblem(language, folder / language, "missing (no translation in this language yet)"))
                continue
            for part, what, required in EMAIL_PARTS:
                path = folder / language / part
                if not path.is_file():
                    if required:
                        found.append(EmailProblem(language, path, f"missing ({what})"))
                    elif html_languages:
                        others = ", ".join(html_languages)
                        found.append(EmailProblem(language, path, f"missing ({what}; {others} has one)"))
                    continue
                for context in contexts[language]:
                    problem = self._render_problem(name, language, part, context)
                    if problem is not None and problem not in found:
                        found.append(problem)
        return found

    def _render_problem(self, name: str, language: str, part: str, context: Mapping[str, Any]) -> EmailProblem | None:
        path = self.directory / name / language / part
        values = {**context, "language": language, "subject": "Subject"}
        try:
            rendered = self._template(name, language, part).render(values)
        except TemplateSyntaxError as error:
            where = Path(error.filename) if error.filename else path
            return EmailProblem(language, where, f"syntax error: {error.message}", error.lineno)
        except TemplateNotFound as error:
            return EmailProblem(language, path, f"uses the template {error.name}, which does not exist")
        except UndefinedError as error:
            frames = _template_frames(error, self.directory)
            if not frames:
                return EmailProblem(language, path, str(error))
            # A macro fails on a value its caller gave it: the caller's line is the one to fix.
            callers = [frame for frame in frames if frame[2] != "template"] or frames
            file, line, _ = callers[-1]
            via = (frames[-1][0], frames[-1][1]) if frames[-1] != callers[-1] else None
            return EmailProblem(language, file, str(error), line, via)
        if part == "subject.txt" and not rendered.strip():
            return EmailProblem(language, path, "the subject is empty")
        return None


def _template_frames(error: BaseException, directory: Path) -> list[tuple[Path, int, str]]:
    """Return the template frames of a rendering error, outermost first: (file, line, function name).

    Jinja rewrites tracebacks so that each frame of a template shows its file and line, and names it
    "top-level template code", "block 'NAME'", or "template" for a macro.
    """
    root = directory.resolve().as_posix()
    frames = []
    tb: TracebackType | None = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.endswith((".txt", ".html")) and Path(code.co_filename).resolve().as_posix().startswith(
            root
        ):
            frames.append((Path(code.co_filename), tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    return frames


def _template_position(error: BaseException) -> str:
    tb: TracebackType | None = error.__traceback__
    position = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".txt", ".html")):
            position = f"{Path(filename).name} line {tb.tb_lineno}: "
        tb = tb.tb_next
    return position


@lru_cache(maxsize=8)
def get_renderer(directory: Path, languages: tuple[str, ...]) -> EmailRenderer:
    """Return the renderer of a folder and languages, kept so each template is compiled once per process."""
    return EmailRenderer(directory, languages)
