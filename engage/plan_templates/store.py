"""Template versions in the ledger: a changed file gives a new immutable version; plans keep theirs."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from engage.errors import NotFoundError
from engage.plan_templates.loading import _load_directory, display_path, load_template, template_files
from engage.plan_templates.schema import _TEMPLATE_KEY_RE, TEMPLATE_SUFFIX, PlanTemplateSpec
from engage.settings import get_settings
from models import (
    Plan,
    PlanTemplate,
    TemplateStep,
)

_SYNC_ATTEMPTS = 5


def spec_of(template: PlanTemplate) -> PlanTemplateSpec:
    """Rebuild the spec of a stored template version from its definition."""
    return PlanTemplateSpec.model_validate(template.definition)


_SPECS: dict[tuple[str, str], PlanTemplateSpec] = {}


def template_spec(template: PlanTemplate) -> PlanTemplateSpec:
    """The spec of a stored template version, cached by its content hash (a version never changes)."""
    cache_key = (template.key, template.content_hash)
    if cache_key not in _SPECS:
        _SPECS[cache_key] = spec_of(template)
    return _SPECS[cache_key]


def plan_spec(*, session: Session, plan: Plan) -> PlanTemplateSpec:
    template = session.get(PlanTemplate, plan.template_id)
    if template is None:  # a foreign key makes this impossible short of a broken database
        raise NotFoundError(f"plan {plan.id}: template version {plan.template_id} is missing")
    return template_spec(template)


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


def template_version(*, session: Session, key: str, version: int | None = None) -> PlanTemplate:
    """A stored version of a template: ``version``, or (when None) the file's current content, synced first."""
    if version is None:
        return current_template(session=session, key=key)
    found = session.exec(select(PlanTemplate).where(PlanTemplate.key == key, PlanTemplate.version == version)).first()
    if found is None:
        raise NotFoundError(f'no version {version} of plan template "{key}" in the ledger')
    return found
