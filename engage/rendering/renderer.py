"""Rendering a step's email from its Jinja2 templates, and finding every problem in them. Pure: no database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

import css_inline
from jinja2 import (
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
)

from engage.errors import RenderError
from engage.rendering.context import EMAIL_PARTS, RenderedEmail, _Undefined
from engage.rendering.environment import template_environment
from engage.rendering.frames import (
    _MAX_FRAMES,
    _NO_FRAME,
    _PROBE,
    _contact_values,
    _Frame,
    _frame_shape,
    _Marker,
    _plain_uses,
    _with_contact_values,
)


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
    """Loads `email_templates/<name>/<language>/{subject.txt,body.txt,body.html}` with autoescaped HTML.

    :meth:`render` is the one way to render a contact's email. ``frames=False`` renders each email on its own, the
    plain way frames are checked against (the benchmark's baseline and the property tests use it).
    """

    def __init__(self, directory: Path, languages: Sequence[str], *, frames: bool = True) -> None:
        if not languages:
            raise RenderError("no email languages configured")
        self.directory = directory
        self.languages = [language.lower() for language in languages]
        self.environment = template_environment(directory, undefined=_Undefined, long_date=True)
        # Remote stylesheets are never fetched: an email's look must not depend on the network at send time.
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
        # Frames of `render`, oldest first (a bounded cache), and which emails may use them; None: frames off.
        self._frames: dict[tuple[str, str, object], _Frame | object] | None = {} if frames else None
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

    def _render_plain(self, name: str, language: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Render subject, text and (when present) HTML of one email in one language, CSS inlined: no frame."""
        values = dict(context)
        values.setdefault("language", language)
        subject, text, html = self._render_parts(name, language, values)
        if html is not None:
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

    def render(self, name: str, language: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Render subject, text and (when present) HTML of one email in one language, for the context's contact.

        The plain render's result, byte for byte, faster when many contacts get the same email. The email is
        rendered (and its CSS inlined) once per frame: the same template, language, workshop, staff
        and links, with a marker in place of each of the contact's values (and of the unsubscribe link). Each
        contact's email is then the frame with their values put in, escaped as the CSS inliner writes them. A
        template takes this way only when its contact values are printed or tested and nothing else (no filter,
        no comparison, no macro argument), and a frame is used only after it gave, for a probe contact full of
        characters that need escaping, exactly what the plain render gives; otherwise, and for a contact whose
        values hold control characters or runs of spaces, this is the plain render.
        """
        frames = self._frames
        if frames is None or not self._frameable(name, language):
            return self._render_plain(name, language, context)
        values = _contact_values(context)
        shape = _frame_shape(context, values)
        if values is None or shape is None:
            return self._render_plain(name, language, context)
        key = (name, language, shape)
        frame = frames.get(key)
        if frame is None:
            frame = self._build_frame(name, language, context)
            if len(frames) >= _MAX_FRAMES:
                frames.pop(next(iter(frames)))
            frames[key] = frame
        if frame is _NO_FRAME:
            return self._render_plain(name, language, context)
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
        """Render the frame of this contact's email, and check it against the plain render with a probe contact."""
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
        expected = self._render_plain(name, language, _with_contact_values(context, probe))
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


@lru_cache(maxsize=8)
def get_renderer(directory: Path, languages: tuple[str, ...], *, frames: bool = True) -> EmailRenderer:
    """Return the renderer of a folder and languages, kept so each template is compiled once per process."""
    return EmailRenderer(directory, languages, frames=frames)
