"""`engage plans`: apply a template to one contact, list, show, cancel."""

from __future__ import annotations

import typer
from rich.table import Table

from engage import plans as plan_ops
from engage.cli._calls import follow_calls, tell_calendars
from engage.cli._common import (
    AsOption,
    JsonOption,
    NowOption,
    acting_email,
    console,
    ledger,
    local_text,
    parse_day,
    parse_now,
    print_json,
)
from engage.contacts.lookup import get_contact, get_contact_by_id
from engage.plan_templates.store import current_template
from engage.staff import get_staff
from models import Plan, PlanStep, Staff, id_of

app = typer.Typer(help="Plans: a template applied to one contact.", no_args_is_help=True)


def step_json(step: PlanStep, assignee: Staff | None = None) -> dict[str, object]:
    return {
        "id": step.id,
        "key": step.step_key,
        "name": step.name,
        "kind": step.kind,
        "status": step.status,
        "due_at": step.due_at,
        "assignee": assignee.email if assignee else None,
        "assignee_fallback": step.assignee_fallback,
        "completed_at": step.completed_at,
        "outcome": step.outcome,
        "skip_reason": step.skip_reason,
        "last_error": step.last_error,
    }


def plan_json(plan: Plan) -> dict[str, object]:
    return {
        "id": plan.id,
        "template": plan.template_key,
        "template_version_id": plan.template_id,
        "enrollment_key": plan.enrollment_key,
        "status": plan.status,
        "started_on": plan.started_on,
        "cancel_reason": plan.cancel_reason,
    }


@app.command("apply")
def apply(
    template: str = typer.Argument(..., help="Template key, e.g. volunteer-followup."),
    email: str = typer.Argument(..., help="The contact's email (import them first)."),
    workshop: str | None = typer.Option(None, "--workshop", help="The workshop this plan follows up."),
    on: str | None = typer.Option(None, "--date", help="Workshop date / plan start (default: today)."),
    as_email: str | None = AsOption,
    now_text: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Apply a plan template to one contact (NPSP's "new engagement plan")."""
    now = parse_now(now_text)
    started_on = parse_day(on, "--date") if on else now.date()
    with ledger() as session:
        applier = get_staff(session=session, email=acting_email(as_email), active_only=True)
        contact = get_contact(session=session, email=email)
        version = current_template(session=session, key=template)
        if workshop:
            found, _ = plan_ops.get_or_create_workshop(
                session=session, name=workshop, on=started_on, template_key=template
            )
            enrollment_key, workshop_id = found.enrollment_key, found.id
        else:
            enrollment_key, workshop_id = f"manual:{started_on.isoformat()}", None
        plan, created = plan_ops.apply_template(
            session=session,
            template=version,
            contact=contact,
            enrollment_key=enrollment_key,
            started_on=started_on,
            applied_by=applier,
            workshop_id=workshop_id,
            now=now,
        )
        payload = plan_json(plan) | {"created": created}
        if created:  # a call that counts from the plan start has its date now: it goes into a calendar
            steps = plan_ops.plan_steps(session=session, plan_id=id_of(plan))
            follow_calls(session, now, [step.id for step in steps if step.id is not None])
    if as_json:
        print_json(payload)
    elif created:
        console.print(f"plan {plan.id}: {template} applied to {contact.email}")
    else:
        console.print(f"plan {plan.id} already exists for {contact.email} ({template}, {enrollment_key}); nothing done")
    if created:
        tell_calendars(now)


@app.command("list")
def list_(
    workshop: str | None = typer.Option(None, "--workshop", help="Only plans of this workshop."),
    status: str | None = typer.Option(None, "--status", help="active, completed or cancelled."),
    template: str | None = typer.Option(None, "--template", help="Only plans of this template."),
    as_json: bool = JsonOption,
) -> None:
    """List plans with their contact and progress."""
    with ledger(readonly=True) as session:
        rows = plan_ops.list_plans(session=session, workshop=workshop, status=status, template=template)
    if as_json:
        print_json(
            [
                plan_json(r.plan)
                | {
                    "contact": r.contact.email,
                    "workshop": r.workshop.name if r.workshop else None,
                    "steps_done": r.done,
                    "steps": r.total,
                }
                for r in rows
            ]
        )
        return
    table = Table("id", "template", "contact", "workshop", "started", "status", "progress")
    for r in rows:
        table.add_row(
            str(r.plan.id),
            r.plan.template_key,
            r.contact.email,
            r.workshop.name if r.workshop else "-",
            str(r.plan.started_on),
            r.plan.status,
            f"{r.done}/{r.total}",
        )
    console.print(table)
    console.print(f"{len(rows)} plans")


@app.command("show")
def show(plan_id: int = typer.Argument(..., help="Plan id."), as_json: bool = JsonOption) -> None:
    """Show one plan and its steps."""
    with ledger(readonly=True) as session:
        plan = plan_ops.get_plan(session=session, plan_id=plan_id)
        contact_email = get_contact_by_id(session=session, contact_id=plan.contact_id).email
        steps = [
            (step, session.get(Staff, step.assignee_id) if step.assignee_id else None)
            for step in plan_ops.plan_steps(session=session, plan_id=plan_id)
        ]
    if as_json:
        print_json(plan_json(plan) | {"contact": contact_email, "steps": [step_json(s, a) for s, a in steps]})
        return
    console.print(f"plan {plan.id} · {plan.template_key} · {contact_email} · {plan.status} · started {plan.started_on}")
    if plan.cancel_reason:
        console.print(f"cancelled: {plan.cancel_reason}")
    table = Table("task", "step", "kind", "status", "due", "assignee", "outcome / reason")
    for step, assignee in steps:
        table.add_row(
            str(step.id),
            step.name,
            step.kind,
            step.status,
            local_text(step.due_at),
            (assignee.email if assignee else "-") + (" (fallback)" if step.assignee_fallback else ""),
            step.outcome or step.skip_reason or step.last_error or "",
        )
    console.print(table)


@app.command("cancel")
def cancel(
    plan_id: int = typer.Argument(..., help="Plan id."),
    reason: str = typer.Option(..., "--reason", help="Why, for the record."),
    now_text: str | None = NowOption,
) -> None:
    """Cancel a plan: every step not yet finished is cancelled (its calls leave their assignees' calendars)."""
    now = parse_now(now_text)
    with ledger() as session:
        cancelled = plan_ops.cancel_plan(session=session, plan_id=plan_id, reason=reason, now=now)
        follow_calls(session, now, [step.id for step in cancelled if step.id is not None])
    console.print(f"plan {plan_id} cancelled ({len(cancelled)} steps cancelled)")
    tell_calendars(now)
