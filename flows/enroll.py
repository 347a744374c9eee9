"""The enroll flow: after a workshop, import its attendee list, create each person's plan, run what is due."""

from __future__ import annotations

import datetime as dt
from datetime import datetime

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run as current_flow_run
from pydantic import BaseModel, ConfigDict, Field

from engage import db, runner
from engage.enrollment import EnrollmentSummary, enroll_attendees, normalise_role_map, resolve_templates
from engage.errors import EngageError, ImportFileError
from engage.importer.source import AttendeeSource
from engage.runner.due import BatchOutcome
from engage.settings import get_settings
from flows.call_invites import tell_calendars
from flows.common import publish_workshop_progress, schedule_due_runs
from flows.run_due_steps import retry_failed_steps, run_due_steps
from models import utcnow


class Attendees(BaseModel):
    """A workshop's attendee list and how to enroll it; the Prefect UI shows this as the run form."""

    model_config = ConfigDict(extra="forbid")

    attendees: str = Field(
        description=(
            "The attendee list: the name of a CSV file in the attendee inbox folder (ENGAGE_INBOX_DIR), "
            "or the CSV text itself, pasted here with its header line."
        )
    )
    workshop: str = Field(description="Workshop name, e.g. Atelier Lyon.", min_length=1)
    date: dt.date = Field(description="Workshop date: plans count their days from it.")
    place: str | None = Field(default=None, description="Where the workshop took place.")
    applied_by: str | None = Field(
        default=None,
        description="Email of the staff member applying the plans (default: ENGAGE_STAFF_EMAIL of the worker).",
    )
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description='Columns the importer does not recognise, e.g. {"Adresse perso": "email"}.',
    )
    role_templates: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Plan template per role column value, e.g. {"volunteer": "volunteer-followup", "donor": '
            '"donor-followup"}; attendees with another role get the deployment\'s template.'
        ),
    )


def attendee_source(request: Attendees) -> AttendeeSource:
    """Read pasted CSV text as it is, or a file name from the inbox folder (never a path outside it)."""
    if "\n" in request.attendees.strip():
        return AttendeeSource.from_text(request.attendees, name="pasted list", mapping=request.column_map)
    inbox = get_settings().inbox_dir.resolve()
    candidate = (inbox / request.attendees.strip()).resolve()
    if inbox not in candidate.parents:
        raise ImportFileError(f"{request.attendees}: give a file name inside the attendee inbox ({inbox})")
    return AttendeeSource.from_path(candidate, mapping=request.column_map)


def _run_name() -> str:
    params = current_flow_run.parameters
    request = params.get("request")
    if isinstance(request, dict):
        request = Attendees.model_validate(request)
    if not isinstance(request, Attendees):
        return f"{params.get('template')}"
    return f"{params.get('template')} · {request.workshop} · {request.date.isoformat()}"


@task(name="check-plan-templates")
def check_plan_templates(template: str, role_templates: dict[str, str]) -> list[str]:
    """Refuse to start on a plan template that does not validate; return the keys of those in use."""
    with db.session_scope() as session:
        return sorted(resolve_templates(session=session, template_key=template, role_templates=role_templates))


@task(name="import-attendees-and-create-plans")
def import_attendees_and_create_plans(
    request: Attendees, template: str, applied_by: str, now: datetime
) -> EnrollmentSummary:
    """Import the attendees into the ledger and create their plans, one transaction per chunk of rows."""
    source = attendee_source(request)
    with db.session_scope() as session:
        return enroll_attendees(
            session=session,
            source=source,
            workshop_name=request.workshop,
            on=request.date,
            place=request.place,
            template_key=template,
            applied_by=applied_by,
            role_templates=request.role_templates,
            now=now,
        )


def _tag_this_run(template: str, workshop: str) -> None:
    """Tag the run with its template and workshop, so the UI's filters find a workshop's runs."""
    if not current_flow_run.id:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(current_flow_run.id)
        client.update_flow_run(
            current_flow_run.id, tags=sorted({*run.tags, f"template:{template}", f"workshop:{workshop}"})
        )


def _run_what_is_due(now: datetime) -> dict[str, int]:
    """Run the steps already due in a run-due-steps subflow; when none is (the usual case), spare its overhead.

    Calls still get their slot and invite: a call step with a date gets them at once, whatever its due time.
    """
    if runner.has_due_steps(now=now):
        return run_due_steps(now=now)
    # The run a person sees, as run-due-steps records it: the top-level one.
    flow_run_id = (current_flow_run.root_flow_run_id or current_flow_run.id) if current_flow_run.id else None
    tell_calendars(now, flow_run_id)
    return BatchOutcome().as_dict() | {"batches": 0, "scheduled_runs": 0}


@flow(name="enroll", flow_run_name=_run_name, log_prints=False)
def enroll(request: Attendees, template: str = "volunteer-followup", now: datetime | None = None) -> dict[str, object]:
    """Enroll a workshop's attendees in their plans, run what is already due, schedule what is coming."""
    logger = get_run_logger()
    now = now or utcnow()
    applied_by = request.applied_by or get_settings().staff_email
    if not applied_by:
        raise EngageError("no staff member applies these plans: fill in applied_by or set ENGAGE_STAFF_EMAIL")
    _tag_this_run(template, request.workshop)
    role_map = normalise_role_map(request.role_templates)
    check_plan_templates(template, role_map)
    if current_flow_run.id and (current_flow_run.run_count or 1) > 1:
        # "Retry" on a failed enrollment: its batches failed inside its run-due-steps subflow; send them again.
        logger.info("retry of this run: %s failed steps scheduled again", retry_failed_steps(current_flow_run.id, now))
    summary = import_attendees_and_create_plans(request, template, applied_by, now)
    result = summary.as_dict()
    # Reasons quote cell values (emails): Prefect keeps artifacts after a person is erased, so lines only.
    rejected_lines = ", ".join(str(r.line) for r in summary.contacts.rejects[:50])
    logger.info(
        "workshop %s: %s contacts created, %s updated, %s rejected; %s plans created, %s already there",
        summary.workshop_id,
        summary.contacts.created,
        summary.contacts.updated,
        summary.contacts.rejected,
        summary.plans_created,
        summary.plans_existing,
    )
    if summary.contacts.rejected:
        logger.warning("rejected lines: %s (reasons in %s)", rejected_lines, summary.contacts.rejects_file or "the CLI")
    create_table_artifact(
        table=[{"what": key, "count": value} for key, value in result.items() if isinstance(value, int)]
        + [{"what": f"plans: {key}", "count": value} for key, value in summary.by_template.items()],
        description=f"Enrollment of workshop {summary.workshop_id}"
        + (f"; rejected lines: {rejected_lines}" if rejected_lines else ""),
    )
    result["due_now"] = _run_what_is_due(now)
    future = [item for item in summary.due_items if item.due_at > now]
    result["scheduled_runs"] = schedule_due_runs(future)
    publish_workshop_progress([summary.workshop_id], now)
    return result
