"""Enrollment: after a workshop, import its attendee list and give each person the plan their role calls for."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlmodel import Session, col, select

from engage.contacts.importing import ImportSummary, import_contacts
from engage.errors import EngageError
from engage.importer.rows import AttendeeRow
from engage.importer.source import AttendeeSource
from engage.plan_templates.store import current_template
from engage.plans.apply import apply_templates
from engage.plans.assignees import AssigneeResolver
from engage.plans.workshops import get_or_create_workshop
from engage.runner.due import DueItem
from engage.staff import get_staff
from models import Contact, PlanTemplate


@dataclass
class EnrollmentSummary:
    """Counts and ledger ids only: this goes into Prefect artifacts and logs."""

    workshop_id: int
    contacts: ImportSummary
    plans_created: int = 0
    plans_existing: int = 0
    by_template: dict[str, int] = field(default_factory=dict)
    due_items: list[DueItem] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "workshop_id": self.workshop_id,
            "created": self.contacts.created,
            "updated": self.contacts.updated,
            "merged": self.contacts.merged,
            "rejected": self.contacts.rejected,
            "rejects_file": str(self.contacts.rejects_file) if self.contacts.rejects_file else None,
            "plans_created": self.plans_created,
            "plans_existing": self.plans_existing,
            "by_template": dict(self.by_template),
        }


def resolve_templates(
    *, session: Session, template_key: str, role_templates: Mapping[str, str]
) -> dict[str, PlanTemplate]:
    """The current version of every template the enrollment may use; a template that does not validate stops it."""
    keys = {template_key, *role_templates.values()}
    return {key: current_template(session=session, key=key) for key in sorted(keys)}


def normalise_role_map(role_templates: Mapping[str, str] | None) -> dict[str, str]:
    from engage.importer.fields import normalise_roles

    result: dict[str, str] = {}
    for role, template in (role_templates or {}).items():
        roles = normalise_roles(role)
        if not roles or not template.strip():
            raise EngageError(f"role map entry {role!r}: {template!r} needs a role and a template key")
        result[roles[0]] = template.strip()
    return result


def enroll_attendees(
    *,
    session: Session,
    source: AttendeeSource,
    workshop_name: str,
    on: date,
    template_key: str,
    applied_by: str,
    now: datetime,
    place: str | None = None,
    role_templates: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> EnrollmentSummary:
    """Import the attendees and create their plans, in one pass over the file; running it again creates nothing.

    Each attendee gets the template mapped to their role, or ``template_key``. Plans are keyed on the workshop, so a
    second run, even after a template changed, finds them and creates nothing.
    """
    role_map = normalise_role_map(role_templates)
    templates = resolve_templates(session=session, template_key=template_key, role_templates=role_map)
    applier = get_staff(session=session, email=applied_by, active_only=True)
    workshop, _ = get_or_create_workshop(
        session=session, name=workshop_name, on=on, place=place, template_key=template_key, source=source.label
    )
    assert workshop.id is not None
    resolver = AssigneeResolver.for_applier(session, applier)
    counts = {"created": 0, "existing": 0}
    by_template: dict[str, int] = {}
    due: dict[str, DueItem] = {}

    def create_plans(chunk_session: Session, pairs: list[tuple[int, AttendeeRow]]) -> None:
        contacts = {
            c.id: c for c in chunk_session.exec(select(Contact).where(col(Contact.id).in_([cid for cid, _ in pairs])))
        }
        requests = [
            (contacts[contact_id], templates[role_map.get(row.role or "", template_key)]) for contact_id, row in pairs
        ]
        applied = apply_templates(
            session=chunk_session,
            requests=requests,
            enrollment_key=workshop.enrollment_key,
            started_on=on,
            applied_by=applier,
            workshop_id=workshop.id,
            now=now,
            assignees=resolver,
        )
        for plan in applied:
            counts["created" if plan.created else "existing"] += 1
            by_template[plan.template_key] = by_template.get(plan.template_key, 0) + 1
            for step in plan.scheduled:
                item = DueItem(
                    workshop_id=workshop.id,
                    workshop_name=workshop.name,
                    workshop_date=workshop.date,
                    template_key=plan.template_key,
                    step_key=step.key,
                    step_name=step.name,
                    due_at=step.due_at,
                )
                due.setdefault(item.idempotency_key, item)

    summary = import_contacts(session=session, source=source, now=now, on_chunk=create_plans, progress=progress)
    return EnrollmentSummary(
        workshop_id=workshop.id,
        contacts=summary,
        plans_created=counts["created"],
        plans_existing=counts["existing"],
        by_template=by_template,
        due_items=sorted(due.values(), key=lambda item: item.due_at),
    )
