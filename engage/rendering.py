"""Render a step's email from its Jinja2 templates: pure, no sending, no database.

An email is a folder under ``email_templates/`` with one sub-folder per language holding ``subject.txt``,
``body.txt`` (the plain-text part) and ``body.html`` (the HTML part, which extends a layout of
``email_templates/_layout/``). The HTML is autoescaped and its CSS inlined into each element, so Gmail and
Outlook keep it. Every template sees the same variables, built by :func:`email_context`: the runner calls it
for each contact, and validation calls it with sample contacts, so what validates is what gets sent.
"""

from __future__ import annotations

import difflib
import re
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
    meta,
    nodes,
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
        # Frames of `render_contact`, oldest first (a bounded cache), and which emails may use them.
        self._frames: dict[tuple[str, str, object], _Frame | object] | None = {}
        self._frameable_emails: dict[tuple[str, str], bool] = {}

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
        subject, text, html = self._render_parts(name, language, values)
        if html is not None and inline_css:
            html = self.inline_css(html)
        return RenderedEmail(subject=subject, text=text, html=html, language=language)

    def _render_parts(self, name: str, language: str, values: dict[str, Any]) -> tuple[str, str, str | None]:
        """Subject (on one line), text (ending with one line break) and HTML (CSS not inlined yet)."""
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
        return subject, text.strip() + "\n", html

    def render_contact(self, name: str, language: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Return what `render` returns, byte for byte, faster when many contacts get the same email.

        The email is rendered (and its CSS inlined) once per frame: the same template, language, workshop, staff
        and links, with a marker in place of each of the contact's values (and of the unsubscribe link). Each
        contact's email is then the frame with their values put in, escaped as the CSS inliner writes them. A
        template takes this way only when its contact values are printed or tested and nothing else (no filter,
        no comparison, no macro argument), and a frame is used only after it gave, for a probe contact full of
        characters that need escaping, exactly what `render` gives; otherwise, and for a contact whose values
        hold control characters or runs of spaces, this is `render`.
        """
        frames = self._frames
        if frames is None or not self._frameable(name, language):
            return self.render(name, language, context)
        values = _contact_values(context)
        shape = _frame_shape(context, values)
        if values is None or shape is None:
            return self.render(name, language, context)
        key = (name, language, shape)
        frame = frames.get(key)
        if frame is None:
            frame = self._build_frame(name, language, context)
            if len(frames) >= _MAX_FRAMES:
                frames.pop(next(iter(frames)))
            frames[key] = frame
        if frame is _NO_FRAME:
            return self.render(name, language, context)
        assert isinstance(frame, _Frame)
        return frame.fill(values, language)

    def _frameable(self, name: str, language: str) -> bool:
        """Whether every template this email uses only prints or tests the contact's values."""
        key = (name, language)
        if key not in self._frameable_emails:
            parts = ["subject.txt", "body.txt"] + (["body.html"] if self.has_html(name, language) else [])
            try:
                self._frameable_emails[key] = all(
                    self._uses_are_plain(f"{name}/{language}/{part}", set()) for part in parts
                )
            except (TemplateNotFound, TemplateSyntaxError):
                self._frameable_emails[key] = False
        return self._frameable_emails[key]

    def _uses_are_plain(self, template: str, seen: set[str]) -> bool:
        if template in seen:
            return True
        seen.add(template)
        source, _, _ = self.environment.loader.get_source(self.environment, template)  # type: ignore[union-attr]
        tree = self.environment.parse(source)
        if not _plain_uses(tree, None):
            return False
        for other in meta.find_referenced_templates(tree):
            if other is None or not self._uses_are_plain(other, seen):
                return False
        return True

    def _build_frame(self, name: str, language: str, context: Mapping[str, Any]) -> _Frame | object:
        """Render the frame of this contact's email, and check it against `render` with a probe contact."""
        values = _contact_values(context)
        assert values is not None
        markers = {field: _Marker(index) if value else "" for index, (field, value) in enumerate(values.items())}
        frame_context = _with_contact_values(context, markers)
        frame_context.setdefault("language", language)
        subject, text, html = self._render_parts(name, language, frame_context)
        if html is not None:
            html = self.inline_css(html)
        frame = _Frame(subject, text, html)
        probe = {field: _PROBE[field] if value else "" for field, value in values.items()}
        expected = self.render(name, language, _with_contact_values(context, probe))
        if frame.fill(probe, language) != expected:
            return _NO_FRAME
        return frame

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


# --- Frames: one email rendered once for many contacts -----------------------------------------------------------

#: The values that change from one contact to the next; `subject` is one too, in the HTML, when it names the contact.
_CONTACT_FIELDS = ("first_name", "last_name", "full_name", "email")
_VARYING = frozenset({"contact", "unsubscribe_url", "subject"})
_MAX_FRAMES = 256
_NO_FRAME = object()
_MARKER = re.compile("\ue000(\\d+)\ue001")
#: Values full of what HTML escapes, to check a frame against `render` before trusting it.
_PROBE = {
    "first_name": 'Zoë & <Léa> "O\'Connor"',
    "last_name": 'Dupont-Moretti & Fils <"l\'aîné">',
    "full_name": 'Zoë & <Léa> "O\'Connor" Dupont-Moretti & Fils <"l\'aîné">',
    "email": "zoe.o'connor&fils@exämple.org",
    "unsubscribe_url": "https://example.org/u/1.a?b=\"c\"&d=<e>'f'",
}
# Characters the HTML parser of the CSS inliner would change (line ends, NUL, controls), or that mark the frame.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ue000\ue001]")


class _Marker:
    """Stands for one contact value in a frame: printed, it writes its marker; tested, it is true."""

    __slots__ = ("token",)

    def __init__(self, index: int) -> None:
        self.token = f"\ue000{index}\ue001"

    def __html__(self) -> str:
        return self.token

    def __str__(self) -> str:
        return self.token

    def __bool__(self) -> bool:
        return True


def _contact_values(context: Mapping[str, Any]) -> dict[str, str] | None:
    """The contact's values of a context (and the unsubscribe link), if they can fill a frame."""
    contact = context.get("contact")
    unsubscribe = context.get("unsubscribe_url")
    if not isinstance(contact, Variables) or not isinstance(unsubscribe, str):
        return None
    values = {field: contact[field] if field in contact else None for field in _CONTACT_FIELDS}
    values["unsubscribe_url"] = unsubscribe
    for value in values.values():
        # A frame holds each value as the templates print it: a run of spaces would be collapsed in the subject.
        if not isinstance(value, str) or _UNSAFE.search(value) or value != " ".join(value.split()):
            return None
    return values  # type: ignore[return-value]


def _with_contact_values(context: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(context)
    result["contact"] = Variables("contact", {field: values[field] for field in _CONTACT_FIELDS})
    result["unsubscribe_url"] = values["unsubscribe_url"]
    return result


def _frozen(value: Any) -> Any:
    if isinstance(value, Variables):
        return tuple((name, _frozen(value[name])) for name in value.names())
    hash(value)
    return value


def _frame_shape(context: Mapping[str, Any], values: Mapping[str, str] | None) -> object | None:
    """What a frame depends on: every value but the contact's, and which of the contact's values are empty."""
    if values is None:
        return None
    try:
        rest = tuple(sorted((name, _frozen(value)) for name, value in context.items() if name not in _VARYING))
    except TypeError:  # an unhashable value: no frame
        return None
    return rest, tuple(bool(value) for value in values.values())


def _escape_text(value: str) -> str:
    """Escape text as the CSS inliner's HTML serialiser writes it (html5ever, the HTML standard's algorithm)."""
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")


class _Frame:
    """An email rendered with markers for the contact's values: literal pieces, and where each value goes."""

    __slots__ = ("html", "subject", "text")

    def __init__(self, subject: str, text: str, html: str | None) -> None:
        self.subject = _pieces(subject, in_html=False)
        self.text = _pieces(text, in_html=False)
        self.html = _pieces(html, in_html=True) if html is not None else None

    def fill(self, values: Mapping[str, str], language: str) -> RenderedEmail:
        by_index = list(values.values())
        return RenderedEmail(
            subject=_join(self.subject, by_index),
            text=_join(self.text, by_index),
            html=_join(self.html, by_index) if self.html is not None else None,
            language=language,
        )


_Piece = tuple[str, int, Callable[[str], str] | None]


def _pieces(rendered: str, *, in_html: bool) -> list[_Piece]:
    """Split a rendered part at its markers: (literal text before, value index or -1, how to escape the value)."""
    pieces: list[_Piece] = []
    position = 0
    for match in _MARKER.finditer(rendered):
        before = rendered[position : match.start()]
        escape: Callable[[str], str] | None = None
        if in_html:
            # Inside a tag (after its last "<" and before any ">") a value is an attribute's.
            inside_tag = rendered.rfind("<", 0, match.start()) > rendered.rfind(">", 0, match.start())
            escape = _escape_attribute if inside_tag else _escape_text
        pieces.append((before, int(match.group(1)), escape))
        position = match.end()
    pieces.append((rendered[position:], -1, None))
    return pieces


def _join(pieces: list[_Piece], values: list[str]) -> str:
    out = []
    for literal, index, escape in pieces:
        out.append(literal)
        if index >= 0:
            out.append(escape(values[index]) if escape is not None else values[index])
    return "".join(out)


def _is_varying(node: nodes.Node) -> bool:
    """A reference to one of the contact's values: `contact.x`, `contact["x"]`, `unsubscribe_url`, `subject`."""
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        return isinstance(node.node, nodes.Name) and node.node.name == "contact"
    return isinstance(node, nodes.Name) and node.name in _VARYING - {"contact"}


def _plain_uses(node: nodes.Node, position: str | None) -> bool:
    """Whether every contact value under ``node`` is printed or tested as it is, nothing else.

    ``position`` is "output" for an expression whose value is printed, "test" for one whose truth is tested.
    """
    if _is_varying(node):
        return position in ("output", "test")
    if isinstance(node, nodes.Name):
        # `contact` on its own, or a name that hides a contact value (set, for, macro arguments): no frame.
        return node.name not in _VARYING
    if isinstance(node, nodes.Output):
        return all(_plain_uses(child, "output") for child in node.nodes)
    if isinstance(node, nodes.If):
        return (
            _plain_uses(node.test, "test")
            and all(_plain_uses(child, None) for child in node.body + node.else_)
            and all(_plain_uses(branch, None) for branch in node.elif_)
        )
    if isinstance(node, nodes.CondExpr):
        return (
            _plain_uses(node.test, "test")
            and _plain_uses(node.expr1, position)
            and (node.expr2 is None or _plain_uses(node.expr2, position))
        )
    if isinstance(node, nodes.Filter) and node.name in ("e", "escape") and position == "output" and node.node:
        return _plain_uses(node.node, "output") and not (node.args or node.kwargs or node.dyn_args or node.dyn_kwargs)
    if isinstance(node, nodes.Concat) and position == "output":
        return all(_plain_uses(child, "output") for child in node.nodes)
    if isinstance(node, nodes.Not | nodes.And | nodes.Or) and position == "test":
        return all(_plain_uses(child, "test") for child in node.iter_child_nodes())
    return all(_plain_uses(child, None) for child in node.iter_child_nodes())


@lru_cache(maxsize=8)
def get_renderer(directory: Path, languages: tuple[str, ...]) -> EmailRenderer:
    """Return the renderer of a folder and languages, kept so each template is compiled once per process."""
    return EmailRenderer(directory, languages)
