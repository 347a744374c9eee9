"""Plan templates: the YAML schema, its validation, and the immutable versions synced to the ledger.

An admin writes one YAML file per template in ``plan_templates/`` (the file stem is the key). Loading
checks everything that can be known before a plan exists: the fields, the dependencies between steps,
the calendar rules, and that every email step has a subject and a body in every configured language.
Each problem is one line naming the file, the step and the field.

Syncing stores the validated template as an immutable ``PlanTemplate`` row; a changed file gives a new
version, and plans keep the version they were made from.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from engage.errors import NotFoundError, TemplateError
from engage.rendering import EmailRenderer, get_renderer, sample_contexts
from engage.settings import get_settings
from engage.timerules import CalendarRules, parse_window
from models import PlanTemplate, TemplateStep

__all__ = [
    "EMAIL_TEMPLATE_PARTS",
    "PlanTemplateSpec",
    "StepSpec",
    "current_template",
    "display_path",
    "load_template",
    "load_templates",
    "spec_of",
    "sync_templates",
    "template_files",
    "template_problems",
]

StepKindName = Literal["email", "call", "task"]
Priority = Literal["low", "normal", "high"]
RescheduleTo = Literal["friday", "monday"]

#: The files every email template folder must hold per language; `body.html`, the HTML part, is optional.
EMAIL_TEMPLATE_PARTS = ("subject.txt", "body.txt")
TEMPLATE_SUFFIX = ".yaml"
ASSIGNEE_RULES = ("owner", "applier")

_TEMPLATE_KEY_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_STEP_KEY_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_LINK_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_EMAIL_TEMPLATE_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*(?:/[a-z0-9]+(?:[-_][a-z0-9]+)*)*$")
_SYNC_ATTEMPTS = 5
# Context flag: the loader checks the steps itself, to report one problem per step and field.
_STEPS_CHECKED_BY_CALLER = "steps_checked_by_caller"


def _check_assignee(value: str) -> str:
    """Accept `owner`, `applier` or a staff email (normalised like staff emails: trimmed, lower case)."""
    rule = value.strip()
    if rule.lower() in ASSIGNEE_RULES:
        return rule.lower()
    try:
        validate_email(rule, check_deliverability=False)
    except EmailNotValidError:
        raise ValueError(f"must be owner, applier or a staff email, not {value!r}") from None
    return rule.lower()


class StepSpec(BaseModel):
    """One step of a plan template, as an admin writes it.

    ``email_template`` is required for email steps and refused on call and task steps: a call's invite
    is built from the call itself, and a template name that nothing reads would only mislead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Identifier, unique in the template: lower case, digits, - or _.")
    name: str = Field(min_length=1, max_length=200, description="What staff call the step.")
    kind: StepKindName = Field(description="email, call or task.")
    days_after: int = Field(
        strict=True,
        description="Days after the workshop (independent step) or after the parent step completes.",
    )
    depends_on: str | None = Field(default=None, description="Key of the parent step, or none.")
    assignee: str | None = Field(default=None, description="Overrides the template's assignee rule.")
    priority: Priority = Field(default="normal", description="low, normal or high.")
    email_template: str | None = Field(
        default=None, description="Email steps only: a folder under email_templates/, e.g. volunteer/survey."
    )
    description: str | None = Field(default=None, description="What the caller or staff member should do.")

    @field_validator("key")
    @classmethod
    def _key_is_identifier(cls, value: str) -> str:
        if len(value) > 100 or not _STEP_KEY_RE.match(value):
            raise ValueError(
                f"{value!r} is not a step key: use lower case letters, digits, - or _, starting with a letter"
            )
        return value

    @field_validator("days_after")
    @classmethod
    def _days_after_not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 or more (days after the workshop or the parent step), not {value}")
        return value

    @field_validator("assignee")
    @classmethod
    def _assignee_rule(cls, value: str | None) -> str | None:
        return None if value is None else _check_assignee(value)

    @field_validator("email_template")
    @classmethod
    def _email_template_name(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL_TEMPLATE_RE.match(value):
            raise ValueError(
                f"{value!r} is not an email template name: use a folder under email_templates/ such as "
                "volunteer/survey (lower case letters, digits, - and _, parts separated by /)"
            )
        return value


class PlanTemplateSpec(BaseModel):
    """A validated plan template: calendar rules, links and ordered steps. Immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Kebab-case identifier; equals the YAML file's name.")
    name: str = Field(min_length=1, max_length=200, description="What staff call the template.")
    description: str = Field(default="", description="What the template is for.")
    skip_weekends: bool = Field(default=False, strict=True, description="Move due days off weekends.")
    reschedule_to: RescheduleTo = Field(default="monday", description="Where a day off moves to.")
    holidays: str | None = Field(default=None, description="Country code whose public holidays are days off.")
    timezone: str = Field(default="Europe/Paris", description="IANA time zone the days are counted in.")
    send_window: str = Field(default="09:00-17:00", description="When emails may go out, HH:MM-HH:MM.")
    assignee: str = Field(default="applier", description="Default assignee rule: owner, applier or an email.")
    call_slot_minutes: int = Field(default=15, strict=True, description="Length of a follow-up call slot.")
    links: dict[str, str] = Field(default_factory=dict, description="Name -> absolute URL, for the emails.")
    steps: tuple[StepSpec, ...] = Field(description="The steps, in the order staff see them.")

    @field_validator("key")
    @classmethod
    def _key_is_kebab(cls, value: str) -> str:
        if len(value) > 100 or not _TEMPLATE_KEY_RE.match(value):
            raise ValueError(f"{value!r} is not kebab-case (lower case words joined by -, e.g. volunteer-followup)")
        return value

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays_is_text(cls, value: object) -> object:
        # YAML 1.1 reads a bare NO (Norway) as false; say so instead of "input should be a string".
        if isinstance(value, bool):
            raise ValueError('write the country code in quotes, e.g. holidays: "NO" (YAML reads NO as false)')
        return value

    @field_validator("holidays")
    @classmethod
    def _holidays_known(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # The calendar rules own the list of supported countries; ask them, and keep their spelling.
        return CalendarRules(holidays=value).holidays

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Paris") from None
        return value

    @field_validator("send_window")
    @classmethod
    def _send_window_parses(cls, value: str) -> str:
        start, end = parse_window(value)
        return f"{start:%H:%M}-{end:%H:%M}"

    @field_validator("assignee")
    @classmethod
    def _assignee_rule(cls, value: str) -> str:
        return _check_assignee(value)

    @field_validator("call_slot_minutes")
    @classmethod
    def _call_slot_positive(cls, value: int) -> int:
        if not 5 <= value <= 480:
            raise ValueError(f"must be between 5 and 480 minutes, not {value}")
        return value

    @field_validator("links")
    @classmethod
    def _links_are_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not _LINK_NAME_RE.match(name):
                raise ValueError(f"link name {name!r} must be lower case letters, digits and _ (used as links.NAME)")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"link {name!r}: {url!r} is not an absolute http(s) URL")
        return value

    @field_validator("steps")
    @classmethod
    def _at_least_one_step(cls, value: tuple[StepSpec, ...]) -> tuple[StepSpec, ...]:
        if not value:
            raise ValueError("a template needs at least one step")
        return value

    @model_validator(mode="after")
    def _steps_fit_together(self, info: ValidationInfo) -> PlanTemplateSpec:
        if info.context and info.context.get(_STEPS_CHECKED_BY_CALLER):
            return self
        problems = _step_problems([step.model_dump() for step in self.steps])
        if problems:
            raise ValueError("; ".join(problem.render() for problem in problems))
        return self

    def step(self, key: str) -> StepSpec:
        """Return the step with this key; KeyError if there is none."""
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(f'plan template "{self.key}" has no step "{key}"')

    def dependents(self, key: str) -> list[StepSpec]:
        """Return the steps that wait for this one, in template order."""
        self.step(key)
        return [step for step in self.steps if step.depends_on == key]

    def roots(self) -> list[StepSpec]:
        """Return the independent steps: they count from the workshop date."""
        return [step for step in self.steps if step.depends_on is None]

    def assignee_of(self, key: str) -> str:
        """Return the assignee rule that applies to a step: its own, else the template's."""
        return self.step(key).assignee or self.assignee

    def nominal_days(self) -> dict[str, int]:
        """Return each step's day as staff say it: counted from the workshop, parents completing on time."""
        days: dict[str, int] = {}

        def day_of(step: StepSpec) -> int:
            if step.key not in days:
                parent = 0 if step.depends_on is None else day_of(self.step(step.depends_on))
                days[step.key] = parent + step.days_after
            return days[step.key]

        return {step.key: day_of(step) for step in self.steps}

    def calendar_rules(self) -> CalendarRules:
        """Return the rules that turn this template's offsets into due times."""
        start, end = parse_window(self.send_window)
        return CalendarRules(
            timezone=self.timezone,
            skip_weekends=self.skip_weekends,
            reschedule_to=self.reschedule_to,
            holidays=self.holidays,
            send_window_start=start,
            send_window_end=end,
        )

    def definition(self) -> dict[str, Any]:
        """Return the template as plain JSON data: what the ledger stores and hashes."""
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """Return the sha256 of the canonical JSON: YAML layout and comments do not change it."""
        canonical = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- Problems: one line each, naming the file, the step and the field ---------------------------------------


@dataclass(frozen=True)
class _Problem:
    message: str
    step: str | None = None  # a label such as 'step "survey"' or 'step #3'
    field: str | None = None

    def render(self, file: str | None = None) -> str:
        parts = [file, self.step, self.field, self.message]
        return ": ".join(part for part in parts if part)


def display_path(path: Path) -> str:
    """Return a path relative to the working directory when it is inside it (as admins type them)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _step_label(steps: object, index: int) -> str:
    if isinstance(steps, list) and 0 <= index < len(steps):
        item = steps[index]
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            return f'step "{item["key"]}"'
    return f"step #{index + 1}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _pydantic_message(error: ErrorDetails, allowed: Sequence[str]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "missing (required)"
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        return f"unknown field{_suggest(name, allowed)}; allowed: {', '.join(allowed)}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the listed values')}, not {_short(error['input'])}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping (field: value), not {_short(error['input'])}"
    message = error["msg"]
    return f"{message[:1].lower()}{message[1:]}, not {_short(error['input'])}"


def _pydantic_problems(error: ValidationError, data: Mapping[str, Any]) -> list[_Problem]:
    problems = []
    for detail in error.errors(include_url=False):
        loc = list(detail["loc"])
        step = None
        allowed: Sequence[str] = list(PlanTemplateSpec.model_fields)
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            step = _step_label(data.get("steps"), loc[1])
            loc = loc[2:]
            allowed = list(StepSpec.model_fields)
        problems.append(_Problem(_pydantic_message(detail, allowed), step, ".".join(map(str, loc)) or None))
    return problems


def _step_problems(steps: Sequence[object]) -> list[_Problem]:
    """Check what no single field shows: email templates by kind, unique keys, dependencies and cycles."""
    problems: list[_Problem] = []
    labels = [_step_label(list(steps), index) for index in range(len(steps))]
    rows = [(labels[i], item) for i, item in enumerate(steps) if isinstance(item, Mapping)]
    keys = [item["key"] for _, item in rows if isinstance(item.get("key"), str)]

    seen: set[str] = set()
    for label, item in rows:
        key = item.get("key")
        if isinstance(key, str):
            if key in seen:
                problems.append(
                    _Problem(f'another step is already named "{key}"; step keys must be unique', label, "key")
                )
            seen.add(key)
        kind, email_template = item.get("kind"), item.get("email_template")
        if kind == "email" and not email_template:
            problems.append(
                _Problem(
                    "an email step needs an email template, e.g. email_template: volunteer/survey",
                    label,
                    "email_template",
                )
            )
        elif kind in ("call", "task") and email_template is not None:
            problems.append(
                _Problem(
                    f"only email steps have an email template; remove it from this {kind} step", label, "email_template"
                )
            )

    parent: dict[str, str] = {}
    for label, item in rows:
        key, depends_on = item.get("key"), item.get("depends_on")
        if not isinstance(depends_on, str):
            continue
        if depends_on == key:
            problems.append(_Problem("a step cannot depend on itself", label, "depends_on"))
        elif depends_on not in keys:
            problems.append(_Problem(f'no step named "{depends_on}"{_suggest(depends_on, keys)}', label, "depends_on"))
        elif isinstance(key, str):
            parent.setdefault(key, depends_on)

    # Each step has at most one parent, so a cycle is found by walking up from each step; report it once,
    # on its first step in template order.
    reported: set[str] = set()
    for label, item in rows:
        key = item.get("key")
        if not isinstance(key, str) or key in reported:
            continue
        path, current = [key], parent.get(key)
        while current is not None and current not in path:
            path.append(current)
            current = parent.get(current)
        if current == key:
            reported.update(path)
            chain = " -> ".join([*path, key])
            problems.append(_Problem(f"dependency cycle: {chain}", label, "depends_on"))
    return problems


def _email_problems(
    steps: Sequence[object], links: object, email_templates_dir: Path, languages: Sequence[str]
) -> list[_Problem]:
    """Render every email step in every language with sample contacts, as the runner would; report what fails.

    That finds a missing translation or part, an empty subject, a variable emails may not use, and a link
    the template does not define, each named with its language, file and line.
    """
    problems: list[_Problem] = []
    known_links = isinstance(links, Mapping)
    # Links that are not a mapping are reported by the schema; render with none and ignore link problems then.
    link_urls = {str(name): str(url) for name, url in links.items()} if isinstance(links, Mapping) else {}
    renderer: EmailRenderer | None = None
    contexts: dict[str, list[dict[str, Any]]] = {}
    for index, item in enumerate(steps):
        if not isinstance(item, Mapping) or item.get("kind") != "email":
            continue
        name = item.get("email_template")
        if not isinstance(name, str) or not _EMAIL_TEMPLATE_RE.match(name):
            continue
        label = _step_label(list(steps), index)
        folder = email_templates_dir / name
        if not folder.is_dir():
            problems.append(
                _Problem(
                    f'no email template folder "{name}": expected {display_path(folder)}/<language>/ with '
                    f"{' and '.join(EMAIL_TEMPLATE_PARTS)} for {', '.join(languages)}",
                    label,
                    "email_template",
                )
            )
            continue
        if renderer is None:
            settings = get_settings()
            renderer = get_renderer(email_templates_dir, tuple(languages))
            contexts = {
                language: sample_contexts(settings=settings, links=link_urls, language=language)
                for language in renderer.languages
            }
        for problem in renderer.problems(name, contexts):
            if not known_links and problem.message.startswith("uses links."):
                continue
            problems.append(
                _Problem(f'language "{problem.language}": {problem.describe(display_path)}', label, "email_template")
            )
    return problems


# --- Loading ------------------------------------------------------------------------------------------------


class _TemplateLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping (PyYAML would keep the last silently)."""


def _construct_mapping(loader: _TemplateLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` is resolved by construct_mapping; a key written after it overrides it
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"{key!r} is written twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_TemplateLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(error: yaml.YAMLError) -> _Problem:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        what = "; ".join(part for part in (error.context, error.problem) if part)
        return _Problem(f"invalid YAML: {what}", f"line {mark.line + 1}, column {mark.column + 1}")
    return _Problem(f"invalid YAML: {error}")


def _read(
    path: Path, email_templates_dir: Path | None, languages: Sequence[str] | None
) -> tuple[PlanTemplateSpec | None, list[str]]:
    """Load one file and return its spec (when valid) and its problems, one rendered line each."""
    file = display_path(path)
    settings = get_settings()
    email_templates_dir = email_templates_dir or settings.email_templates_dir
    languages = list(languages or settings.language_list)

    if path.suffix != TEMPLATE_SUFFIX:
        return None, [f"{file}: plan template files end in {TEMPLATE_SUFFIX}; rename it to {path.stem}.yaml"]
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TemplateLoader)
    except OSError as error:
        return None, [f"{file}: cannot read the file: {error.strerror}"]
    except UnicodeDecodeError:
        return None, [f"{file}: not UTF-8 text"]
    except yaml.YAMLError as error:
        return None, [_yaml_problem(error).render(file)]
    if data is None:
        return None, [f"{file}: the file is empty; a template needs at least key, name and steps"]
    if not isinstance(data, dict):
        return None, [f"{file}: must be a mapping of template fields (key: value), not a {type(data).__name__}"]

    problems: list[_Problem] = []
    spec: PlanTemplateSpec | None = None
    try:
        spec = PlanTemplateSpec.model_validate(data, context={_STEPS_CHECKED_BY_CALLER: True})
    except ValidationError as error:
        problems.extend(_pydantic_problems(error, data))
    key = data.get("key")
    # A key that is not kebab-case is already reported; a file name cannot fix it.
    if isinstance(key, str) and key != path.stem and _TEMPLATE_KEY_RE.match(key):
        problems.append(
            _Problem(f'"{key}" does not match the file name: the key of {path.name} is "{path.stem}"', None, "key")
        )
    steps = data.get("steps")
    if isinstance(steps, list):
        problems.extend(_step_problems(steps))
        problems.extend(_email_problems(steps, data.get("links", {}), email_templates_dir, languages))
    rendered = [problem.render(file) for problem in problems]
    return (None if rendered else spec), rendered


def template_files(directory: Path | None = None) -> list[Path]:
    """Return the plan template files of a folder (default: the configured one), sorted by name."""
    directory = directory or get_settings().plan_templates_dir
    if not directory.is_dir():
        raise TemplateError(f"{display_path(directory)}: no such folder of plan templates")
    # .yml files are listed too, so that one is reported instead of silently ignored.
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (TEMPLATE_SUFFIX, ".yml"))


def template_problems(
    path: Path, *, email_templates_dir: Path | None = None, languages: Sequence[str] | None = None
) -> list[str]:
    """Return every problem of one template file, one line each; an empty list means it is valid."""
    return _read(path, email_templates_dir, languages)[1]


def load_template(
    path: Path, *, email_templates_dir: Path | None = None, languages: Sequence[str] | None = None
) -> PlanTemplateSpec:
    """Load and validate one template file; TemplateError lists every problem, one per line."""
    spec, problems = _read(path, email_templates_dir, languages)
    if problems or spec is None:
        raise TemplateError("\n".join(problems))
    return spec


def _load_directory(directory: Path | None) -> list[tuple[Path, PlanTemplateSpec]]:
    loaded: list[tuple[Path, PlanTemplateSpec]] = []
    problems: list[str] = []
    for path in template_files(directory):
        spec, file_problems = _read(path, None, None)
        problems.extend(file_problems)
        if spec is not None:
            loaded.append((path, spec))
    if problems:
        raise TemplateError("\n".join(problems))
    return sorted(loaded, key=lambda item: item[1].key)


def load_templates(directory: Path | None = None) -> list[PlanTemplateSpec]:
    """Load every template of a folder (default: the configured one), sorted by key; all problems at once."""
    return [spec for _, spec in _load_directory(directory)]


# --- The ledger ---------------------------------------------------------------------------------------------


def spec_of(template: PlanTemplate) -> PlanTemplateSpec:
    """Rebuild the spec of a stored template version from its definition."""
    return PlanTemplateSpec.model_validate(template.definition)


def _ensure_version(session: Session, spec: PlanTemplateSpec, source: Path) -> PlanTemplate:
    """Return the version row holding exactly this content, inserting version N+1 when there is none."""
    definition = spec.definition()
    digest = spec.content_hash()
    for attempt in range(1, _SYNC_ATTEMPTS + 1):
        found = session.exec(
            select(PlanTemplate).where(PlanTemplate.key == spec.key, PlanTemplate.content_hash == digest)
        ).first()
        if found is not None:
            return found
        latest = session.exec(select(func.max(PlanTemplate.version)).where(PlanTemplate.key == spec.key)).one()
        row = PlanTemplate(
            key=spec.key,
            version=(latest or 0) + 1,
            name=spec.name,
            content_hash=digest,
            definition=definition,
            source_file=source.name,
        )
        try:
            # A savepoint: losing a race to another process undoes only this insert, not the caller's work.
            with session.begin_nested():
                session.add(row)
                session.flush()
                assert row.id is not None  # flushed, so the database gave it an id
                session.add_all(
                    TemplateStep(
                        template_id=row.id,
                        position=position,
                        key=step.key,
                        name=step.name,
                        kind=step.kind,
                        days_after=step.days_after,
                        depends_on=step.depends_on,
                        assignee=spec.assignee_of(step.key),
                        priority=step.priority,
                        email_template=step.email_template,
                    )
                    for position, step in enumerate(spec.steps, start=1)
                )
        except IntegrityError:
            # Another process stored this content or took this version number first: read again.
            if attempt == _SYNC_ATTEMPTS:
                raise
            continue
        return row
    raise AssertionError("unreachable")  # pragma: no cover


def sync_templates(*, session: Session, directory: Path | None = None) -> list[PlanTemplate]:
    """Make sure the ledger holds a version of each template file's current content; return those versions.

    Nothing is committed: the caller's transaction decides. A file whose content matches an older version
    (a change undone) gets that version back rather than a new number.
    """
    return [_ensure_version(session, spec, path) for path, spec in _load_directory(directory)]


def current_template(*, session: Session, key: str, directory: Path | None = None) -> PlanTemplate:
    """Sync one template file and return its current version; NotFoundError if there is no such file."""
    directory = directory or get_settings().plan_templates_dir
    path = directory / f"{key}{TEMPLATE_SUFFIX}"
    # The key becomes a file name: refuse anything that is not a plain template key (no ../).
    if not _TEMPLATE_KEY_RE.match(key) or not path.is_file():
        known = [p.stem for p in template_files(directory) if p.suffix == TEMPLATE_SUFFIX]
        raise NotFoundError(
            f'no plan template "{key}" in {display_path(directory)}; known: {", ".join(known) or "none"}'
        )
    return _ensure_version(session, load_template(path), path)
