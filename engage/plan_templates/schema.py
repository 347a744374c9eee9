"""The plan template schema: its fields, and the rules that tie its steps together. Pure: no database."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engage.rules.clock import zone
from engage.rules.due import CalendarRules, parse_window

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
        zone(value)
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


@dataclass(frozen=True)
class _Problem:
    message: str
    step: str | None = None  # a label such as 'step "survey"' or 'step #3'
    field: str | None = None

    def render(self, file: str | None = None) -> str:
        parts = [file, self.step, self.field, self.message]
        return ": ".join(part for part in parts if part)


def _step_label(steps: object, index: int) -> str:
    if isinstance(steps, list) and 0 <= index < len(steps):
        item = steps[index]
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            return f'step "{item["key"]}"'
    return f"step #{index + 1}"


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


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
