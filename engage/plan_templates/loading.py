"""Loading plan template files: YAML read safely, every problem one line naming the file, the step and the field."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from engage.errors import TemplateError
from engage.plan_templates.schema import (
    _EMAIL_TEMPLATE_RE,
    _STEPS_CHECKED_BY_CALLER,
    _TEMPLATE_KEY_RE,
    EMAIL_TEMPLATE_PARTS,
    TEMPLATE_SUFFIX,
    PlanTemplateSpec,
    StepSpec,
    _Problem,
    _step_label,
    _step_problems,
    _suggest,
)
from engage.rendering.renderer import EmailRenderer, get_renderer
from engage.rendering.samples import sample_contexts
from engage.settings import get_settings


def display_path(path: Path) -> str:
    """Return a path relative to the working directory when it is inside it (as admins type them)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
