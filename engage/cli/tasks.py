"""`engage tasks`: what staff have to do, and recording what they did."""

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
    ledger,
    local_text,
    parse_day,
    parse_now,
    print_json,
)
from engage.cli.plans import print_invites, step_json
from engage.errors import EngageError
from engage.plans import operations
from engage.plans.operations import TaskChange
from engage.plans.queries import list_tasks

app = typer.Typer(help="Tasks: the steps of plans, as staff see and work them.", no_args_is_help=True)


@app.command("list")
def list_(
    assignee: str | None = typer.Option(None, "--assignee", help="Only tasks of this staff member."),
    overdue: bool = typer.Option(False, "--overdue", help="Only tasks whose due time has passed."),
    upcoming: int | None = typer.Option(None, "--upcoming", help="Only tasks due in the next DAYS days."),
    kind: list[str] = typer.Option([], "--kind", help="email, call or task (repeatable)."),
    status: list[str] = typer.Option([], "--status", help="Only these statuses (repeatable)."),
    plan: int | None = typer.Option(None, "--plan", help="Only tasks of this plan."),
    run: str | None = typer.Option(None, "--run", help="Only tasks handled by this Prefect flow run id."),
    unknown: bool = typer.Option(False, "--unknown", help="Only sends in doubt after a crash (resolve them)."),
    now_text: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """List upcoming and overdue tasks (steps still waiting for an earlier step are not listed)."""
    now = parse_now(now_text)
    with ledger(readonly=True) as session:
        rows = list_tasks(
            session=session,
            now=now,
            assignee=assignee,
            overdue=overdue,
            upcoming_days=upcoming,
            kinds=kind,
            statuses=["unknown"] if unknown else status,
            plan_id=plan,
            flow_run_id=run,
        )
    if as_json:
        print_json(
            [
                step_json(r.step, r.assignee)
                | {"plan": r.plan.id, "template": r.plan.template_key, "contact": r.contact.email, "overdue": r.overdue}
                | (
                    {"call_start": r.call.slot_start.isoformat(), "call_end": r.call.slot_end.isoformat()}
                    if r.call is not None
                    else {}
                )
                for r in rows
            ]
        )
        return
    table = Table("task", "due", "step", "kind", "status", "contact", "assignee", "plan")
    for r in rows:
        due = local_text(r.step.due_at)
        if r.call is not None:
            # The time to call: the slot the call took in the assignee's calendar.
            due += f"\ncall at {local_text(r.call.slot_start)}"
        table.add_row(
            str(r.step.id),
            f"[red]{due} (overdue)[/red]" if r.overdue else due,
            r.step.name,
            r.step.kind,
            r.step.status,
            f"{r.contact.full_name or '-'} <{r.contact.email}>",
            (r.assignee.email if r.assignee else "-") + (" (fallback)" if r.step.assignee_fallback else ""),
            f"{r.plan.id} {r.plan.template_key}",
        )
    console.print(table)
    console.print(f"{len(rows)} tasks")


def _released_text(change: TaskChange) -> str:
    if not change.released:
        return ""
    return "; next: " + ", ".join(f"{s.name} due {local_text(s.due_at)}" for s in change.released)


@app.command("complete")
def complete(
    task_id: int = typer.Argument(..., help="Task id (see engage tasks list)."),
    outcome: str | None = typer.Option(None, "--outcome", help="How it went, for the record."),
    as_email: str | None = AsOption,
    now_text: str | None = NowOption,
) -> None:
    """Record a call or task as done; the next step of the plan is scheduled from now."""
    by, now = acting_email(as_email), parse_now(now_text)
    db.ensure_schema()
    change = operations.complete_task(task_id=task_id, outcome=outcome, by=by, now=now)
    console.print(f"task {task_id} done" + _released_text(change))
    print_invites(change.invites)


@app.command("skip")
def skip(
    task_id: int = typer.Argument(..., help="Task id."),
    reason: str = typer.Option(..., "--reason", help="Why it is given up."),
    as_email: str | None = AsOption,
    now_text: str | None = NowOption,
) -> None:
    """Give up on a task and release the steps that wait for it."""
    by, now = acting_email(as_email), parse_now(now_text)
    db.ensure_schema()
    change = operations.skip_task(task_id=task_id, reason=reason, by=by, now=now)
    console.print(f"task {task_id} skipped" + _released_text(change))
    print_invites(change.invites)


@app.command("resolve")
def resolve(
    task_id: int = typer.Argument(..., help="A task in doubt (see engage tasks list --unknown)."),
    sent: bool = typer.Option(
        False, "--sent", help="It went out (e.g. the contact received it): release the next step."
    ),
    resend: bool = typer.Option(False, "--resend", help="It did not go out: send it again."),
    as_email: str | None = AsOption,
    now_text: str | None = NowOption,
) -> None:
    """Say whether an email in doubt after a crash went out; nothing is ever sent twice without a person asking."""
    if sent == resend:
        raise EngageError("say --sent or --resend")
    by, now = acting_email(as_email), parse_now(now_text)
    db.ensure_schema()
    change = operations.resolve_unknown(task_id=task_id, went_out=sent, by=by, now=now)
    console.print(
        f"task {task_id} recorded as sent" + _released_text(change)
        if sent
        else f"task {task_id} will be sent again at the next run (engage run-due)"
    )
    print_invites(change.invites)


@app.command("reassign")
def reassign(
    task_id: int = typer.Argument(..., help="Task id."),
    email: str = typer.Argument(..., help="The staff member who takes it."),
    now_text: str | None = NowOption,
) -> None:
    """Give a task to another staff member (a call moves to their calendar: a cancel to one, an invite to the other)."""
    now = parse_now(now_text)
    db.ensure_schema()
    change = operations.reassign_task(task_id=task_id, to=email, now=now)
    previous = change.previous_assignee.email if change.previous_assignee else "nobody"
    console.print(f"task {change.task.id} reassigned from {previous} to {email}")
    print_invites(change.invites)


@app.command("reschedule")
def reschedule(
    task_id: int = typer.Argument(..., help="Task id."),
    on: str = typer.Argument(..., help="New due date, e.g. 2026-12-01."),
    now_text: str | None = NowOption,
) -> None:
    """Move a task to another day (a call gets a slot that day and its invite is updated)."""
    day, now = parse_day(on, "DATE"), parse_now(now_text)
    db.ensure_schema()
    change = operations.reschedule_task(task_id=task_id, on=day, now=now)
    console.print(f"task {change.task.id} now due {local_text(change.task.due_at)}")
    print_invites(change.invites)


@app.command("comment")
def comment(
    task_id: int = typer.Argument(..., help="Task id."),
    text: str = typer.Argument(..., help="The note."),
    as_email: str | None = AsOption,
    now_text: str | None = NowOption,
) -> None:
    """Leave a note on a task."""
    by, now = acting_email(as_email), parse_now(now_text)
    db.ensure_schema()
    operations.comment_task(task_id=task_id, text=text, by=by, now=now)
    console.print(f"comment added to task {task_id}")


@app.command("follow-up")
def follow_up(
    task_id: int = typer.Argument(..., help="The task this follows up."),
    due: str = typer.Option(..., "--due", help="Due date of the new task."),
    subject: str = typer.Option(..., "--subject", help="What is to be done."),
    as_email: str | None = AsOption,
    now_text: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Add a new task to the same plan."""
    by, day, now = acting_email(as_email), parse_day(due, "--due"), parse_now(now_text)
    db.ensure_schema()
    change = operations.add_follow_up(task_id=task_id, on=day, subject=subject, by=by, now=now)
    if as_json:
        print_json(step_json(change.task))
    else:
        console.print(f"task {change.task.id} added: {subject}, due {local_text(change.task.due_at)}")
    print_invites(change.invites, as_json=as_json)
