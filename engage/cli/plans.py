"""`engage plans`: apply a template to one contact, list, show, cancel."""

from __future__ import annotations

import typer
from rich.table import Table

from engage import db
from engage.cli._common import (
    AsOption,
    JsonOption,
    NowOption,
    acting_email,
    console,
    err_console,
    ledger,
    local_text,
    parse_day,
    parse_now,
    print_json,
)
from engage.contacts.lookup import get_contact_by_id
from engage.plans import operations
from engage.plans.operations import Invites
from engage.plans.queries import get_plan, list_plans, plan_steps
from models import Plan, PlanStep, Staff

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


def print_invites(invites: Invites, *, as_json: bool = False) -> None:
    """Say what went to the calendars after a change; with ``--json``, on stderr: stdout holds the JSON alone."""
    if invites.warning:
        err_console.print(f"[yellow]warning:[/yellow] {invites.warning}", highlight=False, soft_wrap=True)
    elif invites.sent:
        (err_console if as_json else console).print(
            f"calendar: {invites.requests} invites and {invites.cancels} cancellations sent"
        )


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
    started_on = parse_day(on, "--date") if on else None
    by = acting_email(as_email)
    db.ensure_schema()
    applied = operations.apply_plan(
        template_key=template, contact_email=email, by=by, started_on=started_on, workshop=workshop, now=now
    )
    plan = applied.plan
    if as_json:
        print_json(plan_json(plan) | {"created": applied.created})
    elif applied.created:
        console.print(f"plan {plan.id}: {template} applied to {applied.contact_email}")
    else:
        where = f"{template}, {plan.enrollment_key}"
        console.print(f"plan {plan.id} already exists for {applied.contact_email} ({where}); nothing done")
    print_invites(applied.invites, as_json=as_json)


@app.command("list")
def list_(
    workshop: str | None = typer.Option(None, "--workshop", help="Only plans of this workshop."),
    status: str | None = typer.Option(None, "--status", help="active, completed or cancelled."),
    template: str | None = typer.Option(None, "--template", help="Only plans of this template."),
    as_json: bool = JsonOption,
) -> None:
    """List plans with their contact and progress."""
    with ledger(readonly=True) as session:
        rows = list_plans(session=session, workshop=workshop, status=status, template=template)
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
        plan = get_plan(session=session, plan_id=plan_id)
        contact_email = get_contact_by_id(session=session, contact_id=plan.contact_id).email
        steps = [
            (step, session.get(Staff, step.assignee_id) if step.assignee_id else None)
            for step in plan_steps(session=session, plan_id=plan_id)
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
    db.ensure_schema()
    cancelled = operations.cancel_plan(plan_id=plan_id, reason=reason, now=now)
    console.print(f"plan {plan_id} cancelled ({len(cancelled.cancelled)} steps cancelled)")
    print_invites(cancelled.invites)
